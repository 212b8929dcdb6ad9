//! The commands about the connection and the server rather than keys: what clients
//! and tools send when they connect (HELLO, AUTH, CLIENT SETINFO, CONFIG GET, COMMAND
//! DOCS, SELECT) and PING/ECHO. Each answers what Redis would, in the shape clients
//! parse; what peercache has no notion of is refused with a clear error.

use bytes::Bytes;

use super::commands::COMMANDS;
use super::frame::{Frame, Proto, parse_i64};
use super::server::Shared;
use super::session::{self, Session};

/// The Redis version whose commands this server answers like, for clients that read
/// it from HELLO or INFO to decide which commands to use.
pub(super) const REDIS_VERSION: &str = "7.0.0";

/// Runs a connection or server command other than the key commands and INFO.
pub(super) fn execute(shared: &Shared, session: &mut Session, name: &str, args: &[Bytes]) -> Frame {
    match name {
        "ping" => match args {
            [] => Frame::simple("PONG"),
            [msg] => Frame::Bulk(msg.clone()),
            _ => Frame::error("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => Frame::Bulk(args[0].clone()),
        "auth" => auth(shared, session, args),
        "hello" => hello(shared, session, args),
        "select" => select(shared, session, &args[0]),
        "client" => client(session, args),
        "config" => config(shared, args),
        "command" => command(args),
        other => Frame::error(format!("ERR unknown command '{other}'")),
    }
}

fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Frame {
    let token = match args {
        [token] | [_, token] => token,
        _ => return Frame::error("ERR syntax error"),
    };
    match session.login(shared.auth.as_ref(), token) {
        Ok(_) => Frame::ok(),
        Err(refused) => {
            shared.metrics.auth_refused(crate::auth::Refusal::Invalid);
            refused
        }
    }
}

/// `HELLO [protover [AUTH user token] [SETNAME name]]`: switches the protocol and
/// answers the server's description (a map in RESP3).
fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Frame {
    let mut proto = session.proto;
    let mut rest = args.iter();
    if let Some(version) = rest.next() {
        proto = match parse_i64(version) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return Frame::error("NOPROTO unsupported protocol version"),
            None => {
                return Frame::error("ERR Protocol version is not an integer or out of range");
            }
        };
    }
    let mut name = None;
    while let Some(opt) = rest.next() {
        match &opt.to_ascii_uppercase()[..] {
            b"AUTH" => {
                let (Some(_user), Some(token)) = (rest.next(), rest.next()) else {
                    return Frame::error("ERR syntax error in HELLO option 'auth'");
                };
                if let Err(refused) = session.login(shared.auth.as_ref(), token) {
                    shared.metrics.auth_refused(crate::auth::Refusal::Invalid);
                    return refused;
                }
            }
            b"SETNAME" => match rest.next() {
                Some(n) if valid_name(n) => name = Some(n.clone()),
                Some(_) => return bad_name(),
                None => return Frame::error("ERR syntax error in HELLO option 'setname'"),
            },
            _ => {
                let opt = String::from_utf8_lossy(opt);
                return Frame::error(format!("ERR syntax error in HELLO option '{opt}'"));
            }
        }
    }
    if let Some(auth) = &shared.auth
        && let Err(refused) = session.authorize(auth, None)
    {
        shared.metrics.auth_refused(refused);
        return session::refusal(refused, None);
    }
    session.proto = proto;
    if name.is_some() {
        session.name = name;
    }
    let field = |k: &str, v: Frame| (Frame::bulk(k.to_owned()), v);
    let version = match proto {
        Proto::Resp2 => 2,
        Proto::Resp3 => 3,
    };
    Frame::Map(vec![
        field("server", Frame::bulk("redis")),
        field("version", Frame::bulk(REDIS_VERSION)),
        field("proto", Frame::Integer(version)),
        field("id", Frame::Integer(session.id as i64)),
        field("mode", Frame::bulk("standalone")),
        field("role", Frame::bulk("master")),
        field("modules", Frame::Array(Vec::new())),
        field("peercache", Frame::bulk(env!("CARGO_PKG_VERSION"))),
    ])
}

fn select(shared: &Shared, session: &mut Session, index: &Bytes) -> Frame {
    match parse_i64(index) {
        Some(n) if n >= 0 && (n as u64) < shared.dbs.len() as u64 => {
            session.db = n as usize;
            Frame::ok()
        }
        Some(_) => Frame::error("ERR DB index is out of range"),
        None => Frame::error("ERR value is not an integer or out of range"),
    }
}

fn client(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = args[0].to_ascii_uppercase();
    match (&sub[..], &args[1..]) {
        (b"SETINFO", [_attr, _value]) => Frame::ok(),
        (b"SETNAME", [name]) if valid_name(name) => {
            session.name = (!name.is_empty()).then(|| name.clone());
            Frame::ok()
        }
        (b"SETNAME", [_]) => bad_name(),
        (b"GETNAME", []) => session.name.clone().map_or(Frame::Null, Frame::Bulk),
        (b"ID", []) => Frame::Integer(session.id as i64),
        (b"SETINFO" | b"SETNAME" | b"GETNAME" | b"ID", _) => {
            let sub = String::from_utf8_lossy(&sub).to_ascii_lowercase();
            Frame::error(format!(
                "ERR wrong number of arguments for 'client|{sub}' command"
            ))
        }
        _ => Frame::error(format!(
            "ERR unknown subcommand '{}'. peercache supports CLIENT SETINFO, SETNAME, GETNAME and ID.",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|b| b.is_ascii_graphic())
}

fn bad_name() -> Frame {
    Frame::error("ERR Client names cannot contain spaces, newlines or special characters.")
}

/// `CONFIG GET pattern…`: the few settings clients and tools ask for, matched with
/// `*` and `?`, as a map (a flat array in RESP2). Nothing can be set.
fn config(shared: &Shared, args: &[Bytes]) -> Frame {
    if !args[0].eq_ignore_ascii_case(b"GET") || args.len() < 2 {
        return Frame::error(
            "ERR peercache supports CONFIG GET only: its settings are `peercache serve` flags",
        );
    }
    let settings = [
        ("save", String::new()),
        ("appendonly", "no".to_owned()),
        ("databases", shared.dbs.len().to_string()),
        ("proto-max-bulk-len", shared.limits.max_bulk.to_string()),
        ("maxclients", shared.config.max_connections.to_string()),
        (
            "timeout",
            (shared.config.idle_timeout.map_or(0, |t| t.as_secs())).to_string(),
        ),
    ];
    let mut found = Vec::new();
    for (name, value) in settings {
        let wanted = args[1..]
            .iter()
            .any(|p| glob(&p.to_ascii_lowercase(), name.as_bytes()));
        if wanted {
            found.push((Frame::bulk(name), Frame::bulk(value)));
        }
    }
    Frame::Map(found)
}

/// Whether `text` matches `pattern` (`*` any run, `?` any byte), in time linear in
/// their lengths' product (the classic backtrack to the last star, never deeper).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `COMMAND COUNT|LIST|DOCS|INFO`, minimal: names and a count; no documentation.
fn command(args: &[Bytes]) -> Frame {
    let Some(sub) = args.first() else {
        return Frame::Array(Vec::new());
    };
    match &sub.to_ascii_uppercase()[..] {
        b"COUNT" => Frame::Integer(COMMANDS.len() as i64),
        b"LIST" => Frame::Array(COMMANDS.iter().map(|c| Frame::bulk(c.name)).collect()),
        b"DOCS" => Frame::Map(Vec::new()),
        b"INFO" => Frame::Array(args[1..].iter().map(|_| Frame::Null).collect()),
        _ => Frame::error(format!(
            "ERR unknown subcommand '{}'. peercache supports COMMAND COUNT, LIST, DOCS and INFO.",
            String::from_utf8_lossy(sub)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"sa?e", b"save"));
        assert!(glob(b"*only", b"appendonly"));
        assert!(!glob(b"save", b"saves"));
        assert!(!glob(b"", b"x"));
        assert!(glob(b"a*p*y", b"appendonly"));
        // Many stars cost no more than a few: a client's pattern cannot stall the node.
        assert!(glob(&[b'*'; 60_000], b"appendonly"));
        assert!(!glob(&[&[b'*'; 60_000][..], b"x"].concat(), b"appendonly"));
    }
}
