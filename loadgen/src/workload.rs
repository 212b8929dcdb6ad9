//! Key traces for cache experiments: which keys a client asks for, in what order.
//!
//! Shared by the hit-ratio bench (`benches/hit_ratio.rs`, which includes this file with
//! `#[path]`) and the load generator. Keys are `u64` ids; [`key_name`] turns an id into
//! the fixed-length string a cache sees. Every trace is an iterator seeded explicitly
//! (a [`SmallRng`]), so the same seed always yields the same keys.

use std::fmt::Write as _;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, ZipfError};

/// Zipf-distributed ids over `0..n`: id `r - 1` has rank `r`, so its probability is
/// proportional to `1 / r^s`. Id 0 is the hottest key.
#[derive(Debug, Clone)]
pub struct Zipf {
    dist: rand_distr::Zipf<f64>,
    rng: SmallRng,
}

impl Zipf {
    /// Ids over `0..n` with exponent `s`, drawn from a generator seeded with `seed`.
    pub fn new(n: u64, s: f64, seed: u64) -> Result<Self, ZipfError> {
        Ok(Zipf {
            dist: rand_distr::Zipf::new(n as f64, s)?,
            rng: SmallRng::seed_from_u64(seed),
        })
    }
}

impl Iterator for Zipf {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        // Samples are whole numbers in 1..=n.
        Some(self.dist.sample(&mut self.rng) as u64 - 1)
    }
}

/// A hot Zipf workload cut by one-off sequential scans, the pattern that flushes a
/// plain LRU (a batch job or a crawler walking keys nobody asks for again).
///
/// The trace repeats one round forever:
///
/// 1. `gap` requests drawn from a [`Zipf`] over the hot ids `0..n`, then
/// 2. a scan of `scan_len` consecutive ids, starting at `n` and continuing where the
///    previous scan stopped, so a scanned id is never requested again.
///
/// The scanned share of requests is `scan_len / (gap + scan_len)`; a cache cannot hit
/// on a scan, so that share is also the gap between the best possible hit ratio and 1.
#[derive(Debug, Clone)]
pub struct ZipfScans {
    hot: Zipf,
    gap: u64,
    scan_len: u64,
    /// Position inside the current round: `< gap` is the Zipf part.
    pos: u64,
    next_scan_id: u64,
}

impl ZipfScans {
    /// Rounds of `gap` Zipf(`n`, `s`) requests followed by a `scan_len`-key scan.
    pub fn new(n: u64, s: f64, gap: u64, scan_len: u64, seed: u64) -> Result<Self, ZipfError> {
        Ok(ZipfScans {
            hot: Zipf::new(n, s, seed)?,
            gap,
            scan_len,
            pos: 0,
            next_scan_id: n,
        })
    }
}

impl Iterator for ZipfScans {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let id = if self.pos < self.gap {
            self.hot.next()?
        } else {
            self.next_scan_id += 1;
            self.next_scan_id - 1
        };
        self.pos += 1;
        if self.pos == self.gap + self.scan_len {
            self.pos = 0;
        }
        Some(id)
    }
}

/// Length of [`key_name`] for ids below 10^8.
pub const KEY_LEN: usize = 12;

/// The key for `id`: `key:` and eight zero-padded digits (longer past 10^8 ids).
pub fn key_name(id: u64) -> String {
    let mut key = String::with_capacity(KEY_LEN);
    write_key(&mut key, id);
    key
}

/// Replaces the contents of `buf` with [`key_name`] of `id`, reusing its allocation.
pub fn write_key(buf: &mut String, id: u64) {
    buf.clear();
    write!(buf, "key:{id:08}").expect("writing to a String cannot fail");
}

/// Checks of the traces. They are plain functions listed in [`CHECKS`](tests::CHECKS)
/// rather than `#[test]`s because this file is also compiled into `harness = false`
/// benches, which set `cfg(test)` but drop `#[test]` functions; the hit-ratio bench runs
/// the list when invoked by `cargo test`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every check, by name.
    pub(crate) const CHECKS: [(&str, fn()); 4] = [
        (
            "zipf_rank_frequencies_match_theory",
            zipf_rank_frequencies_match_theory,
        ),
        ("same_seed_same_trace", same_seed_same_trace),
        (
            "scans_are_sequential_fresh_and_periodic",
            scans_are_sequential_fresh_and_periodic,
        ),
        ("key_names_have_fixed_length", key_names_have_fixed_length),
    ];

    #[test]
    fn workload_checks() {
        for (_, check) in CHECKS {
            check();
        }
    }

    /// Generalized harmonic number H(n, s) = sum of 1/r^s for r in 1..=n.
    fn harmonic(n: u64, s: f64) -> f64 {
        (1..=n).map(|r| (r as f64).powf(-s)).sum()
    }

    fn zipf_rank_frequencies_match_theory() {
        let (n, s, draws) = (1_000u64, 0.99, 400_000usize);
        let mut counts = vec![0u64; n as usize];
        for id in Zipf::new(n, s, 7).expect("valid parameters").take(draws) {
            counts[id as usize] += 1;
        }
        let h = harmonic(n, s);
        for rank in [1u64, 2, 10, 100] {
            let expected = (rank as f64).powf(-s) / h;
            let seen = counts[rank as usize - 1] as f64 / draws as f64;
            // Five standard errors of a binomial proportion, plus a little slack.
            let tolerance = 5.0 * (expected * (1.0 - expected) / draws as f64).sqrt() + 1e-4;
            assert!(
                (seen - expected).abs() < tolerance,
                "rank {rank}: seen {seen:.5}, expected {expected:.5} ± {tolerance:.5}"
            );
        }
    }

    fn same_seed_same_trace() {
        let a: Vec<u64> = Zipf::new(10_000, 0.99, 42)
            .expect("valid")
            .take(1000)
            .collect();
        let b: Vec<u64> = Zipf::new(10_000, 0.99, 42)
            .expect("valid")
            .take(1000)
            .collect();
        let c: Vec<u64> = Zipf::new(10_000, 0.99, 43)
            .expect("valid")
            .take(1000)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let scans = || ZipfScans::new(10_000, 0.99, 50, 20, 42).expect("valid");
        assert!(scans().take(1000).eq(scans().take(1000)));
    }

    fn scans_are_sequential_fresh_and_periodic() {
        let (n, gap, scan_len) = (100u64, 30u64, 20u64);
        let trace: Vec<u64> = ZipfScans::new(n, 0.99, gap, scan_len, 1)
            .expect("valid")
            .take(3 * (gap + scan_len) as usize)
            .collect();
        let mut next_scan = n;
        for round in trace.chunks((gap + scan_len) as usize) {
            let (hot, scan) = round.split_at(gap as usize);
            assert!(hot.iter().all(|&id| id < n));
            for &id in scan {
                assert_eq!(id, next_scan);
                next_scan += 1;
            }
        }
    }

    fn key_names_have_fixed_length() {
        assert_eq!(key_name(1234), "key:00001234");
        assert_eq!(key_name(0).len(), KEY_LEN);
        assert_eq!(key_name(99_999_999).len(), KEY_LEN);
        let mut buf = key_name(5);
        write_key(&mut buf, 6);
        assert_eq!(buf, "key:00000006");
    }
}
