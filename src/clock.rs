//! The time seam: everything in the core reads time through [`Clock`].
//!
//! Time is a [`Duration`] since the clock's own origin, so stores and TTL logic need no
//! `Instant` and never touch the wall clock. [`TokioClock`] follows `tokio::time`, which is
//! paused and driven by the simulator under turmoil; [`ManualClock`] only moves when a test
//! calls [`ManualClock::advance`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// A boxed sleep future, so `Clock` stays object safe.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A monotonic source of time.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;
    /// Completes once `now()` has advanced by at least `duration`.
    fn sleep(&self, duration: Duration) -> Sleep<'_>;
}

/// Time from `tokio::time`: real in production, simulated under turmoil or `time::pause`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is the current tokio instant.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to; sleepers wake when it passes their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    nanos: AtomicU64,
    tick: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                nanos: AtomicU64::new(0),
                tick: watch::Sender::new(0),
            }),
        }
    }

    /// Moves the clock forward by `by` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let now = self
            .inner
            .nanos
            .fetch_add(by, Ordering::SeqCst)
            .saturating_add(by);
        self.inner.tick.send_replace(now);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::SeqCst))
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let deadline = self.now().saturating_add(duration);
        let deadline = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        let mut ticks = self.inner.tick.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which this future borrows.
            let _ = ticks.wait_for(|&now| now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_only_after_advance() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep(Duration::from_secs(5));
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(4));
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(futures::poll!(&mut sleep).is_ready());
        assert_eq!(clock.now(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        assert_eq!(clock.now(), Duration::ZERO);
        clock.sleep(Duration::from_secs(300)).await;
        assert_eq!(clock.now(), Duration::from_secs(300));
    }
}
