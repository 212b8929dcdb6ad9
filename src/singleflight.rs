//! Duplicate call suppression: concurrent calls for one key share one execution.
//!
//! The first caller of a key leads and runs its work; callers arriving while it runs
//! follow and receive a clone of the leader's result. If the leader is cancelled or its
//! work panics, its flight is withdrawn and the followers start over, so one of them
//! takes the lead: nobody waits on a flight that will never finish.
//!
//! [`SingleFlight::run_detached`] runs the work as a task of its own instead: a leader
//! that gives up leaves it running for the followers, as a load started by an impatient
//! caller should finish for the patient ones.

use std::future::Future;
use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::watch;

/// Whether a call ran the work itself or shared another call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This call ran the work.
    Leader,
    /// This call received the result of a concurrent leader.
    Follower,
}

/// A set of in-flight calls keyed by string. Lookups only; never iterated.
pub struct SingleFlight<T> {
    calls: Arc<Calls<T>>,
}

type Calls<T> = Mutex<HashMap<Box<str>, watch::Receiver<Option<T>>>>;

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            calls: Arc::default(),
        }
    }
}

/// Withdraws the leader's flight when the leader (or the task it detached) finishes, is
/// cancelled, or panics.
struct Lead<T> {
    calls: Arc<Calls<T>>,
    key: Box<str>,
    tx: watch::Sender<Option<T>>,
}

impl<T> Lead<T> {
    fn new(calls: &Arc<Calls<T>>, key: &str, tx: watch::Sender<Option<T>>) -> Self {
        Lead {
            calls: Arc::clone(calls),
            key: key.into(),
            tx,
        }
    }
}

impl<T> Drop for Lead<T> {
    fn drop(&mut self) {
        withdraw(&self.calls, &self.key, &self.tx);
    }
}

/// Removes `key`'s flight if it is still `tx`'s (a write may have detached it, and a
/// new flight taken its place). Dropping `tx` after this wakes the followers of an
/// unfinished flight: they retry.
fn withdraw<T>(calls: &Calls<T>, key: &str, tx: &watch::Sender<Option<T>>) {
    let mut calls = calls.lock();
    if calls
        .get(key)
        .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
    {
        calls.remove(key);
    }
}

impl<T: Clone + Send + Sync> SingleFlight<T> {
    /// An empty set of flights.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` for `key` unless a call for `key` is already in flight, in which case
    /// waits for that call's result instead.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> (T, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            match self.join(key) {
                Ok(rx) => {
                    if let Some(v) = outcome(rx).await {
                        return (v, Role::Follower);
                    }
                }
                Err(tx) => {
                    let lead = Lead::new(&self.calls, key, tx);
                    let v = work().await;
                    lead.tx.send_replace(Some(v.clone()));
                    return (v, Role::Leader);
                }
            }
        }
    }

    /// Like [`run`](Self::run), but the leader spawns `work` as a task of its own (on
    /// the current tokio runtime; outside one, it runs `work` itself, as `run` does):
    /// if the leader is cancelled the work goes on, and the callers waiting for it, or
    /// arriving while it runs, receive its result. Work that panics withdraws the
    /// flight, and its callers start over (so `work` may be called again).
    pub async fn run_detached<F, Fut>(&self, key: &str, mut work: F) -> (T, Role)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: 'static,
    {
        loop {
            let (rx, role) = match self.join(key) {
                Ok(rx) => (rx, Role::Follower),
                Err(tx) => {
                    let rx = tx.subscribe();
                    let lead = Lead::new(&self.calls, key, tx);
                    let fut = work();
                    let task = async move {
                        let v = fut.await;
                        lead.tx.send_replace(Some(v));
                    };
                    // Outside a tokio runtime (another executor) the leader runs it.
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => drop(runtime.spawn(task)),
                        Err(_) => task.await,
                    }
                    (rx, Role::Leader)
                }
            };
            if let Some(v) = outcome(rx).await {
                return (v, role);
            }
        }
    }

    /// Joins `key`'s flight (`Ok`), or starts one and leads it (`Err`).
    fn join(&self, key: &str) -> Result<watch::Receiver<Option<T>>, watch::Sender<Option<T>>> {
        let mut calls = self.calls.lock();
        match calls.get(key) {
            Some(rx) => Ok(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                calls.insert(key.into(), rx);
                Err(tx)
            }
        }
    }

    /// Detaches the call in flight for `key`, if any: callers arriving from now on start
    /// a new call instead of joining it. Callers already waiting still get its result.
    /// A write uses this so that no read issued after it can receive a value loaded
    /// before it.
    pub fn forget(&self, key: &str) {
        self.calls.lock().remove(key);
    }

    /// Number of keys in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.lock().len()
    }
}

