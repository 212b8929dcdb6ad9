//! The value codecs of src/codec.rs (gzip through flate2, snappy, LZ4 through lz4_flex,
//! zstd), as the node uses them, each encoding and decoding three payload kinds
//! generated from a fixed seed (JSON records, HTML-like text, random bytes) at 1 KiB,
//! 16 KiB and 256 KiB. A value a codec does not shrink is kept raw, so it has no
//! decode figure.
//!
//! `cargo bench --bench codecs` measures every pair with criterion (throughput in bytes
//! of the raw payload, so criterion reports MB/s both ways) and then writes
//! `reports/codecs.md` from the estimates it saved: MB/s, ratio, and a recommendation
//! per payload kind. `cargo test --bench codecs` (and clippy) only checks that every
//! codec round-trips every payload.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use peercache::codec::{Codec, GZIP_LEVEL, ZSTD_LEVEL};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

const SEED: u64 = 0xc0de;
const SIZES: [usize; 3] = [1 << 10, 16 << 10, 256 << 10];
/// The codecs measured: every one but identity, at its default level.
fn codecs() -> impl Iterator<Item = Codec> {
    Codec::ALL.into_iter().filter(|c| *c != Codec::Identity)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Payload {
    Json,
    Html,
    Random,
}

impl Payload {
    const ALL: [Payload; 3] = [Payload::Json, Payload::Html, Payload::Random];

    fn name(self) -> &'static str {
        match self {
            Payload::Json => "json",
            Payload::Html => "html",
            Payload::Random => "random",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Payload::Json => {
                "JSON records: an array of user objects (id, name, email, flags, a score, tags) with varied values"
            }
            Payload::Html => {
                "HTML-like text: nested list items of sentences drawn from a 200-word vocabulary"
            }
            Payload::Random => "random bytes: incompressible",
        }
    }

    /// `len` bytes of this kind, the same for the same seed.
    fn generate(self, len: usize) -> Vec<u8> {
        let mut rng = SmallRng::seed_from_u64(SEED ^ len as u64);
        let mut out = String::with_capacity(len + 512);
        match self {
            Payload::Random => {
                let mut bytes = vec![0; len];
                rng.fill_bytes(&mut bytes);
                return bytes;
            }
            Payload::Json => {
                out.push('[');
                let mut id = 1000u64;
                while out.len() < len {
                    id += rng.random_range(1..50);
                    let name = word(&mut rng);
                    let tags: Vec<&str> = (0..rng.random_range(0..4))
                        .map(|_| word(&mut rng))
                        .collect();
                    out.push_str(&format!(
                        r#"{{"id":{id},"name":"{name} {}","email":"{name}.{id}@example.com","active":{},"score":{:.3},"tags":{:?}}},"#,
                        word(&mut rng),
                        rng.random_bool(0.7),
                        rng.random_range(0.0..100.0f64),
                        tags,
                    ));
                }
            }
            Payload::Html => {
                out.push_str("<html><body><ul class=\"items\">");
                while out.len() < len {
                    out.push_str("<li class=\"item\"><h2>");
                    for _ in 0..rng.random_range(2..6) {
                        out.push_str(word(&mut rng));
                        out.push(' ');
                    }
                    out.push_str("</h2><p>");
                    for _ in 0..rng.random_range(10..40) {
                        out.push_str(word(&mut rng));
                        out.push(' ');
                    }
                    out.push_str("</p></li>\n");
                }
            }
        }
        let mut bytes = out.into_bytes();
        bytes.truncate(len);
        bytes
    }
}

/// A word from a fixed vocabulary of 200 made-up words.
fn word(rng: &mut SmallRng) -> &'static str {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "xi", "zu", "bra", "cle", "dro", "fli",
        "gru", "pla", "sto", "tri", "qua", "shen",
    ];
    static WORDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let words = WORDS.get_or_init(|| {
        (0..200)
            .map(|i| {
                let parts = 1 + i % 3;
                (0..parts)
                    .map(|p| SYLLABLES[(i * 7 + p * 13) % SYLLABLES.len()])
                    .collect()
            })
            .collect()
    });
    &words[rng.random_range(0..words.len())]
}

fn group_name(dir: &str, payload: Payload, len: usize) -> String {
    format!("{dir}/{}/{}KiB", payload.name(), len >> 10)
}

fn bench(c: &mut Criterion) {
    for payload in Payload::ALL {
        for len in SIZES {
            let raw = payload.generate(len);
            let mut group = c.benchmark_group(group_name("compress", payload, len));
            group.throughput(Throughput::Bytes(len as u64));
            for codec in codecs() {
                group.bench_function(codec.name(), |b| b.iter(|| codec.encode(black_box(&raw))));
            }
            group.finish();
            let mut group = c.benchmark_group(group_name("decompress", payload, len));
            group.throughput(Throughput::Bytes(len as u64));
            // A value a codec does not shrink is kept raw: nothing to decode.
            for codec in codecs() {
                let Some(packed) = codec.encode(&raw) else {
                    continue;
                };
                group.bench_function(codec.name(), |b| {
                    b.iter(|| codec.decode(black_box(&packed), len))
                });
            }
            group.finish();
        }
    }
}

/// Every codec gives back every payload.
fn check_round_trips() {
    for payload in Payload::ALL {
        for len in SIZES {
            let raw = payload.generate(len);
            assert_eq!(raw.len(), len);
            assert_eq!(raw, payload.generate(len), "deterministic");
            for codec in codecs() {
                let kept = match codec.encode(&raw) {
                    Some(packed) => {
                        assert_eq!(codec.decode(&packed, len).unwrap(), raw, "{codec}");
                        format!("{} bytes", packed.len())
                    }
                    None => "kept raw".to_owned(),
                };
                println!("{codec} {} {} KiB: {kept}", payload.name(), len >> 10);
            }
        }
    }
}

