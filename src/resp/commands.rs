//! The commands: one table says each command's arity and what it needs (no login, a
//! login, or a role's action), [`execute`] checks those and dispatches, and the key
//! commands follow, thin: decode, call the group, encode. Connection and node commands
//! are in admin.rs and info.rs.

use std::time::Duration;

use bytes::Bytes;

use super::admin;
use super::frame::Frame;
use super::server::Shared;
use super::session::{self, Session};
use crate::auth::Action;
use crate::error::Error;
use crate::group::Group;

/// What a command needs of the connection's authentication (with `--auth-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: it may come first (AUTH, HELLO, QUIT).
    Nothing,
    /// A valid token of any role.
    Login,
    /// A token whose role permits the action.
    Role(Action),
}

/// A supported command.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Its name, lower case.
    pub name: &'static str,
    /// Redis's arity: `n` arguments exactly (the name counted), or at least `-n`.
    pub arity: i32,
    /// What it needs when clients authenticate.
    pub needs: Need,
}

const fn command(name: &'static str, arity: i32, needs: Need) -> Command {
    Command { name, arity, needs }
}

const READ: Need = Need::Role(Action::Read);
const WRITE: Need = Need::Role(Action::Write);
const ADMIN: Need = Need::Role(Action::Admin);

/// Every command the server knows.
pub const COMMANDS: &[Command] = &[
    command("get", 2, READ),
    command("mget", -2, READ),
    command("exists", -2, READ),
    command("ttl", 2, READ),
    command("pttl", 2, READ),
    command("set", -3, WRITE),
    command("setex", 4, WRITE),
    command("psetex", 4, WRITE),
    command("del", -2, WRITE),
    command("dbsize", 1, ADMIN),
    command("info", -1, ADMIN),
    command("config", -2, ADMIN),
    command("ping", -1, Need::Login),
    command("echo", 2, Need::Login),
    command("select", 2, Need::Login),
    command("client", -2, Need::Login),
    command("command", -1, Need::Login),
    command("auth", -2, Need::Nothing),
    command("hello", -1, Need::Nothing),
    command("quit", -1, Need::Nothing),
];

/// Whether the connection goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
}

/// Most keys of one MGET fetched at once (one `Group::get_many`).
const MGET_PARALLEL: usize = 256;

/// Runs one command (`args` is not empty): its reply, and whether to go on.
pub(super) async fn execute(
    shared: &Shared,
    session: &mut Session,
    args: Vec<Bytes>,
) -> (Frame, Flow) {
    let cmd = match admit(shared, session, &args) {
        Ok(cmd) => cmd,
        Err(refused) => return (refused, Flow::Continue),
    };
    let group = &shared.dbs[session.db];
    let args = &args[1..];
    let reply = match cmd.name {
        "get" => get(group, &args[0]).await,
        "mget" => mget(group, args).await,
        "exists" => exists(group, args),
        "ttl" => ttl(group, &args[0], Duration::from_secs(1)),
        "pttl" => ttl(group, &args[0], Duration::from_millis(1)),
        "set" => set(group, args).await,
        // SETEX key seconds value: SET key value EX seconds.
        "setex" | "psetex" => {
            let unit = if cmd.name == "setex" { "EX" } else { "PX" };
            let as_set = [
                args[0].clone(),
                args[2].clone(),
                Bytes::from(unit),
                args[1].clone(),
            ];
            set(group, &as_set).await
        }
        "del" => del(group, args).await,
        "dbsize" => Frame::Integer(group.stats().store.items as i64),
        "info" => super::info::info(shared, args),
        "quit" => return (Frame::ok(), Flow::Close),
        _ => admin::execute(shared, session, cmd.name, args),
    };
    (reply, Flow::Continue)
}

/// The command `args` names, if the connection may run it now: known, with its
/// arity, permitted to the session's token, and, for key commands, on a node that has
/// joined. Otherwise the error to answer.
fn admit(
    shared: &Shared,
    session: &mut Session,
    args: &[Bytes],
) -> Result<&'static Command, Frame> {
    let Some(cmd) = COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(&args[0]))
    else {
        return Err(unknown(args));
    };
    let arity_ok = match usize::try_from(cmd.arity) {
        Ok(n) => args.len() == n,
        Err(_) => args.len() >= cmd.arity.unsigned_abs() as usize,
    };
    if !arity_ok {
        let msg = format!("ERR wrong number of arguments for '{}' command", cmd.name);
        return Err(Frame::error(msg));
    }
    if let (Some(auth), Need::Login | Need::Role(_)) = (&shared.auth, cmd.needs) {
        let action = match cmd.needs {
            Need::Role(action) => Some(action),
            _ => None,
        };
        if let Err(refused) = session.authorize(auth, action) {
            shared.metrics.auth_refused(refused);
            return Err(session::refusal(refused, action));
        }
    }
    let keyed = matches!(cmd.needs, Need::Role(Action::Read | Action::Write));
    if keyed && !shared.ready.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Frame::error("LOADING the node is joining the cluster"));
    }
    Ok(cmd)
}

/// Whether `args` is a GET, which [`gets`] may run beside its neighbours.
pub(super) fn is_get(args: &[Bytes]) -> bool {
    args[0].eq_ignore_ascii_case(b"get")
}

