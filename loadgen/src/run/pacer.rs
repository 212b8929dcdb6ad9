//! The send times of an open loop, and the task that releases each on time.
//!
//! tokio's timer ticks in whole milliseconds: workers sleeping on it for their own send
//! times all woke together at the next tick, so an open loop at 14,000 requests/s sent
//! bursts of 14 at once, a thousand times a second, not one every 71 µs. The pacer
//! waits on a timerfd instead (the kernel's high-resolution timer, through the
//! runtime's epoll like a socket, so no thread of its own to wake) and hands each send
//! time to whichever worker is free. It runs on the real clock, also under tokio's
//! paused time.
//!
//! Requests count from their send times. The timer's own lateness (the kernel waking
//! the runtime, the runtime busy when it fires: tens of µs here) is the load
//! generator's, not the server's: a request whose time came while the pacer overslept
//! counts from its wake-up, and runs report that lateness apart. A request whose time
//! came while every worker was busy counts from its time.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create, timerfd_settime,
};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::stats::Recorder;

/// How an open loop spaces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly: one every `1 / rate` seconds.
    Uniform,
    /// A Poisson process: independent, exponentially distributed gaps of mean
    /// `1 / rate` (how independent clients arrive; burstier than uniform).
    Poisson,
}

impl std::fmt::Display for Arrivals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arrivals::Uniform => "uniform",
            Arrivals::Poisson => "poisson",
        })
    }
}

/// Intended send times from `start`, `rate` per second, before `end`.
pub struct Times {
    start: Instant,
    end: Instant,
    gap: Gap,
}

enum Gap {
    /// The `n`th time is `n / rate` seconds in (not a running sum: no drift).
    Fixed { rate: f64, n: u64 },
    /// A running sum of exponential gaps, seconds.
    Exp {
        at: f64,
        exp: Exp<f64>,
        rng: SmallRng,
    },
}

impl Times {
    /// The times of an open loop; `seed` draws Poisson gaps (the same seed, the same times).
    pub fn new(start: Instant, end: Instant, rate: f64, arrivals: Arrivals, seed: u64) -> Self {
        let gap = match arrivals {
            Arrivals::Uniform => Gap::Fixed { rate, n: 0 },
            Arrivals::Poisson => Gap::Exp {
                at: 0.0,
                exp: Exp::new(rate).expect("a positive rate"),
                rng: SmallRng::seed_from_u64(seed),
            },
        };
        Times { start, end, gap }
    }
}

impl Iterator for Times {
    type Item = Instant;

    fn next(&mut self) -> Option<Instant> {
        let secs = match &mut self.gap {
            Gap::Fixed { rate, n } => {
                *n += 1;
                (*n - 1) as f64 / *rate
            }
            Gap::Exp { at, exp, rng } => {
                let this = *at;
                *at += exp.sample(rng);
                this
            }
        };
        let at = self.start + Duration::from_secs_f64(secs);
        (at < self.end).then_some(at)
    }
}

/// Send times released on time, for the workers to take.
pub struct Pacer {
    due: Mutex<mpsc::Receiver<Instant>>,
    /// How late the pacer's timer woke for each send time of the measured part.
    late: Arc<parking_lot::Mutex<Recorder>>,
}

