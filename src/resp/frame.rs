//! RESP frames: the values of the Redis protocol, versions 2 and 3, and their wire form.
//!
//! [`Frame::parse`] reads one frame from the front of a buffer, or says that more bytes
//! are needed; it never allocates more than the bytes it was given justify, whatever
//! lengths a frame announces: a bulk longer than [`Limits::max_bulk`], an aggregate of
//! more than [`Limits::max_array`] elements, aggregates nested deeper than
//! [`Limits::max_depth`] or a line longer than [`Limits::max_inline`] are refused as
//! soon as their header is read. [`Frame::encode`] writes a frame in either version;
//! RESP2 has no null, map or boolean type of its own, so those take the RESP2 shapes
//! clients expect (`$-1`, a flat array, `:1`/`:0`).
//!
//! Not written by hand for want of a crate: redis-protocol parses RESP2/3 but neither
//! inline commands nor announced lengths against limits before it allocates.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

/// A RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+text`: a status reply. Never holds CR or LF ([`Frame::simple`] replaces them).
    Simple(String),
    /// `-CODE message`: an error reply. Never holds CR or LF ([`Frame::error`]).
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` and bytes.
    Bulk(Bytes),
    /// RESP3 `_`; RESP2 `$-1` (also parsed from `*-1`).
    Null,
    /// RESP3 `#t`/`#f`; RESP2 `:1`/`:0`.
    Boolean(bool),
    /// `*len` and frames.
    Array(Vec<Frame>),
    /// RESP3 `%len` and key-value pairs; RESP2 a flat array of keys and values.
    Map(Vec<(Frame, Frame)>),
}

/// Which version of the protocol a connection speaks (`HELLO 3` switches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// RESP2, the default.
    Resp2,
    /// RESP3.
    Resp3,
}

/// Bounds on what one frame may announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string, in bytes.
    pub max_bulk: usize,
    /// Most elements of an array (or pairs of a map).
    pub max_array: usize,
    /// Longest line: an inline command, a simple string or an error.
    pub max_inline: usize,
    /// Deepest nesting of arrays and maps (1: an array of scalars).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 << 20,
            max_array: 1 << 20,
            max_inline: 64 << 10,
            max_depth: 8,
        }
    }
}

/// Why bytes are not a frame: not yet (more must arrive), or never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The buffer holds the start of a frame only.
    Incomplete,
    /// The bytes break the protocol or a limit; the message says how.
    Invalid(String),
}

type Parsed<T> = Result<T, ParseError>;

fn invalid<T>(msg: impl Into<String>) -> Parsed<T> {
    Err(ParseError::Invalid(msg.into()))
}

impl Frame {
    /// A status reply, CR and LF replaced by spaces.
    pub fn simple(text: impl Into<String>) -> Frame {
        Frame::Simple(one_line(text.into()))
    }

    /// An error reply `CODE message` (e.g. `ERR syntax error`), CR and LF replaced.
    pub fn error(text: impl Into<String>) -> Frame {
        Frame::Error(one_line(text.into()))
    }

    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// A bulk string of `bytes`.
    pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    /// Parses one frame from the front of `buf`: the frame and the bytes it took.
    pub fn parse(buf: &[u8], limits: &Limits) -> Parsed<(Frame, usize)> {
        let mut cursor = Cursor {
            buf,
            pos: 0,
            limits,
        };
        let frame = cursor.frame(0)?;
        Ok((frame, cursor.pos))
    }

