//! Peer suspicion, a circuit breaker per member. After a call to a member fails as
//! unreachable, the member is suspected for a back-off period: [`FIRST_BACKOFF`],
//! doubled by each failed probe up to [`MAX_BACKOFF`], back to the first once it
//! answers. While it is suspected, calls to it fail at once as unreachable, so a get of
//! one of its keys goes straight to the member next to it on the ring (or the local
//! fallback) instead of waiting for a connect timeout, and a write does not wait for
//! its invalidation. When the period runs out, one call at a time goes through as a
//! probe (a get, or the node's periodic peek, src/node/membership.rs). A member that answers again is reported
//! on the `recovered` channel, so the writes it missed can be replayed to it.
//!
//! A call given less than [`MIN_EVIDENCE`] that times out says little about the member
//! (its caller was in a hurry), so it does not start a suspicion.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedSender;

use super::{Fetched, PeerClient, PeerFailure, PeerRef};
use crate::time::{self, Instant};

/// The first suspicion period of a member.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest suspicion period: a member that stays away is probed this often.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Calls with less time than this that find no answer do not start a suspicion.
pub const MIN_EVIDENCE: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct State {
    /// Suspected until then; `None` while trusted.
    until: Option<Instant>,
    /// The next suspicion period.
    backoff: Duration,
    /// A probe call is out.
    probing: bool,
}

/// What a call may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Go: the member is trusted.
    Call,
    /// Go, as the one probe of a suspected member whose period ran out.
    Probe,
    /// Fail at once: suspected for this much longer (zero: a probe is out).
    Refuse(Duration),
}

/// A peer behind its member's suspicion.
pub struct Suspicious {
    inner: PeerRef,
    state: Mutex<State>,
    recovered: Option<UnboundedSender<String>>,
}

impl fmt::Debug for Suspicious {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suspicious")
            .field("peer", &self.inner.id())
            .field("state", &*self.state.lock())
            .finish()
    }
}

/// Resets an unfinished probe (its caller gave up), so the next call probes.
struct ProbeGuard<'a> {
    state: &'a Mutex<State>,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.lock().probing = false;
        }
    }
}

impl Suspicious {
    /// `inner` behind a suspicion of its own; members that answer again after being
    /// suspected are sent (by id) on `recovered`.
    pub fn wrap(inner: PeerRef, recovered: Option<UnboundedSender<String>>) -> PeerRef {
        std::sync::Arc::new(Suspicious {
            inner,
            state: Mutex::new(State {
                until: None,
                backoff: FIRST_BACKOFF,
                probing: false,
            }),
            recovered,
        })
    }

    fn admit(&self) -> Admit {
        let mut s = self.state.lock();
        let Some(until) = s.until else {
            return Admit::Call;
        };
        let now = time::now();
        if now < until {
            return Admit::Refuse(until - now);
        }
        if s.probing {
            return Admit::Refuse(Duration::ZERO);
        }
        s.probing = true;
        Admit::Probe
    }

    /// Runs `call` if the member may be called now, and learns from how it ends.
    async fn guarded<T, Fut>(
        &self,
        deadline: Duration,
        call: impl FnOnce() -> Fut,
    ) -> Result<T, PeerFailure>
    where
        Fut: Future<Output = Result<T, PeerFailure>>,
    {
        let admitted = self.admit();
        if let Admit::Refuse(left) = admitted {
            return Err(PeerFailure::Unreachable(format!(
                "suspected after failed calls, for {left:?} more"
            )));
        }
        let mut guard = ProbeGuard {
            state: &self.state,
            armed: admitted == Admit::Probe,
        };
        let result = call().await;
        guard.armed = false;
        match &result {
            // A probe's failure always counts: it was the member's one chance.
            Err(PeerFailure::Unreachable(why))
                if deadline >= MIN_EVIDENCE || admitted == Admit::Probe =>
            {
                self.failed(admitted == Admit::Probe, why);
            }
            Err(PeerFailure::Unreachable(_)) => {}
            _ => self.answered(),
        }
        result
    }

