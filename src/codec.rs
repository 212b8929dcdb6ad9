//! Value codecs: gzip (flate2), snappy (snap), LZ4 (lz4_flex) and zstd, behind one
//! enum, for values kept compressed in memory and sent compressed to peers.
//!
//! Encoding gives nothing back for a value that does not shrink, so it is kept raw.
//! Decoding never produces more than the caller's limit (a group's largest value):
//! each decoder is told the limit before it allocates, so a small frame that claims or
//! expands to more (a decompression bomb) is refused with [`Error::Invalid`], as is a
//! corrupt one. `benches/codecs.rs` measures them against each other
//! (reports/codecs.md).

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::proto;

/// How a value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Raw bytes.
    #[default]
    Identity,
    /// gzip at a level from 0 to 9.
    Gzip {
        /// flate2's level.
        level: u32,
    },
    /// Snappy, in its raw block format.
    Snappy,
    /// LZ4, in its block format with the length prepended (lz4_flex).
    Lz4,
    /// zstd at a level from 1 to 22.
    Zstd {
        /// zstd's level.
        level: i32,
    },
}

/// gzip's default level.
pub const GZIP_LEVEL: u32 = 6;
/// zstd's default level.
pub const ZSTD_LEVEL: i32 = 3;

impl Codec {
    /// Every codec at its default level, identity first.
    pub const ALL: [Codec; 5] = [
        Codec::Identity,
        Codec::Gzip { level: GZIP_LEVEL },
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd { level: ZSTD_LEVEL },
    ];