    /// Appends the frame's wire form in `proto` to `out`.
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => line(out, b'-', s.as_bytes()),
            Frame::Integer(n) => header(out, b':', *n),
            Frame::Bulk(b) => {
                header(out, b'$', b.len() as i64);
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null => match proto {
                Proto::Resp2 => out.extend_from_slice(b"$-1\r\n"),
                Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Frame::Boolean(b) => match proto {
                Proto::Resp2 => header(out, b':', i64::from(*b)),
                Proto::Resp3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            },
            Frame::Array(items) => {
                header(out, b'*', items.len() as i64);
                for item in items {
                    item.encode(proto, out);
                }
            }
            Frame::Map(pairs) => {
                match proto {
                    Proto::Resp2 => header(out, b'*', 2 * pairs.len() as i64),
                    Proto::Resp3 => header(out, b'%', pairs.len() as i64),
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
        }
    }
}

fn one_line(mut text: String) -> String {
    if text.contains(['\r', '\n']) {
        text = text.replace(['\r', '\n'], " ");
    }
    text
}

fn line(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(tag);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    write!(out, "{n}\r\n").expect("writing to a BytesMut cannot fail");
}

/// A read position in a buffer being parsed.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl Cursor<'_> {
    fn frame(&mut self, depth: usize) -> Parsed<Frame> {
        let tag = *self.buf.get(self.pos).ok_or(ParseError::Incomplete)?;
        self.pos += 1;
        match tag {
            b'+' => Ok(Frame::Simple(self.text()?)),
            b'-' => Ok(Frame::Error(self.text()?)),
            b':' => Ok(Frame::Integer(self.integer()?)),
            b'$' => self.bulk(),
            b'_' => self.line().and_then(|l| match l {
                b"" => Ok(Frame::Null),
                _ => invalid("a null has no payload"),
            }),
            b'#' => match self.line()? {
                b"t" => Ok(Frame::Boolean(true)),
                b"f" => Ok(Frame::Boolean(false)),
                _ => invalid("a boolean is t or f"),
            },
            b'*' => {
                let Some(len) = self.length(depth)? else {
                    return Ok(Frame::Null);
                };
                let mut items = Vec::with_capacity(self.room_for(len));
                for _ in 0..len {
                    items.push(self.frame(depth + 1)?);
                }
                Ok(Frame::Array(items))
            }
            b'%' => {
                let Some(len) = self.length(depth)? else {
                    return invalid("a map cannot be null");
                };
                let mut pairs = Vec::with_capacity(self.room_for(len));
                for _ in 0..len {
                    let key = self.frame(depth + 1)?;
                    pairs.push((key, self.frame(depth + 1)?));
                }
                Ok(Frame::Map(pairs))
            }
            other => invalid(format!("unexpected type byte {:?}", char::from(other))),
        }
    }

    /// The bytes up to the next CRLF, which it passes.
    fn line(&mut self) -> Parsed<&[u8]> {
        let rest = &self.buf[self.pos..];
        let window = &rest[..rest.len().min(self.limits.max_inline + 2)];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            return if rest.len() > self.limits.max_inline + 1 {
                invalid(format!("line longer than {} bytes", self.limits.max_inline))
            } else {
                Err(ParseError::Incomplete)
            };
        };
        if lf == 0 || rest[lf - 1] != b'\r' {
            return invalid("line not ended by CRLF");
        }
        self.pos += lf + 1;
        Ok(&rest[..lf - 1])
    }