    fn failed(&self, probe: bool, why: &str) {
        let mut s = self.state.lock();
        // A call that started before the suspicion adds nothing to it.
        if !probe && s.until.is_some() {
            return;
        }
        let period = s.backoff;
        s.until = Some(time::now() + period);
        s.backoff = (period * 2).min(MAX_BACKOFF);
        s.probing = false;
        drop(s);
        tracing::warn!(peer = self.inner.id(), ?period, %why, "member suspected: calls to it fail at once until a probe is answered");
    }

    fn answered(&self) {
        let mut s = self.state.lock();
        if s.until.take().is_none() {
            return;
        }
        s.backoff = FIRST_BACKOFF;
        s.probing = false;
        drop(s);
        tracing::info!(peer = self.inner.id(), "suspected member answers again");
        if let Some(recovered) = &self.recovered {
            let _ = recovered.send(self.inner.id().to_owned());
        }
    }
}

#[async_trait]
impl PeerClient for Suspicious {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn suspected_for(&self) -> Option<Duration> {
        let until = self.state.lock().until?;
        Some(until.saturating_duration_since(time::now()))
    }

    async fn get(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        self.guarded(deadline, || self.inner.get(group, key, deadline))
            .await
    }

    async fn get_relayed(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        self.guarded(deadline, || self.inner.get_relayed(group, key, deadline))
            .await
    }

