//! What each request asks for: which key (`--workload`) and which operation (`--mix`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

/// A key distribution over ids `0..n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// Every id equally likely.
    Uniform,
    /// Zipf with this exponent: id `r - 1` has probability proportional to `1 / r^s`.
    Zipf(f64),
    /// YCSB's hotspot: the first `fraction` of the ids gets `prob` of the requests,
    /// uniformly; the rest share the remainder uniformly.
    Hotspot {
        /// Share of the key space that is hot, in (0, 1).
        fraction: f64,
        /// Share of requests that go to the hot keys, in [0, 1].
        prob: f64,
    },
    /// Ids in order, shared by all workers (each id asked once until the space wraps).
    Scan,
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = s.split_once(':').unwrap_or((s, ""));
        let number = |text: &str, what: &str| -> Result<f64, String> {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{what} {text:?} in workload {s:?} is not a number"))
        };
        match (name, arg) {
            ("uniform", "") => Ok(Workload::Uniform),
            ("scan", "") => Ok(Workload::Scan),
            ("zipf", "") => Ok(Workload::Zipf(0.99)),
            ("zipf", exp) => {
                let exp = number(exp, "exponent")?;
                if exp <= 0.0 {
                    return Err(format!("zipf exponent must be above 0, got {exp}"));
                }
                Ok(Workload::Zipf(exp))
            }
            ("hotspot", args) => {
                let (f, p) = args.split_once(',').ok_or_else(|| {
                    format!("hotspot needs FRACTION,PROB (e.g. hotspot:0.2,0.8), got {s:?}")
                })?;
                let (fraction, prob) = (number(f, "fraction")?, number(p, "probability")?);
                if !(fraction > 0.0 && fraction < 1.0 && (0.0..=1.0).contains(&prob)) {
                    return Err(format!(
                        "hotspot needs 0 < FRACTION < 1 and 0 <= PROB <= 1, got {fraction},{prob}"
                    ));
                }
                Ok(Workload::Hotspot { fraction, prob })
            }
            _ => Err(format!(
                "unknown workload {s:?}: use uniform, zipf:EXP, hotspot:FRACTION,PROB or scan"
            )),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Uniform => write!(f, "uniform"),
            Workload::Zipf(s) => write!(f, "zipf:{s}"),
            Workload::Hotspot { fraction, prob } => write!(f, "hotspot:{fraction},{prob}"),
            Workload::Scan => write!(f, "scan"),
        }
    }
}

/// Draws key ids for one worker.
pub struct KeyGen {
    kind: Kind,
    n: u64,
    rng: SmallRng,
}

enum Kind {
    Uniform,
    Zipf(rand_distr::Zipf<f64>),
    Hotspot { hot: u64, prob: f64 },
    Scan(Arc<AtomicU64>),
}

impl KeyGen {
    /// A generator over `0..n` seeded with `seed`. Generators made for one run share
    /// `scan`, the position of a scan workload.
    pub fn new(workload: Workload, n: u64, seed: u64, scan: Arc<AtomicU64>) -> Self {
        assert!(n > 0, "the key space is empty");
        let kind = match workload {
            Workload::Uniform => Kind::Uniform,
            Workload::Zipf(s) => {
                Kind::Zipf(rand_distr::Zipf::new(n as f64, s).expect("n >= 1 and s > 0"))
            }
            Workload::Hotspot { fraction, prob } => Kind::Hotspot {
                hot: ((n as f64 * fraction).round() as u64).clamp(1, n),
                prob,
            },
            Workload::Scan => Kind::Scan(scan),
        };
        KeyGen {
            kind,
            n,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The next id, in `0..n`.
    pub fn next_id(&mut self) -> u64 {
        match &self.kind {
            Kind::Uniform => self.rng.random_range(0..self.n),
            // Samples are whole numbers in 1..=n.
            Kind::Zipf(z) => z.sample(&mut self.rng) as u64 - 1,
            Kind::Hotspot { hot, prob } => {
                if *hot == self.n || self.rng.random_bool(*prob) {
                    self.rng.random_range(0..*hot)
                } else {
                    self.rng.random_range(*hot..self.n)
                }
            }
            Kind::Scan(pos) => pos.fetch_add(1, Ordering::Relaxed) % self.n,
        }
    }

    /// The worker's generator, for the other random choices it makes.
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }
}

/// An operation on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Read.
    Get,
    /// Write a value of `--value-size` bytes.
    Set,
    /// Delete.
    Remove,
}

/// The share of each operation, as integer weights (`get=95,set=5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    get: u32,
    set: u32,
    remove: u32,
}

impl Mix {
    /// Only gets.
    pub const GETS: Mix = Mix {
        get: 1,
        set: 0,
        remove: 0,
    };