    fn text(&mut self) -> Parsed<String> {
        match std::str::from_utf8(self.line()?) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => invalid("a simple string is not UTF-8"),
        }
    }

    fn integer(&mut self) -> Parsed<i64> {
        let line = self.line()?;
        parse_i64(line).map_or_else(|| invalid("invalid integer"), Ok)
    }

    /// An aggregate's length: None for `-1` (null), refused past the limits.
    fn length(&mut self, depth: usize) -> Parsed<Option<usize>> {
        if depth >= self.limits.max_depth {
            return invalid(format!(
                "aggregates nested deeper than {}",
                self.limits.max_depth
            ));
        }
        match self.integer() {
            Ok(-1) => Ok(None),
            Ok(n) if n >= 0 && n as u64 <= self.limits.max_array as u64 => Ok(Some(n as usize)),
            Ok(_) | Err(ParseError::Invalid(_)) => invalid("invalid multibulk length"),
            Err(e) => Err(e),
        }
    }

    fn bulk(&mut self) -> Parsed<Frame> {
        let len = match self.integer() {
            Ok(-1) => return Ok(Frame::Null),
            Ok(n) if n >= 0 && n as u64 <= self.limits.max_bulk as u64 => n as usize,
            Ok(n) if n > 0 => {
                return invalid(format!(
                    "bulk of {n} bytes is over the limit of {} bytes",
                    self.limits.max_bulk
                ));
            }
            Ok(_) | Err(ParseError::Invalid(_)) => return invalid("invalid bulk length"),
            Err(e) => return Err(e),
        };
        let end = self.pos + len;
        if self.buf.len() < end + 2 {
            return Err(ParseError::Incomplete);
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return invalid("bulk not ended by CRLF");
        }
        let bytes = Bytes::copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end + 2;
        Ok(Frame::Bulk(bytes))
    }

    /// Capacity to reserve for `len` elements: no more than the bytes left could hold
    /// (each takes at least 3), so an announced length alone allocates nothing.
    fn room_for(&self, len: usize) -> usize {
        len.min((self.buf.len() - self.pos) / 3)
    }
}

/// A decimal i64 as RESP writes it: an optional `-` and digits, nothing else.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Parsed<(Frame, usize)> {
        Frame::parse(bytes, &Limits::default())
    }

    #[test]
    fn scalars_and_aggregates_parse() {
        assert_eq!(parse(b"+OK\r\n"), Ok((Frame::simple("OK"), 5)));
        assert_eq!(parse(b":-12\r\n"), Ok((Frame::Integer(-12), 6)));
        assert_eq!(parse(b"$-1\r\n"), Ok((Frame::Null, 5)));
        assert_eq!(parse(b"*-1\r\n"), Ok((Frame::Null, 5)));
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
        let (frame, used) = parse(get).unwrap();
        assert_eq!(
            frame,
            Frame::Array(vec![Frame::bulk("GET"), Frame::bulk("k")])
        );
        assert_eq!(used, get.len() - 4);
    }

    #[test]
    fn prefixes_are_incomplete() {
        let whole = b"*2\r\n$3\r\nGET\r\n%1\r\n#t\r\n_\r\n";
        for end in 0..whole.len() {
            assert_eq!(parse(&whole[..end]), Err(ParseError::Incomplete), "{end}");
        }
        assert!(parse(whole).is_ok());
    }

    #[test]
    fn announced_lengths_past_the_limits_are_refused_at_once() {
        let limits = Limits {
            max_bulk: 10,
            max_array: 4,
            max_inline: 16,
            max_depth: 2,
        };
        let refused =
            |bytes: &[u8]| matches!(Frame::parse(bytes, &limits), Err(ParseError::Invalid(_)));
        assert!(refused(b"$11\r\n"));
        assert!(refused(b"*5\r\n"));
        assert!(refused(b"*9223372036854775807\r\n"));
        assert!(refused(b"*1\r\n*1\r\n*1\r\n"));
        assert!(refused(b"+aaaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(refused(b"$-2\r\n"));
        assert!(refused(b"$3\r\nabcde"));
        assert!(refused(b":1x\r\n"));
        assert!(refused(b"!\r\n"));
        assert!(refused(b"+ok\n"));
    }

    #[test]
    fn resp2_has_no_null_map_or_boolean_of_its_own() {
        let frame = Frame::Map(vec![(Frame::bulk("a"), Frame::Null)]);
        let mut out = BytesMut::new();
        frame.encode(Proto::Resp2, &mut out);
        Frame::Boolean(true).encode(Proto::Resp2, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\na\r\n$-1\r\n:1\r\n");
        out.clear();
        frame.encode(Proto::Resp3, &mut out);
        assert_eq!(&out[..], b"%1\r\n$1\r\na\r\n_\r\n");
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1.0", b"0x1"] {
            assert_eq!(parse_i64(bad), None);
        }
    }
}
