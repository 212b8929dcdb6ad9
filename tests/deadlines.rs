//! The time a group gives its peer calls: the time left of the request (the group's
//! timeout), the default peer deadline without one, and at most a second for an
//! owner's invalidations. Node a's only peer, b, is a stub that records each call's
//! deadline, on paused time so the figures are exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use peercache::peer::{Fetched, PeerClient, PeerFailure, PeerPicker, PeerRef};
use peercache::ring::DEFAULT_VNODES;
use peercache::{Error, Group, GroupBuilder, LoaderFn, Member, Registry, Ring};

/// b: records (operation, deadline); answers, or is unreachable when `down`.
#[derive(Debug, Default)]
struct Stub {
    calls: Mutex<Vec<(&'static str, Duration)>>,
    down: AtomicBool,
}

impl Stub {
    fn answer<T>(&self, op: &'static str, deadline: Duration, v: T) -> Result<T, PeerFailure> {
        self.calls.lock().push((op, deadline));
        if self.down.load(Ordering::SeqCst) {
            return Err(PeerFailure::Unreachable("b is down".into()));
        }
        Ok(v)
    }

    fn take(&self) -> Vec<(&'static str, Duration)> {
        std::mem::take(&mut *self.calls.lock())
    }
}

#[derive(Debug)]
struct StubRef(Arc<Stub>);

#[async_trait]
impl PeerClient for StubRef {
    fn id(&self) -> &str {
        "b"
    }

    async fn get(&self, _: &str, _: &str, deadline: Duration) -> Result<Fetched, PeerFailure> {
        let fetched = Fetched {
            value: Bytes::from("from b"),
            version: 1,
            expires_in: None,
            hot: false,
            packed: None,
        };
        self.0.answer("get", deadline, fetched)
    }

    async fn set(
        &self,
        _: &str,
        _: &str,
        _: Bytes,
        _: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64, PeerFailure> {
        self.0.answer("set", deadline, 7)
    }

    async fn remove(&self, _: &str, _: &str, deadline: Duration) -> Result<u64, PeerFailure> {
        self.0.answer("remove", deadline, 7)
    }

    async fn invalidate(
        &self,
        _: &str,
        _: &str,
        _: u64,
        deadline: Duration,
    ) -> Result<(), PeerFailure> {
        self.0.answer("invalidate", deadline, ())
    }

    async fn peek(
        &self,
        _: &str,
        _: &str,
        _: &str,
        deadline: Duration,
    ) -> Result<Option<Fetched>, PeerFailure> {
        self.0.answer("peek", deadline, None)
    }

    async fn push(
        &self,
        _: &str,
        _: Vec<(String, Fetched)>,
        deadline: Duration,
    ) -> Result<usize, PeerFailure> {
        self.0.answer("push", deadline, 0)
    }
}

/// Node a's group, configured by `configure`, with b as its only peer.
fn node_a(configure: impl FnOnce(GroupBuilder) -> GroupBuilder) -> (Group, Arc<Stub>) {
    let registry = Registry::new();
    let loader = LoaderFn(|key: String| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Error>(Bytes::from(format!("a:{key}")))
    });
    let group = configure(registry.group("g").loader(loader))
        .build()
        .unwrap();
    let stub = Arc::new(Stub::default());
    let b = stub.clone();
    let connect = Box::new(move |_: &Member| Ok(Arc::new(StubRef(b.clone())) as PeerRef));
    let picker = PeerPicker::new("a", DEFAULT_VNODES, connect);
    picker.set_members(members());
    registry.set_peers(Arc::new(picker)).unwrap();
    (group, stub)
}

fn members() -> Vec<Member> {
    vec![Member::new("a", "a:1"), Member::new("b", "b:1")]
}

/// A key `owner` owns in a's view.
fn key_of(owner: &str) -> String {
    let ring = Ring::new(members(), DEFAULT_VNODES);
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.owner(k).unwrap().id == owner)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn without_a_timeout_peer_calls_get_the_default_five_seconds() {
    let (a, b) = node_a(|g| g);
    let key = key_of("b");
    assert_eq!(a.get(&key).await.unwrap(), "from b");
    a.set(&key, Bytes::from("x"), None).await.unwrap();
    a.remove(&key).await.unwrap();
    let five = Duration::from_secs(5);
    assert_eq!(b.take(), [("get", five), ("set", five), ("remove", five)]);
}

#[tokio::test(start_paused = true)]
async fn with_a_timeout_peer_calls_get_the_time_left() {
    let (a, b) = node_a(|g| g.timeout(Duration::from_secs(2)));
    let key = key_of("b");
    assert_eq!(a.get(&key).await.unwrap(), "from b");
    a.set(&key, Bytes::from("x"), None).await.unwrap();
    let two = Duration::from_secs(2);
    assert_eq!(b.take(), [("get", two), ("set", two)]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_bounds_a_slow_load_and_leaves_a_fast_one_alone() {
    let (fast, _) = node_a(|g| g.timeout(Duration::from_secs(1)));
    let key = key_of("a");
    assert_eq!(fast.get(&key).await.unwrap(), format!("a:{key}"));
    let (slow, _) = node_a(|g| g.timeout(Duration::from_millis(50)));
    assert!(matches!(slow.get(&key).await, Err(Error::Timeout)));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_owner_is_loaded_around_while_time_is_left() {
    let (a, b) = node_a(|g| g.timeout(Duration::from_secs(2)));
    b.down.store(true, Ordering::SeqCst);
    let key = key_of("b");
    assert_eq!(a.get(&key).await.unwrap(), format!("a:{key}"));
}

#[tokio::test(start_paused = true)]
async fn an_owner_gives_its_invalidations_the_time_left_up_to_a_second() {
    let (a, b) = node_a(|g| g);
    // a applies a peer's write as the owner, whatever its own view says.
    for (deadline, wait) in [(300, 300), (5000, 1000)] {
        let deadline = Duration::from_millis(deadline);
        a.write_for_peer("k", Some(Bytes::from("x")), None, deadline)
            .await
            .unwrap();
        assert_eq!(b.take(), [("invalidate", Duration::from_millis(wait))]);
    }
}