    /// The codec's name, as `--compress` takes it (without the level).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Identity => "none",
            Codec::Gzip { .. } => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd { .. } => "zstd",
        }
    }

    /// The wire enum's value for this codec.
    pub fn wire(self) -> proto::Codec {
        match self {
            Codec::Identity => proto::Codec::Identity,
            Codec::Gzip { .. } => proto::Codec::Gzip,
            Codec::Snappy => proto::Codec::Snappy,
            Codec::Lz4 => proto::Codec::Lz4,
            Codec::Zstd { .. } => proto::Codec::Zstd,
        }
    }

    /// Whether a reader that decodes the codecs of `accept` decodes this one (whatever
    /// the level: decoding does not use it). Identity is always accepted.
    pub fn accepted_by(self, accept: &[Codec]) -> bool {
        self == Codec::Identity || accept.iter().any(|a| a.wire() == self.wire())
    }

    /// The HTTP content coding of this codec's frames (RFC 9110, RFC 8878), for the
    /// codecs HTTP clients decode: gzip and zstd.
    pub fn content_coding(self) -> Option<&'static str> {
        match self {
            Codec::Gzip { .. } => Some("gzip"),
            Codec::Zstd { .. } => Some("zstd"),
            _ => None,
        }
    }

    /// The codec a peer named on the wire (at the default level, which decoding does
    /// not use); a number this node does not know is refused.
    pub fn from_wire(codec: i32) -> Result<Codec> {
        let known = proto::Codec::try_from(codec)
            .map_err(|_| Error::Invalid(format!("unknown codec {codec}")))?;
        Ok(match known {
            proto::Codec::Identity => Codec::Identity,
            proto::Codec::Gzip => Codec::Gzip { level: GZIP_LEVEL },
            proto::Codec::Snappy => Codec::Snappy,
            proto::Codec::Lz4 => Codec::Lz4,
            proto::Codec::Zstd => Codec::Zstd { level: ZSTD_LEVEL },
        })
    }

    /// `raw` encoded, or `None` when that would not make it smaller (or this is
    /// [`Codec::Identity`]): keep it raw then.
    pub fn encode(self, raw: &[u8]) -> Option<Vec<u8>> {
        let packed = match self {
            Codec::Identity => return None,
            Codec::Gzip { level } => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                enc.write_all(raw).ok()?;
                enc.finish().ok()?
            }
            Codec::Snappy => snap::raw::Encoder::new().compress_vec(raw).ok()?,
            Codec::Lz4 => lz4_flex::compress_prepend_size(raw),
            Codec::Zstd { level } => zstd_compress(raw, level).ok()?,
        };
        (packed.len() < raw.len()).then_some(packed)
    }

    /// The raw bytes of `packed`, at most `max` of them: a frame that is corrupt or
    /// would expand past `max` is refused without allocating past it.
    pub fn decode(self, packed: &[u8], max: usize) -> Result<Vec<u8>> {
        let name = self.name();
        let corrupt =
            |why: &dyn fmt::Display| Error::Invalid(format!("corrupt {name} value: {why}"));
        let too_large = |len: &dyn fmt::Display| {
            Error::Invalid(format!(
                "{name} value expands to {len} bytes, past the {max}-byte limit"
            ))
        };
        match self {
            Codec::Identity => match packed.len() <= max {
                true => Ok(packed.to_vec()),
                false => Err(too_large(&packed.len())),
            },
            Codec::Gzip { .. } => {
                let mut out = Vec::new();
                let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
                // Straight from the slice (no read-ahead), so what follows the member
                // is left in it.
                let mut decoder = flate2::bufread::GzDecoder::new(packed);
                (&mut decoder)
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| corrupt(&e))?;
                if out.len() > max {
                    return Err(too_large(&format_args!("more than {max}")));
                }
                // One member, as this node writes: bytes after it would be decoded by
                // clients that read every member (the frame is passed on to them as it
                // is) but were not checked here.
                match decoder.into_inner() {
                    [] => Ok(out),
                    rest => Err(corrupt(&format_args!(
                        "{} bytes after the gzip member",
                        rest.len()
                    ))),
                }
            }
            Codec::Snappy => {
                let len = snap::raw::decompress_len(packed).map_err(|e| corrupt(&e))?;
                if len > max {
                    return Err(too_large(&len));
                }
                snap::raw::Decoder::new()
                    .decompress_vec(packed)
                    .map_err(|e| corrupt(&e))
            }
            Codec::Lz4 => {
                let Some(head) = packed.first_chunk::<4>() else {
                    return Err(corrupt(&"shorter than its length prefix"));
                };
                let len = u32::from_le_bytes(*head) as usize;
                if len > max {
                    return Err(too_large(&len));
                }
                lz4_flex::decompress_size_prepended(packed).map_err(|e| corrupt(&e))
            }
            Codec::Zstd { .. } => {
                // The frame header may state its size (this node's frames do): the
                // output buffer is that long, and a frame that decodes to more is
                // refused. A frame that does not is still cut off at `max`. One frame,
                // as this node writes: more frames after the first (or a skippable
                // frame before it, which states size 0) do not fit the buffer and are
                // refused, as gzip's bytes after its member are.
                let room = match zstd::zstd_safe::get_frame_content_size(packed) {
                    Ok(Some(len)) if len > max as u64 => return Err(too_large(&len)),
                    Ok(Some(len)) => len as usize,
                    _ => max,
                };
                zstd_decompress(packed, room).map_err(|e| corrupt(&e))
            }
        }
        .map(fit)
    }
}

/// `raw` without much more room than its length: a decoded value is kept (hot copies,
/// the cache of decoded values), and the byte budgets count its length.
fn fit(mut raw: Vec<u8>) -> Vec<u8> {
    if raw.capacity() > raw.len() + raw.len() / 8 {
        raw.shrink_to_fit();
    }
    raw
}