    /// Picks an operation with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl Rng) -> Op {
        let roll = rng.random_range(0..self.get + self.set + self.remove);
        if roll < self.get {
            Op::Get
        } else if roll < self.get + self.set {
            Op::Set
        } else {
            Op::Remove
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Mix {
            get: 0,
            set: 0,
            remove: 0,
        };
        for part in s.split(',') {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("mix part {part:?} is not NAME=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| {
                    format!("weight {weight:?} of {name} is not a whole number up to 10^6")
                })?;
            let slot = match name.trim() {
                "get" => &mut mix.get,
                "set" => &mut mix.set,
                "remove" => &mut mix.remove,
                other => return Err(format!("unknown operation {other:?}: use get, set, remove")),
            };
            *slot = weight;
        }
        if mix.get + mix.set + mix.remove == 0 {
            return Err(format!("mix {s:?} has no operation with a weight above 0"));
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "get={},set={},remove={}",
            self.get, self.set, self.remove
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(workload: Workload, n: u64, draws: usize) -> Vec<u64> {
        let mut keys = KeyGen::new(workload, n, 7, Arc::default());
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[keys.next_id() as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipf_frequencies_match_theory() {
        let (n, s, draws) = (1000u64, 0.99, 400_000);
        let counts = counts(Workload::Zipf(s), n, draws);
        let norm: f64 = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).sum();
        for rank in [1u64, 2, 3, 10, 100] {
            let expected = draws as f64 / (rank as f64).powf(s) / norm;
            let seen = counts[rank as usize - 1] as f64;
            // Within 5 standard deviations of a binomial count, and 6 % relative.
            let sd = (expected * (1.0 - expected / draws as f64)).sqrt();
            assert!(
                (seen - expected).abs() < (5.0 * sd).max(0.06 * expected),
                "rank {rank}: {seen} draws, theory {expected:.0}"
            );
        }
        // The top 10 % of ranks get the share theory gives them.
        let top: u64 = counts[..100].iter().sum();
        let theory: f64 = (1..=100).map(|r| 1.0 / (r as f64).powf(s)).sum::<f64>() / norm;
        let share = top as f64 / draws as f64;
        assert!(
            (share - theory).abs() < 0.01,
            "top-100 share {share}, theory {theory}"
        );
    }

    #[test]
    fn uniform_covers_the_space_evenly() {
        let counts = counts(Workload::Uniform, 100, 200_000);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // 2,000 expected per id, sd ~44: 10 sd either side.
        assert!(*min > 1550 && *max < 2450, "min {min}, max {max}");
    }

    #[test]
    fn hotspot_sends_its_probability_to_its_fraction() {
        let w: Workload = "hotspot:0.2,0.8".parse().unwrap();
        let counts = counts(w, 1000, 200_000);
        let hot: u64 = counts[..200].iter().sum();
        let share = hot as f64 / 200_000.0;
        assert!((share - 0.8).abs() < 0.01, "hot share {share}");
        assert!(
            counts[200..].iter().all(|c| *c > 0),
            "every cold id is drawn"
        );
    }

    #[test]
    fn scan_is_shared_by_workers_and_never_repeats_before_wrapping() {
        let pos = Arc::new(AtomicU64::new(0));
        let mut a = KeyGen::new(Workload::Scan, 10, 1, pos.clone());
        let mut b = KeyGen::new(Workload::Scan, 10, 2, pos);
        let ids: Vec<u64> = (0..6).flat_map(|_| [a.next_id(), b.next_id()]).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    }

    #[test]
    fn same_seed_same_keys() {
        let draw = |seed| {
            let mut k = KeyGen::new(Workload::Zipf(0.99), 1000, seed, Arc::default());
            (0..100).map(|_| k.next_id()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn mix_picks_in_proportion() {
        let mix: Mix = "get=90,set=5,remove=5".parse().unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut n = [0u32; 3];
        for _ in 0..100_000 {
            n[mix.pick(&mut rng) as usize] += 1;
        }
        assert!((89_000..91_000).contains(&n[0]), "{n:?}");
        assert!(
            (4_500..5_500).contains(&n[1]) && (4_500..5_500).contains(&n[2]),
            "{n:?}"
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for bad in [
            "zipf:0",
            "zipf:x",
            "hotspot:1.5,0.5",
            "hotspot:0.2",
            "pareto",
        ] {
            let err = bad.parse::<Workload>().unwrap_err();
            assert!(
                err.contains(bad.split(':').next().unwrap()) || err.contains("hotspot"),
                "{bad}: {err}"
            );
        }
        for bad in ["get=0", "get", "get=1,put=2", "get=-1"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad} accepted");
        }
        assert_eq!("zipf:0.99".parse::<Workload>(), Ok(Workload::Zipf(0.99)));
    }
}
