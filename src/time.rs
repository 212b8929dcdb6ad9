//! Time: the one door through which library code reads and waits on time.
//!
//! The rule, as in quinn-proto: synchronous code (stores, TTLs, the ring, the registry's
//! lease table, backoff) never reads a clock; it takes `now` as an argument. Async code
//! reads and waits through this module, which is `tokio::time`: real time in
//! production, paused and driven by turmoil in the simulator, and paused and advanced
//! by `tokio::time::pause`/`advance` in tests. No other file in `src/` names
//! `tokio::time`, `std::time::Instant` or `SystemTime`; the wall clock is read once, by
//! the binary, for [`incarnation`], and never for timing.
//!
//! Stores compare instants as [`Duration`]s since an [`Epoch`], so they need no
//! `Instant` of their own.

use std::future::Future;
use std::time::Duration;

pub use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::error::{Error, Result};

/// The current instant.
pub fn now() -> Instant {
    Instant::now()
}

/// Runs `work` until `deadline`, failing with [`Error::Timeout`] if it is not done by
/// then; `None` waits as long as `work` takes. The one timeout of the crate: every
/// other call that can be given up goes through it (or [`within`]).
pub async fn until<T>(deadline: Option<Instant>, work: impl Future<Output = T>) -> Result<T> {
    match deadline {
        None => Ok(work.await),
        Some(at) => tokio::time::timeout_at(at, work)
            .await
            .map_err(|_| Error::Timeout),
    }
}

/// Runs `work` for at most `limit`, failing with [`Error::Timeout`] after that.
pub async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> Result<T> {
    until(Some(now() + limit), work).await
}

/// A number distinct for each start of a process (wall-clock nanoseconds mixed with the
/// process id), which tells a restarted node's membership record from its
/// predecessor's. The one read of the wall clock.
pub fn incarnation() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    wall ^ u64::from(std::process::id())
}

/// Whole milliseconds of `d`, rounded up so a short positive duration never becomes 0
/// (which the protocols read as "none").
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// A fixed origin: instants as the `Duration`s that stores and TTLs compare.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    origin: Instant,
}

impl Epoch {
    /// An epoch starting now.
    pub fn new() -> Self {
        Epoch { origin: now() }
    }

    /// Time since the epoch began.
    pub fn now(&self) -> Duration {
        now().saturating_duration_since(self.origin)
    }
}

impl Default for Epoch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn epochs_follow_paused_time() {
        let epoch = Epoch::new();
        assert_eq!(epoch.now(), Duration::ZERO);
        sleep(Duration::from_secs(300)).await;
        assert_eq!(epoch.now(), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn until_gives_up_at_the_deadline_and_none_waits() {
        let at = now() + Duration::from_millis(50);
        let slow = sleep(Duration::from_secs(1));
        assert_eq!(until(Some(at), slow).await, Err(Error::Timeout));
        assert_eq!(now(), at);
        assert_eq!(until(None, async { 7 }).await, Ok(7));
        assert_eq!(within(Duration::from_secs(1), async { 8 }).await, Ok(8));
    }
}