    async fn set(
        &self,
        group: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64, PeerFailure> {
        self.guarded(deadline, || {
            self.inner.set(group, key, value, ttl, deadline)
        })
        .await
    }

    async fn remove(&self, group: &str, key: &str, deadline: Duration) -> Result<u64, PeerFailure> {
        self.guarded(deadline, || self.inner.remove(group, key, deadline))
            .await
    }

    async fn invalidate(
        &self,
        group: &str,
        key: &str,
        version: u64,
        deadline: Duration,
    ) -> Result<(), PeerFailure> {
        self.guarded(deadline, || {
            self.inner.invalidate(group, key, version, deadline)
        })
        .await
    }

    async fn peek(
        &self,
        group: &str,
        key: &str,
        asker: &str,
        deadline: Duration,
    ) -> Result<Option<Fetched>, PeerFailure> {
        self.guarded(deadline, || self.inner.peek(group, key, asker, deadline))
            .await
    }

    async fn push(
        &self,
        group: &str,
        entries: Vec<(String, Fetched)>,
        deadline: Duration,
    ) -> Result<usize, PeerFailure> {
        self.guarded(deadline, || self.inner.push(group, entries, deadline))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::error::Error;

    /// A member that is up, down or stalled (answers nothing within the deadline) as
    /// the test says, counting the calls that reach it.
    #[derive(Debug, Default)]
    struct Member {
        down: AtomicBool,
        stalled: AtomicBool,
        calls: AtomicUsize,
    }

    #[derive(Debug)]
    struct Fake(Arc<Member>);

    #[async_trait]
    impl PeerClient for Fake {
        fn id(&self) -> &str {
            "m"
        }
        async fn get(&self, _: &str, key: &str, d: Duration) -> Result<Fetched, PeerFailure> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            if self.0.stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(d).await;
                return Err(PeerFailure::Unreachable("no answer".into()));
            }
            if self.0.down.load(Ordering::SeqCst) {
                return Err(PeerFailure::Unreachable("connection refused".into()));
            }
            if key == "missing" {
                return Err(PeerFailure::Answered(Error::NotFound(key.into())));
            }
            Ok(Fetched {
                value: Bytes::from_static(b"v"),
                version: 1,
                expires_in: None,
                hot: false,
                packed: None,
            })
        }
        async fn set(
            &self,
            _: &str,
            _: &str,
            _: Bytes,
            _: Option<Duration>,
            _: Duration,
        ) -> Result<u64, PeerFailure> {
            unreachable!()
        }
        async fn remove(&self, _: &str, _: &str, _: Duration) -> Result<u64, PeerFailure> {
            unreachable!()
        }
        async fn invalidate(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: Duration,
        ) -> Result<(), PeerFailure> {
            unreachable!()
        }
        async fn peek(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<Option<Fetched>, PeerFailure> {
            unreachable!()
        }
        async fn push(
            &self,
            _: &str,
            _: Vec<(String, Fetched)>,
            _: Duration,
        ) -> Result<usize, PeerFailure> {
            unreachable!()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_failed_member_is_refused_at_once_then_probed_with_growing_periods() {
        let member = Arc::new(Member::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let peer = Suspicious::wrap(Arc::new(Fake(member.clone())), Some(tx));
        let calls = || member.calls.load(Ordering::SeqCst);

        assert!(peer.get("g", "k", SECOND).await.is_ok());
        assert_eq!(peer.suspected_for(), None);
        member.down.store(true, Ordering::SeqCst);
        assert!(peer.get("g", "k", SECOND).await.is_err());
        assert_eq!(calls(), 2);
        assert_eq!(peer.suspected_for(), Some(FIRST_BACKOFF));
        // Suspected: refused without a call.
        for _ in 0..10 {
            assert!(matches!(
                peer.get("g", "k", SECOND).await,
                Err(PeerFailure::Unreachable(_))
            ));
        }
        assert_eq!(calls(), 2);
        // The period runs out: one probe, which fails, and the next period is twice as long.
        tokio::time::advance(FIRST_BACKOFF).await;
        assert!(peer.get("g", "k", SECOND).await.is_err());
        assert_eq!(calls(), 3);
        assert_eq!(peer.suspected_for(), Some(2 * FIRST_BACKOFF));
        // Periods double up to the cap.
        let mut period = 2 * FIRST_BACKOFF;
        for _ in 0..8 {
            tokio::time::advance(period).await;
            assert!(peer.get("g", "k", SECOND).await.is_err());
            period = (period * 2).min(MAX_BACKOFF);
            assert_eq!(peer.suspected_for(), Some(period));
        }
        assert_eq!(period, MAX_BACKOFF);
        assert!(rx.try_recv().is_err(), "no recovery yet");
        // It comes back: the next probe is answered (an error answer counts), it is
        // reported once, and trusted again.
        member.down.store(false, Ordering::SeqCst);
        tokio::time::advance(MAX_BACKOFF).await;
        assert!(matches!(
            peer.get("g", "missing", SECOND).await,
            Err(PeerFailure::Answered(_))
        ));
        assert_eq!(peer.suspected_for(), None);
        assert_eq!(rx.try_recv().unwrap(), "m");
        assert!(peer.get("g", "k", SECOND).await.is_ok());
        assert!(rx.try_recv().is_err());
        // And its next failure starts over at the first period.
        member.down.store(true, Ordering::SeqCst);
        assert!(peer.get("g", "k", SECOND).await.is_err());
        assert_eq!(peer.suspected_for(), Some(FIRST_BACKOFF));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_and_a_dropped_probe_frees_the_next() {
        let member = Arc::new(Member::default());
        member.stalled.store(true, Ordering::SeqCst);
        let peer = Suspicious::wrap(Arc::new(Fake(member.clone())), None);
        let calls = || member.calls.load(Ordering::SeqCst);
        assert!(peer.get("g", "k", SECOND).await.is_err());
        assert_eq!(peer.suspected_for(), Some(FIRST_BACKOFF));
        tokio::time::advance(FIRST_BACKOFF).await;
        // A probe is out (it stalls); others are refused meanwhile without a call.
        let probe = {
            let peer = peer.clone();
            tokio::spawn(async move { peer.get("g", "k", 10 * SECOND).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(calls(), 2);
        assert!(peer.get("g", "k", SECOND).await.is_err());
        assert_eq!(calls(), 2);
        // Its caller gives up: the next call probes.
        probe.abort();
        let _ = probe.await;
        let next = {
            let peer = peer.clone();
            tokio::spawn(async move { peer.get("g", "k", SECOND).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(calls(), 3);
        assert!(next.await.unwrap().is_err());
        assert_eq!(peer.suspected_for(), Some(2 * FIRST_BACKOFF));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hurried_call_that_times_out_suspects_nobody() {
        let member = Arc::new(Member::default());
        member.down.store(true, Ordering::SeqCst);
        let peer = Suspicious::wrap(Arc::new(Fake(member.clone())), None);
        assert!(peer.get("g", "k", MIN_EVIDENCE / 2).await.is_err());
        assert_eq!(peer.suspected_for(), None);
        assert!(peer.get("g", "k", MIN_EVIDENCE).await.is_err());
        assert_eq!(peer.suspected_for(), Some(FIRST_BACKOFF));
    }
}
