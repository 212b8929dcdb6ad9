//! `Accept-Encoding` (RFC 9110 §12.5.3) for reads of a key: a group that keeps a value
//! compressed in gzip or zstd, or receives it so from the key's owner, sends a client
//! that accepts that coding the compressed bytes as they are, with `Content-Encoding`,
//! instead of decompressing them for it.

use axum::http::{HeaderMap, header};

use crate::codec::Codec;

/// Largest value sent in zstd: RFC 9659 has HTTP clients decode zstd with windows of at
/// most 8 MiB, and a frame of a longer value made at a high level may need more.
const MAX_ZSTD_VALUE: usize = 8 << 20;

/// The codecs a client decodes, from its `Accept-Encoding` headers: gzip (`x-gzip`
/// too) and zstd when named, or covered by `*`, with a weight above 0 (the first
/// mention of a coding counts; `identity` is always acceptable and never refused);
/// zstd only for a group whose values are at most [`MAX_ZSTD_VALUE`] long
/// (`max_value`).
pub(super) fn accepted(headers: &HeaderMap, max_value: usize) -> Vec<Codec> {
    let mut named: Vec<(&str, bool)> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            // A weight of 0, or one that is not a number above 0 (malformed), refuses.
            let refused = parts.any(|param| {
                let (name, weight) = param.split_once('=').unwrap_or((param, ""));
                name.trim().eq_ignore_ascii_case("q")
                    && !weight.trim().parse::<f32>().is_ok_and(|q| q > 0.0)
            });
            named.push((coding, !refused));
        }
    }
    let lookup = |names: &[&str]| {
        (named.iter())
            .find(|(coding, _)| names.iter().any(|n| coding.eq_ignore_ascii_case(n)))
            .map(|&(_, ok)| ok)
    };
    let any = lookup(&["*"]).unwrap_or(false);
    let mut codecs = Vec::new();
    if lookup(&["zstd"]).unwrap_or(any) && max_value <= MAX_ZSTD_VALUE {
        codecs.push(Codec::Zstd {
            level: crate::codec::ZSTD_LEVEL,
        });
    }
    if lookup(&["gzip", "x-gzip"]).unwrap_or(any) {
        codecs.push(Codec::Gzip {
            level: crate::codec::GZIP_LEVEL,
        });
    }
    codecs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(values: &[&str]) -> Vec<&'static str> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, v.parse().unwrap());
        }
        accepted(&headers, 1 << 20)
            .into_iter()
            .map(Codec::name)
            .collect()
    }

    #[test]
    fn zstd_only_for_values_a_browser_decodes() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT_ENCODING, "zstd, gzip".parse().unwrap());
        let names = |max| -> Vec<&str> {
            accepted(&headers, max)
                .into_iter()
                .map(Codec::name)
                .collect()
        };
        assert_eq!(names(MAX_ZSTD_VALUE), ["zstd", "gzip"]);
        assert_eq!(names(MAX_ZSTD_VALUE + 1), ["gzip"]);
    }

    #[test]
    fn codings_a_client_names_with_a_weight_above_zero() {
        assert_eq!(names(&[]), Vec::<&str>::new());
        assert_eq!(names(&["gzip, deflate, br, zstd"]), ["zstd", "gzip"]);
        assert_eq!(names(&["GZIP;q=0.5"]), ["gzip"]);
        assert_eq!(names(&["x-gzip"]), ["gzip"]);
        assert_eq!(names(&["gzip;q=0, zstd;q=1.0"]), ["zstd"]);
        assert_eq!(names(&["gzip ; q=0.000"]), Vec::<&str>::new());
        assert_eq!(names(&["identity", "br"]), Vec::<&str>::new());
        assert_eq!(names(&["deflate", "zstd"]), ["zstd"], "several headers");
    }

    #[test]
    fn a_wildcard_covers_the_codings_not_named() {
        assert_eq!(names(&["*"]), ["zstd", "gzip"]);
        assert_eq!(names(&["*;q=0"]), Vec::<&str>::new());
        assert_eq!(names(&["gzip;q=0, *"]), ["zstd"]);
        assert_eq!(names(&["zstd, *;q=0"]), ["zstd"]);
    }

    #[test]
    fn malformed_headers_accept_nothing_unnamed() {
        assert_eq!(names(&[",,;;"]), Vec::<&str>::new());
        assert_eq!(
            names(&["gzip;q=abc"]),
            Vec::<&str>::new(),
            "an unreadable weight refuses"
        );
        assert_eq!(names(&["zstd;q=NaN, gzip;q=0.001"]), ["gzip"]);
        assert_eq!(names(&[";q=1"]), Vec::<&str>::new());
    }
}