thread_local! {
    /// zstd's contexts, made once per thread and reused: making one costs more than
    /// compressing a small value (benches/codecs.rs: 4x slower at 1 KiB).
    static ZSTD_COMPRESS: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static ZSTD_DECOMPRESS: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn zstd_compress(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    ZSTD_COMPRESS.with_borrow_mut(|slot| {
        let ctx = match slot {
            Some((at, ctx)) if *at == level => ctx,
            _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        ctx.compress(raw)
    })
}

fn zstd_decompress(packed: &[u8], max: usize) -> io::Result<Vec<u8>> {
    ZSTD_DECOMPRESS.with_borrow_mut(|slot| {
        let ctx = match slot {
            Some(ctx) => ctx,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        ctx.decompress(packed, max)
    })
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::Gzip { level } => write!(f, "gzip:{level}"),
            Codec::Zstd { level } => write!(f, "zstd:{level}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Codec {
    type Err = Error;

    /// `none`, `snappy`, `lz4`, `gzip[:LEVEL]` (0 to 9) or `zstd[:LEVEL]` (1 to 22).
    fn from_str(s: &str) -> Result<Self> {
        let (name, level) = match s.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (s, None),
        };
        let bad = |what: &str| Error::Config(format!("codec {s:?}: {what}"));
        let level_in = |range: std::ops::RangeInclusive<i64>, default: i64| -> Result<i64> {
            let Some(level) = level else {
                return Ok(default);
            };
            let level: i64 = level
                .parse()
                .map_err(|_| bad("the level is not a number"))?;
            match range.contains(&level) {
                true => Ok(level),
                false => Err(bad(&format!(
                    "the level must be {} to {}",
                    range.start(),
                    range.end()
                ))),
            }
        };
        let no_level = |codec: Codec| match level {
            Some(_) => Err(bad("takes no level")),
            None => Ok(codec),
        };
        match name {
            "none" | "identity" => no_level(Codec::Identity),
            "snappy" => no_level(Codec::Snappy),
            "lz4" => no_level(Codec::Lz4),
            "gzip" => Ok(Codec::Gzip {
                level: level_in(0..=9, GZIP_LEVEL.into())? as u32,
            }),
            "zstd" => Ok(Codec::Zstd {
                level: level_in(1..=22, ZSTD_LEVEL.into())? as i32,
            }),
            _ => Err(bad(
                "expected none, gzip[:LEVEL], snappy, lz4 or zstd[:LEVEL]",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    /// Text that compresses well, `len` bytes of it.
    fn text(len: usize) -> Vec<u8> {
        (0..len).map(|i| b"peercache values "[i % 17]).collect()
    }

    /// A decoded value holds about its own length, not the limit it was decoded
    /// within: it is kept (hot copies, the cache of decoded values) and the budgets
    /// count its length. (Before: zstd decoded into a buffer of the whole limit, so a
    /// 4 KiB value held 1 MiB.)
    #[test]
    fn a_decoded_value_holds_about_its_length() {
        let value = text(4096);
        for codec in Codec::ALL {
            let Some(packed) = codec.encode(&value) else {
                continue;
            };
            let decoded = codec.decode(&packed, MAX).unwrap();
            assert_eq!(decoded, value, "{codec}");
            assert!(
                decoded.capacity() <= value.len() + value.len() / 4,
                "{codec}: capacity {} for {} bytes",
                decoded.capacity(),
                value.len()
            );
        }
    }

    proptest! {
        #[test]
        fn every_codec_round_trips_any_bytes(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for codec in Codec::ALL {
                let packed = codec.encode(&raw);
                if let Some(packed) = &packed {
                    prop_assert!(packed.len() < raw.len(), "{codec} kept a value that grew");
                    prop_assert_eq!(&codec.decode(packed, MAX).unwrap(), &raw, "{}", codec);
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_nor_exceeds_the_limit(
            packed in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            for codec in Codec::ALL {
                if let Ok(raw) = codec.decode(&packed, 1024) {
                    prop_assert!(raw.len() <= 1024, "{codec}");
                }
            }
        }
    }

    #[test]
    fn text_shrinks_and_random_bytes_stay_raw() {
        let mut random = vec![0u8; 4096];
        let mut x = 0x9e37_79b9_u32;
        for b in &mut random {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for codec in Codec::ALL.into_iter().skip(1) {
            let packed = codec.encode(&text(4096)).expect("text shrinks");
            assert!(packed.len() * 4 < 4096, "{codec}: {} bytes", packed.len());
            assert_eq!(codec.encode(&random), None, "{codec} kept random bytes");
        }
        assert_eq!(Codec::Identity.encode(&text(4096)), None);
    }

    /// A decompression bomb: 10 MiB of zeros, encoded in a frame at least 16 times
    /// smaller (snappy's block format caps its ratio near 21), refused under a 1 MiB
    /// limit by every codec, with a message that says so.
    #[test]
    fn a_frame_expanding_past_the_limit_is_refused() {
        let zeros = vec![0u8; 10 << 20];
        for codec in Codec::ALL.into_iter().skip(1) {
            let bomb = codec.encode(&zeros).expect("zeros shrink");
            assert!(
                bomb.len() * 16 < zeros.len(),
                "{codec}: {} bytes",
                bomb.len()
            );
            let refused = codec.decode(&bomb, MAX).unwrap_err();
            let Error::Invalid(why) = &refused else {
                panic!("{codec}: {refused:?}")
            };
            assert!(
                why.contains("past the 1048576-byte limit"),
                "{codec}: {why}"
            );
            assert_eq!(codec.decode(&bomb, 10 << 20).unwrap().len(), 10 << 20);
        }
    }

    #[test]
    fn corrupt_frames_are_refused() {
        for codec in Codec::ALL.into_iter().skip(1) {
            let mut packed = codec.encode(&text(4096)).unwrap();
            let mid = packed.len() / 2;
            packed.truncate(mid);
            let refused = codec.decode(&packed, MAX);
            assert!(
                matches!(&refused, Err(Error::Invalid(why)) if why.starts_with("corrupt")),
                "{codec}: {refused:?}"
            );
        }
    }

    /// A gzip frame is passed on to HTTP clients as it is, and many of them read every
    /// member: one with anything after its first member (another member, a bomb) is
    /// refused, not decoded as its first member alone.
    #[test]
    fn gzip_with_bytes_after_its_member_is_refused() {
        let gzip = Codec::Gzip { level: 6 };
        let one = gzip.encode(&text(4096)).unwrap();
        assert_eq!(gzip.decode(&one, MAX).unwrap(), text(4096));
        let bomb = gzip.encode(&vec![0u8; 10 << 20]).unwrap();
        for tail in [&one[..], &bomb[..], b"junk"] {
            let refused = gzip.decode(&[&one[..], tail].concat(), MAX);
            assert!(
                matches!(&refused, Err(Error::Invalid(why)) if why.contains("after the gzip member")),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn codecs_cross_the_wire_and_unknown_numbers_are_refused() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_wire(codec.wire() as i32).unwrap(), codec);
        }
        let refused = Codec::from_wire(99).unwrap_err();
        assert!(matches!(&refused, Error::Invalid(why) if why == "unknown codec 99"));
    }

    #[test]
    fn codecs_parse_with_and_without_levels() {
        let parsed: Vec<Codec> = ["none", "lz4", "snappy", "gzip", "gzip:9", "zstd", "zstd:19"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            parsed,
            [
                Codec::Identity,
                Codec::Lz4,
                Codec::Snappy,
                Codec::Gzip { level: 6 },
                Codec::Gzip { level: 9 },
                Codec::Zstd { level: 3 },
                Codec::Zstd { level: 19 },
            ]
        );
        for bad in ["brotli", "gzip:10", "zstd:0", "lz4:1", "gzip:x", ""] {
            assert!(
                matches!(bad.parse::<Codec>(), Err(Error::Config(_))),
                "{bad}"
            );
        }
        for codec in parsed {
            assert_eq!(codec.to_string().parse::<Codec>().unwrap(), codec);
        }
    }
}
