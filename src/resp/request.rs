//! A client's command: an array of bulk strings, or an inline line (`PING\r\n`, which
//! redis-benchmark and telnet users send): its words, split at spaces and tabs.

use bytes::Bytes;

use super::frame::{Frame, Limits, ParseError};

/// Parses the command at the front of `buf`: its arguments (empty for an empty line or
/// array, which are skipped) and the bytes it took.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<(Vec<Bytes>, usize), ParseError> {
    match buf.first() {
        None => Err(ParseError::Incomplete),
        Some(b'*') => {
            // A command is one level deep: an array of bulk strings.
            let flat = Limits {
                max_depth: 1,
                ..*limits
            };
            let (frame, used) = Frame::parse(buf, &flat)?;
            let args = match frame {
                Frame::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Frame::Bulk(b) => Ok(b),
                        _ => Err(ParseError::Invalid(
                            "a command's arguments must be bulk strings".into(),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                _ => Vec::new(),
            };
            Ok((args, used))
        }
        Some(_) => inline(buf, limits.max_inline),
    }
}

fn inline(buf: &[u8], max: usize) -> Result<(Vec<Bytes>, usize), ParseError> {
    let window = &buf[..buf.len().min(max + 1)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() > max {
            Err(ParseError::Invalid(format!(
                "inline command longer than {max} bytes"
            )))
        } else {
            Err(ParseError::Incomplete)
        };
    };
    let line = buf[..lf].strip_suffix(b"\r").unwrap_or(&buf[..lf]);
    let args = line
        .split(|b| matches!(b, b' ' | b'\t'))
        .filter(|w| !w.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();
    Ok((args, lf + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(buf: &[u8]) -> (Vec<String>, usize) {
        let (args, used) = parse(buf, &Limits::default()).unwrap();
        let args = args.iter().map(|a| String::from_utf8_lossy(a).into_owned());
        (args.collect(), used)
    }

    #[test]
    fn inline_and_array_commands() {
        let owned = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(words(b"PING\r\n"), (owned(&["PING"]), 6));
        assert_eq!(words(b"set  a\tb\nx"), (owned(&["set", "a", "b"]), 9));
        assert_eq!(words(b"\r\n"), (vec![], 2));
        assert_eq!(words(b"*1\r\n$4\r\nPING\r\n"), (owned(&["PING"]), 14));
        assert_eq!(words(b"*0\r\n"), (vec![], 4));
    }

    #[test]
    fn bad_commands() {
        let limits = Limits {
            max_inline: 8,
            ..Limits::default()
        };
        let invalid = |b: &[u8]| matches!(parse(b, &limits), Err(ParseError::Invalid(_)));
        assert!(invalid(b"123456789"));
        assert!(invalid(b"*1\r\n:1\r\n"));
        assert!(invalid(b"*1\r\n*1\r\n$1\r\na\r\n"));
        assert_eq!(parse(b"12345678", &limits), Err(ParseError::Incomplete));
        assert_eq!(parse(b"*2\r\n$1\r\n", &limits), Err(ParseError::Incomplete));
    }
}