impl Pacer {
    /// Starts a task releasing `times` on the current runtime for `workers` workers; it
    /// ends with them, or when the pacer is dropped. Lateness is recorded from
    /// `measure` on.
    pub fn start(times: Times, workers: usize, measure: Instant) -> Arc<Pacer> {
        // Room for one time per worker: with every worker busy the pacer waits, and
        // the times it then releases are already due (and count from when they were).
        let (tx, rx) = mpsc::channel(workers.max(1));
        let late = Arc::new(parking_lot::Mutex::new(Recorder::default()));
        let record = late.clone();
        tokio::spawn(async move {
            let mut timer = match Timer::new() {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!(
                        "loadgen: no timerfd ({e}); the open loop sends on tokio's millisecond timer"
                    );
                    None
                }
            };
            // When the pacer last woke from its timer.
            let mut woke = None;
            for at in times {
                if at > Instant::now() {
                    let precise = match timer.as_mut() {
                        Some(t) => t.sleep_until(at).await.is_ok(),
                        None => false,
                    };
                    if !precise {
                        tokio::time::sleep_until(at).await;
                    }
                    woke = Some(Instant::now());
                    if at >= measure {
                        record
                            .lock()
                            .ok(Instant::now().saturating_duration_since(at));
                    }
                }
                // A time that came while the pacer overslept counts from its wake-up:
                // the timer's lateness is the load generator's own. One that came while
                // every worker was busy (the pacer waiting for room) counts from itself.
                let from = woke.map_or(at, |woke| at.max(woke));
                if tx.send(from).await.is_err() {
                    return;
                }
            }
        });
        Arc::new(Pacer {
            due: Mutex::new(rx),
            late,
        })
    }

    /// How late the pacer's timer woke for the measured part's send times (all of them
    /// once the run is over).
    pub fn lateness(&self) -> Recorder {
        self.late.lock().clone()
    }

    /// The next send time once it has come (possibly long ago, when every worker was
    /// busy); `None` when the schedule is over.
    pub async fn next(&self) -> Option<Instant> {
        self.due.lock().await.recv().await
    }
}

/// A one-shot timerfd on the runtime's epoll.
struct Timer(AsyncFd<OwnedFd>);

impl Timer {
    // An exception to the workspace's `unsafe_code = "deny"`: tokio's only
    // registration of a file descriptor is `unsafe`.
    #[allow(unsafe_code)]
    fn new() -> io::Result<Timer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: an `OwnedFd` is an open descriptor that stays open, and the same one,
        // until it is dropped with the `AsyncFd` that owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        Ok(Timer(fd.map_err(io::Error::from)?))
    }

    /// Returns at `at`, give or take the kernel's wake-up time.
    async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let zero = Duration::ZERO.try_into().expect("zero is a timespec");
        let spec = Itimerspec {
            it_interval: zero,
            it_value: left.try_into().map_err(|_| io::ErrorKind::InvalidInput)?,
        };
        timerfd_settime(self.0.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        loop {
            let mut ready = self.0.readable().await?;
            // Reading the expiry count re-arms readiness; WouldBlock means not yet.
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut [0u8; 8])?)) {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(arrivals: Arrivals, seed: u64) -> Vec<f64> {
        let start = Instant::now();
        let times: Vec<_> = Times::new(
            start,
            start + Duration::from_secs(10),
            1000.0,
            arrivals,
            seed,
        )
        .collect();
        times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect()
    }

    #[test]
    fn uniform_times_are_evenly_spaced_and_end_before_the_end() {
        let g = gaps(Arrivals::Uniform, 1);
        assert_eq!(g.len() + 1, 10_000, "a thousand a second for 10 s");
        assert!(g.iter().all(|g| (g - 0.001).abs() < 1e-6), "{:?}", &g[..5]);
    }

    #[test]
    fn poisson_gaps_have_the_rate_as_mean_and_vary_as_exponential_ones_do() {
        let g = gaps(Arrivals::Poisson, 7);
        let n = g.len() as f64;
        assert!((n - 10_000.0).abs() < 400.0, "{n} times in 10 s at 1,000/s");
        let mean = g.iter().sum::<f64>() / n;
        let sd = (g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 0.001).abs() < 0.00005, "mean gap {mean}");
        // An exponential distribution's standard deviation equals its mean.
        assert!((sd / mean - 1.0).abs() < 0.05, "sd {sd}, mean {mean}");
        assert_eq!(
            g,
            gaps(Arrivals::Poisson, 7),
            "the same seed, the same times"
        );
        assert_ne!(g, gaps(Arrivals::Poisson, 8));
    }
}
