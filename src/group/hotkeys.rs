//! Owner-side hot-key detection. The owner counts the gets its peers send it for each
//! key in a HeavyKeeper top-k sketch (the `heavykeeper` crate: bounded memory whatever
//! the number of keys), one sketch per window of [`HotKeyConfig::window`]. When a
//! window ends, the keys whose gets in it reach both [`HotKeyConfig::min_rate`] (per
//! second) and [`HotKeyConfig::min_share`] of the window's gets are hot, and stay hot
//! for [`HotKeyConfig::hold`] after the last window that found them so (their askers
//! keep copies, so the owner no longer sees most of their gets). The owner says so in
//! its answers (`GetResponse.hot`), and an asker keeps a hot-flagged value as a hot
//! copy at once, so a hot key's gets stop reaching its owner within about one window of
//! the key becoming hot.
//!
//! Time comes from the group's epoch and the sketch is seeded from the group's seed, so
//! detection replays in the simulator.

use std::collections::BTreeMap;
use std::time::Duration;

use heavykeeper::TopK;
use parking_lot::Mutex;

/// When a key counts as hot at its owner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotKeyConfig {
    /// Gets are counted per window of this length; detection follows a window's end.
    /// Zero turns detection off.
    pub window: Duration,
    /// Least gets per second from peers for a key to be hot.
    pub min_rate: f64,
    /// Least share of the window's gets from peers (0..=1) for a key to be hot.
    pub min_share: f64,
    /// Most keys tracked (and hot) at once.
    pub top: usize,
    /// How long a key stays hot after the last window that found it so: about the hot
    /// TTL, so askers' copies are renewed as hot when they expire.
    pub hold: Duration,
}

impl Default for HotKeyConfig {
    fn default() -> Self {
        HotKeyConfig {
            window: Duration::from_millis(500),
            min_rate: 500.0,
            min_share: 0.01,
            top: 16,
            hold: Duration::from_secs(10),
        }
    }
}

/// A key found hot in the last window.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HotKey {
    /// The key.
    pub key: String,
    /// Its gets per second from peers in the last window that found it hot
    /// (estimated).
    pub rate: f64,
    /// When it became hot, in seconds since the group started.
    pub since_s: f64,
    /// Hot until then (group time) unless a window finds it hot again.
    #[serde(skip)]
    until: Duration,
}

struct Window {
    /// When the current window began (group epoch time).
    began: Duration,
    sketch: TopK<String>,
    /// Gets counted in the current window.
    gets: u64,
    /// The keys found hot when the last window ended, by key.
    hot: BTreeMap<String, HotKey>,
}

/// A group's hot-key detector.
pub(super) struct Detector {
    cfg: HotKeyConfig,
    seed: u64,
    window: Mutex<Window>,
}

/// The sketch's shape: rows × buckets, and how fast colliding counts decay.
const DEPTH: usize = 4;
const WIDTH_PER_KEY: usize = 64;
const DECAY: f64 = 0.9;

impl Detector {
    pub(super) fn new(cfg: HotKeyConfig, seed: u64) -> Self {
        let window = Window {
            began: Duration::ZERO,
            sketch: sketch(&cfg, seed),
            gets: 0,
            hot: BTreeMap::new(),
        };
        Detector {
            cfg,
            seed,
            window: Mutex::new(window),
        }
    }

    /// Counts a peer's get of `key` at `now`; whether the key is hot.
    pub(super) fn record(&self, key: &str, now: Duration) -> bool {
        if self.cfg.window.is_zero() {
            return false;
        }
        let mut w = self.window.lock();
        self.roll(&mut w, now);
        w.sketch.add(key, 1);
        w.gets += 1;
        w.hot.contains_key(key)
    }

    /// The keys hot now, hottest first.
    pub(super) fn hot(&self, now: Duration) -> Vec<HotKey> {
        if self.cfg.window.is_zero() {
            return Vec::new();
        }
        let mut w = self.window.lock();
        self.roll(&mut w, now);
        let mut hot: Vec<HotKey> = w.hot.values().cloned().collect();
        hot.sort_by(|a, b| b.rate.total_cmp(&a.rate).then_with(|| a.key.cmp(&b.key)));
        hot
    }