/// When this run began.
static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// The mean time of one criterion benchmark, in ns, from the estimates it saved.
fn mean_ns(group: &str, function: &str) -> Option<f64> {
    // criterion keeps `/` in group ids as directory separators' stand-ins: `_`.
    let dir = criterion_dir()
        .join(group.replace('/', "_"))
        .join(function)
        .join("new");
    let path = dir.join("estimates.json");
    // Only this run's: an estimate left by an earlier run is not this code's.
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < *STARTED.get()? {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let est: serde_json::Value = serde_json::from_str(&text).ok()?;
    est["mean"]["point_estimate"]
        .as_f64()
        .filter(|ns| *ns > 0.0)
}

struct Row {
    codec: Codec,
    len: usize,
    ratio: f64,
    compress_mbs: f64,
    decompress_mbs: f64,
}

fn rows(payload: Payload) -> Vec<Row> {
    let mut out = vec![];
    for len in SIZES {
        let raw = payload.generate(len);
        for codec in codecs() {
            let packed = codec.encode(&raw).unwrap_or_else(|| raw.clone());
            let mbs = |dir: &str| {
                mean_ns(&group_name(dir, payload, len), codec.name())
                    .map_or(f64::NAN, |ns| len as f64 / ns * 1e3)
            };
            out.push(Row {
                codec,
                len,
                ratio: len as f64 / packed.len() as f64,
                compress_mbs: mbs("compress"),
                decompress_mbs: mbs("decompress"),
            });
        }
    }
    out
}

/// A recommendation from the measured rows of one payload kind, at 16 KiB.
fn recommend(payload: Payload, rows: &[Row]) -> String {
    let at: Vec<&Row> = rows.iter().filter(|r| r.len == 16 << 10).collect();
    let best = |f: fn(&Row) -> f64| {
        *at.iter()
            .max_by(|a, b| f(a).total_cmp(&f(b)))
            .expect("four codecs")
    };
    let (densest, fastest) = (best(|r| r.ratio), best(|r| r.compress_mbs));
    if densest.ratio < 1.05 {
        return format!(
            "{}: no codec shrinks it (best {} at {:.3}x), so each keeps it raw. Finding that out costs one compression; {} is the cheapest at {:.0} MB/s.",
            payload.name(),
            densest.codec.name(),
            densest.ratio,
            fastest.codec.name(),
            fastest.compress_mbs
        );
    }
    let lz4 = at.iter().find(|r| r.codec == Codec::Lz4).expect("lz4");
    let zstd = (at.iter())
        .find(|r| matches!(r.codec, Codec::Zstd { .. }))
        .expect("zstd");
    format!(
        "{}: at 16 KiB, {} packs densest ({:.2}x, compress {:.0} MB/s, decompress {:.0} MB/s) and {} compresses fastest ({:.0} MB/s at {:.2}x). zstd gives {:.2}x at {:.0}/{:.0} MB/s against lz4's {:.2}x at {:.0}/{:.0} MB/s: zstd where memory is the limit (more keys per byte), lz4 where CPU on the request path is.",
        payload.name(),
        densest.codec.name(),
        densest.ratio,
        densest.compress_mbs,
        densest.decompress_mbs,
        fastest.codec.name(),
        fastest.compress_mbs,
        fastest.ratio,
        zstd.ratio,
        zstd.compress_mbs,
        zstd.decompress_mbs,
        lz4.ratio,
        lz4.compress_mbs,
        lz4.decompress_mbs,
    )
}

fn report() -> String {
    let mut out = String::from(
        "# Value codecs\n\nCommand: `cargo bench --bench codecs` (benches/codecs.rs, criterion; this file is written by it).\n\n",
    );
    out.push_str(&format!(
        "Payloads are generated from seed {SEED:#x}; every codec runs on one thread of this 2-core machine, with its library's default level (gzip {GZIP_LEVEL} through flate2's default Rust backend, zstd {ZSTD_LEVEL} with its contexts reused between calls); snappy and LZ4 in their block formats (lz4_flex with the length prepended), gzip and zstd as whole frames. MB/s is raw payload bytes per second (10^6), both ways; ratio is raw size over stored size (a value a codec does not shrink is stored raw: 1.00, nothing to decode).\n\n"
    ));
    let mut advice = vec![];
    for payload in Payload::ALL {
        let rows = rows(payload);
        out.push_str(&format!(
            "## {}\n\n{}.\n\n",
            payload.name(),
            payload.about()
        ));
        out.push_str(
            "| size | codec | ratio | compress MB/s | decompress MB/s |\n|---|---|---|---|---|\n",
        );
        for r in &rows {
            out.push_str(&format!(
                "| {} KiB | {} | {:.2} | {:.0} | {} |\n",
                r.len >> 10,
                r.codec.name(),
                r.ratio,
                r.compress_mbs,
                match r.decompress_mbs.is_nan() {
                    true => "— (kept raw)".to_owned(),
                    false => format!("{:.0}", r.decompress_mbs),
                }
            ));
        }
        out.push('\n');
        advice.push(recommend(payload, &rows));
    }
    out.push_str("## Recommendation\n\n");
    for a in advice {
        out.push_str(&format!("- {a}\n"));
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        check_round_trips();
        return;
    }
    STARTED.get_or_init(std::time::SystemTime::now);
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    let report = report();
    println!("{report}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/codecs.md");
    std::fs::write(&path, report).expect("reports/ is writable");
    println!("wrote {}", path.display());
}
