//! What loadgen's own clients (RESP in resp.rs, HTTP/1.1 in http1.rs) share: the idle
//! connections of one target, and a request's time limit. Each request in flight holds
//! one connection, so a closed loop of N workers settles on N connections per target.

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;

use crate::client::Failure;

/// The idle connections to one target; a request takes the last one put back.
pub struct Idle<C>(Mutex<Vec<C>>);

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle(Mutex::new(Vec::new()))
    }
}

impl<C> Idle<C> {
    /// The last connection put back that is still `usable`; the unusable ones met on
    /// the way are dropped.
    pub fn take(&self, usable: impl Fn(&C) -> bool) -> Option<C> {
        let mut idle = self.0.lock();
        while let Some(conn) = idle.pop() {
            if usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Puts `conn` back for the next request.
    pub fn put(&self, conn: C) {
        self.0.lock().push(conn);
    }
}

/// `work`'s result, or the failure `timeout` once `limit` has passed.
pub async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_usable_connection_put_back_is_taken_and_unusable_ones_are_dropped() {
        let idle = Idle::default();
        for conn in [1, 2, 3, 4] {
            idle.put(conn);
        }
        assert_eq!(idle.take(|c| *c != 4), Some(3));
        assert_eq!(idle.take(|c| *c == 1), Some(1), "2 was dropped on the way");
        assert_eq!(idle.take(|_| true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_its_limit_is_a_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(())
        };
        assert_eq!(
            within(Duration::from_secs(1), slow).await,
            Err("timeout".into())
        );
        assert_eq!(within(Duration::from_secs(1), async { Ok(7) }).await, Ok(7));
    }
}