    /// Ends the current window if `now` is past it: the keys it found hot are hot for
    /// another hold (keeping when each became hot), the others while their hold lasts.
    /// A window followed by a whole window without gets counts as idle: it finds none.
    fn roll(&self, w: &mut Window, now: Duration) {
        let length = self.cfg.window;
        if now < w.began + length {
            return;
        }
        let secs = length.as_secs_f64();
        let idle = now >= w.began + 2 * length;
        // Keys still within their hold stay hot, whatever this window saw.
        let mut hot: BTreeMap<String, HotKey> = std::mem::take(&mut w.hot)
            .into_iter()
            .filter(|(_, k)| k.until > now)
            .collect();
        if !idle {
            let least = (self.cfg.min_rate * secs).max(self.cfg.min_share * w.gets as f64);
            for node in w.sketch.list() {
                if node.count as f64 >= least.max(1.0) {
                    let rate = node.count as f64 / secs;
                    let until = now + self.cfg.hold;
                    let key = node.item;
                    let since_s = hot.get(&key).map_or(now.as_secs_f64(), |k| k.since_s);
                    let found = HotKey {
                        key: key.clone(),
                        rate,
                        since_s,
                        until,
                    };
                    hot.insert(key, found);
                }
            }
        }
        w.hot = hot;
        w.sketch = sketch(&self.cfg, self.seed ^ now.as_nanos() as u64);
        w.gets = 0;
        // Windows stay aligned to the first one, so their ends are predictable.
        let behind = (now - w.began).as_nanos() / length.as_nanos();
        w.began += length * u32::try_from(behind).unwrap_or(u32::MAX);
    }
}

fn sketch(cfg: &HotKeyConfig, seed: u64) -> TopK<String> {
    let top = cfg.top.max(1);
    TopK::with_seed(top, top * WIDTH_PER_KEY, DEPTH, DECAY, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn detector() -> Detector {
        Detector::new(
            HotKeyConfig {
                window: 100 * MS,
                min_rate: 100.0,
                min_share: 0.05,
                top: 4,
                hold: 150 * MS,
            },
            7,
        )
    }

    /// Gets of `hot` (every other get) and of many cold keys, one per `step`, from
    /// `from` until `to`; what `record` said of the hot key last.
    fn load(d: &Detector, hot: &str, from: Duration, to: Duration, step: Duration) -> bool {
        let (mut now, mut said, mut n) = (from, false, 0u64);
        while now < to {
            said = d.record(hot, now);
            d.record(&format!("cold{n}"), now);
            n += 1;
            now += step;
        }
        said
    }

    #[test]
    fn a_key_with_most_gets_is_hot_after_one_window_and_cools_when_they_stop() {
        let d = detector();
        // 1,000 gets/s of `h` (and of cold keys each read once): hot from the second
        // window on, not in the first.
        assert!(!load(&d, "h", Duration::ZERO, 99 * MS, MS));
        assert!(load(&d, "h", 100 * MS, 150 * MS, MS));
        let hot = d.hot(150 * MS);
        assert_eq!(hot.len(), 1, "{hot:?}");
        assert_eq!(hot[0].key, "h");
        assert!(hot[0].rate >= 900.0 && hot[0].rate <= 1000.0, "{hot:?}");
        assert_eq!(hot[0].since_s, 0.1);
        // Still hot in the next window: `since` stays.
        assert!(load(&d, "h", 200 * MS, 250 * MS, MS));
        assert_eq!(d.hot(250 * MS)[0].since_s, 0.1);
        // A window without its gets (its askers keep copies): still hot for the hold.
        load(&d, "other", 300 * MS, 400 * MS, 10 * MS);
        assert!(d.hot(400 * MS).iter().any(|k| k.key == "h"));
        // Past the hold, with only idle windows since: nothing is hot.
        assert!(d.hot(700 * MS).is_empty(), "{:?}", d.hot(700 * MS));
    }

    #[test]
    fn below_the_rate_or_the_share_nothing_is_hot() {
        let d = detector();
        // 50 gets/s of `h`: under 100/s.
        load(&d, "h", Duration::ZERO, 100 * MS, 20 * MS);
        assert!(d.hot(100 * MS).is_empty());
        // A key at 1,000/s among 100 others each as busy: under 5 % of the gets.
        let d = detector();
        let mut now = Duration::ZERO;
        while now < 100 * MS {
            for k in 0..100 {
                d.record(&format!("k{k}"), now);
            }
            now += MS;
        }
        assert!(d.hot(100 * MS).is_empty(), "{:?}", d.hot(100 * MS));
    }

    #[test]
    fn a_zero_window_turns_detection_off() {
        let d = Detector::new(
            HotKeyConfig {
                window: Duration::ZERO,
                ..HotKeyConfig::default()
            },
            1,
        );
        for i in 0..10_000 {
            assert!(!d.record("h", i * MS));
        }
        assert!(d.hot(Duration::from_secs(20)).is_empty());
    }
}