/// Runs consecutive pipelined GETs at once, so that keys of other owners wait for one
/// peer round trip together rather than one each; their replies in order. Reads have
/// no effects, so running them together answers what running them in turn would.
/// Keys held here are answered at once; only the others become futures.
pub(super) async fn gets(
    shared: &Shared,
    session: &mut Session,
    batch: &[Vec<Bytes>],
) -> Vec<Frame> {
    let group = &shared.dbs[session.db];
    let mut replies = Vec::with_capacity(batch.len());
    let mut misses = Vec::new();
    for args in batch {
        let reply = match admit(shared, session, args) {
            Err(refused) => Some(refused),
            Ok(_) => match key(&args[1]) {
                Err(e) => Some(e),
                Ok(k) => group.get_if_cached(k).map(Frame::Bulk),
            },
        };
        if reply.is_none() {
            misses.push((replies.len(), &args[1]));
        }
        replies.push(reply);
    }
    if !misses.is_empty() {
        let got = futures::future::join_all(misses.iter().map(|(_, k)| get(group, k))).await;
        for ((at, _), reply) in misses.iter().zip(got) {
            replies[*at] = Some(reply);
        }
    }
    replies
        .into_iter()
        .map(|r| r.expect("every GET answered"))
        .collect()
}

fn unknown(args: &[Bytes]) -> Frame {
    let shown = |b: &Bytes| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with:",
        shown(&args[0])
    );
    for arg in args[1..].iter().take(4) {
        msg.push_str(&format!(" '{}'", shown(arg)));
    }
    Frame::error(msg)
}

/// A key as the groups take it: UTF-8.
fn key(arg: &Bytes) -> Result<&str, Frame> {
    std::str::from_utf8(arg).map_err(|_| Frame::error("ERR peercache keys must be UTF-8"))
}

impl From<Error> for Frame {
    fn from(e: Error) -> Frame {
        Frame::error(format!("ERR {e}"))
    }
}

/// A value, nil when the source has none, or the error.
fn value(got: crate::Result<Bytes>) -> Frame {
    match got {
        Ok(value) => Frame::Bulk(value),
        Err(Error::NotFound(_)) => Frame::Null,
        Err(e) => e.into(),
    }
}

async fn get(group: &Group, arg: &Bytes) -> Frame {
    match key(arg) {
        Ok(k) => value(group.get(k).await),
        Err(e) => e,
    }
}

/// The keys' values in order, through `Group::get_many`: the keys of one owner go to
/// it in one call, owners in parallel, and each key shares flights with single gets.
async fn mget(group: &Group, args: &[Bytes]) -> Frame {
    let keys: Result<Vec<&str>, Frame> = args.iter().map(key).collect();
    let keys = match keys {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let mut values = Vec::with_capacity(keys.len());
    for batch in keys.chunks(MGET_PARALLEL) {
        values.extend(group.get_many(batch).await.into_iter().map(value));
    }
    // One key's failure fails the whole reply rather than passing for a nil.
    if let Some(failed) = values.iter().find(|v| matches!(v, Frame::Error(_))) {
        return failed.clone();
    }
    Frame::Array(values)
}

/// Keys held in this node's cache (main or hot): it neither loads nor asks owners.
fn exists(group: &Group, args: &[Bytes]) -> Frame {
    let mut held = 0;
    for arg in args {
        match key(arg) {
            Ok(k) if group.cached_ttl(k).is_some() => held += 1,
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    Frame::Integer(held)
}

/// The time an entry held here has left in `unit`s: -2 if not held, -1 if it never
/// expires.
fn ttl(group: &Group, arg: &Bytes, unit: Duration) -> Frame {
    let k = match key(arg) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let left = match group.cached_ttl(k) {
        None => -2,
        Some(None) => -1,
        // Rounded to the nearest unit, as Redis does.
        Some(Some(left)) => ((left.as_nanos() + unit.as_nanos() / 2) / unit.as_nanos()) as i64,
    };
    Frame::Integer(left)
}

/// `SET key value [EX s | PX ms]`; the options that need a conditional or atomic
/// read-and-write are refused: writes go to the key's owner unconditionally.
async fn set(group: &Group, args: &[Bytes]) -> Frame {
    let k = match key(&args[0]) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let mut ttl = None;
    let mut rest = args[2..].iter();
    while let Some(opt) = rest.next() {
        let opt = opt.to_ascii_uppercase();
        let unit = match &opt[..] {
            b"EX" => Duration::from_secs(1),
            b"PX" => Duration::from_millis(1),
            b"NX" | b"XX" | b"GET" | b"KEEPTTL" | b"EXAT" | b"PXAT" => {
                return Frame::error(format!(
                    "ERR SET {} is not supported: peercache writes through the key's owner unconditionally (EX and PX are supported)",
                    String::from_utf8_lossy(&opt)
                ));
            }
            _ => return Frame::error("ERR syntax error"),
        };
        if ttl.is_some() {
            return Frame::error("ERR syntax error");
        }
        let Some(n) = rest.next() else {
            return Frame::error("ERR syntax error");
        };
        match super::frame::parse_i64(n) {
            Some(n) if n > 0 => match unit.checked_mul(u32::try_from(n).unwrap_or(u32::MAX)) {
                Some(d) if u32::try_from(n).is_ok() => ttl = Some(d),
                _ => return Frame::error("ERR invalid expire time in 'set' command"),
            },
            Some(_) => return Frame::error("ERR invalid expire time in 'set' command"),
            None => return Frame::error("ERR value is not an integer or out of range"),
        }
    }
    match group.set(k, args[1].clone(), ttl).await {
        Ok(_) => Frame::ok(),
        Err(e) => e.into(),
    }
}

/// Removes each key through its owner; answers how many keys it removed, which is every
/// key named: an owner drops a key whether or not it held it.
async fn del(group: &Group, args: &[Bytes]) -> Frame {
    let mut removed = 0;
    for arg in args {
        let k = match key(arg) {
            Ok(k) => k,
            Err(e) => return e,
        };
        if let Err(e) = group.remove(k).await {
            return e.into();
        }
        removed += 1;
    }
    Frame::Integer(removed)
}