/// The result of the flight `rx` watches; `None` if its leader went away without one.
async fn outcome<T: Clone>(mut rx: watch::Receiver<Option<T>>) -> Option<T> {
    let v = rx.wait_for(Option::is_some).await.ok()?;
    v.clone()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn thousand_concurrent_callers_share_one_run() {
        let flight = Arc::new(SingleFlight::<u64>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let joined = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (flight, runs, joined, gate) =
                    (flight.clone(), runs.clone(), joined.clone(), gate.clone());
                tokio::spawn(async move {
                    // On this single-threaded runtime a task runs until it parks inside
                    // `run`, so counting here means it has joined the flight.
                    joined.fetch_add(1, Ordering::SeqCst);
                    flight
                        .run("k", || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            gate.notified().await;
                            42
                        })
                        .await
                })
            })
            .collect();
        while joined.load(Ordering::SeqCst) < 1000 {
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        let mut leaders = 0;
        for t in tasks {
            let (v, role) = t.await.unwrap();
            assert_eq!(v, 42);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_leader_hands_over_to_a_follower() {
        let flight = Arc::new(SingleFlight::<&'static str>::new());
        let leader = tokio::spawn({
            let flight = flight.clone();
            async move { flight.run("k", std::future::pending::<&'static str>).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(flight.in_flight(), 1);
        let followers: Vec<_> = (0..10)
            .map(|_| {
                let flight = flight.clone();
                tokio::spawn(async move {
                    // Work that takes a moment, so the woken followers find the new
                    // leader in flight and join it.
                    let work = || async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        "done"
                    };
                    flight.run("k", work).await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        leader.abort();
        let mut leads = 0;
        for f in followers {
            let (v, role) = tokio::time::timeout(Duration::from_secs(1), f)
                .await
                .expect("follower must not hang")
                .unwrap();
            assert_eq!(v, "done");
            leads += usize::from(role == Role::Leader);
        }
        assert_eq!(leads, 1, "exactly one follower takes over");
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn detached_work_outlives_its_leader() {
        let flight = Arc::new(SingleFlight::<&'static str>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let work = {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    "done"
                }
            }
        };
        let leader = tokio::spawn({
            let (flight, work) = (flight.clone(), work.clone());
            async move { flight.run_detached("k", work).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let (v, role) = flight.run_detached("k", work).await;
        assert_eq!((v, role), ("done", Role::Follower));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the cancelled leader's run went on"
        );
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test]
    async fn panicking_leader_does_not_strand_followers() {
        let flight = Arc::new(SingleFlight::<u8>::new());
        let gate = Arc::new(tokio::sync::Notify::new());
        let leader = tokio::spawn({
            let (flight, gate) = (flight.clone(), gate.clone());
            async move {
                flight
                    .run("k", || async move {
                        gate.notified().await;
                        panic!("work failed")
                    })
                    .await
            }
        });
        while flight.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let follower = tokio::spawn({
            let flight = flight.clone();
            async move { flight.run("k", || async { 7 }).await }
        });
        tokio::task::yield_now().await;
        gate.notify_one();
        assert!(
            leader.await.is_err(),
            "the leader's panic reaches the leader"
        );
        let (v, _) = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("follower must not hang")
            .unwrap();
        assert_eq!(v, 7);
    }
}
