//! The registry on real loopback sockets: the coordinator conformance suite, then
//! `LeasedDiscovery` nodes joining, leaving, crashing and restarting over it.

use std::sync::Arc;
use std::time::Duration;

use peercache::discovery::{
    Coordinator, LeasedConfig, LeasedDiscovery, RegistryConfig, RegistryCoordinator,
    RegistryCoordinatorConfig, serve_registry,
};
use peercache::net::Net;
use peercache::{Discovery, Error, Member, TokioNet};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod conformance;

/// Lease TTL of the discovery tests.
const TTL: Duration = Duration::from_secs(1);

/// A registry served on loopback until stopped or dropped.
struct TestRegistry {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<peercache::Result<()>>,
}

impl TestRegistry {
    /// A registry on a port the OS picks.
    async fn start(config: RegistryConfig) -> Self {
        Self::start_at("127.0.0.1:0", config).await
    }

    async fn start_at(addr: &str, config: RegistryConfig) -> Self {
        let listener = TokioNet.bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_registry(listener, config, async {
            let _ = stopped.await;
        }));
        TestRegistry {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn coordinator(&self) -> RegistryCoordinator {
        RegistryCoordinator::new(TokioNet, &self.addr, RegistryCoordinatorConfig::default())
            .unwrap()
    }

    /// Graceful shutdown: open watches end, then the server stops.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

macro_rules! conformance_on_loopback {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let registry = TestRegistry::start(RegistryConfig::default()).await;
                conformance::$case(&registry.coordinator()).await;
            }
        )*
    };
}
conformance::for_each_case!(conformance_on_loopback);

#[tokio::test]
async fn watch_from_a_compacted_revision_fails() {
    let registry = TestRegistry::start(RegistryConfig {
        history: 4,
        ..RegistryConfig::default()
    })
    .await;
    let c = registry.coordinator();
    for i in 0..10 {
        c.put(&format!("k{i}"), vec![], 0).await.unwrap();
    }
    match c.watch("k", 2).await {
        Err(Error::Invalid(why)) => assert!(why.starts_with("compacted"), "{why}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("watched from a compacted revision"),
    }
    // What a watcher does then: read afresh and watch from there.
    let (kvs, revision) = c.range("k").await.unwrap();
    assert_eq!((kvs.len(), revision), (10, 11));
    assert!(c.watch("k", revision + 1).await.is_ok());
}

/// A node's discovery: TTL of one second, quick retries.
fn discovery(registry: &TestRegistry, incarnation: u64) -> LeasedDiscovery<RegistryCoordinator> {
    let config = LeasedConfig {
        prefix: "/members/".into(),
        lease_ttl: TTL,
        call_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        incarnation,
        seed: incarnation,
    };
    LeasedDiscovery::new(Arc::new(registry.coordinator()), config)
}

fn member(id: &str) -> Member {
    Member::new(id, format!("{id}.example:7000"))
}

/// The ids of a view.
fn ids(view: &[Member]) -> Vec<&str> {
    view.iter().map(|m| m.id.as_str()).collect()
}

/// Waits until the view is exactly `ids`; returns how long it took. Fails after 5 s.
async fn wait_view(view: &mut watch::Receiver<Vec<Member>>, ids: &[&str]) -> Duration {
    let started = Instant::now();
    let wanted = |members: &Vec<Member>| {
        members
            .iter()
            .map(|m| m.id.as_str())
            .eq(ids.iter().copied())
    };
    let waited = tokio::time::timeout(Duration::from_secs(5), view.wait_for(wanted))
        .await
        .map(|r| r.map(drop));
    let now: Vec<String> = view.borrow().iter().map(|m| m.id.clone()).collect();
    assert!(matches!(waited, Ok(Ok(()))), "view {now:?}, wanted {ids:?}");
    started.elapsed()
}

#[tokio::test]
async fn discoveries_see_each_other() {
    let registry = TestRegistry::start(RegistryConfig::default()).await;
    let (a, b, c) = (
        discovery(&registry, 1),
        discovery(&registry, 2),
        discovery(&registry, 3),
    );
    let mut view_a = a.join(member("a")).await.unwrap();
    assert_eq!(*view_a.borrow(), [member("a")], "alone at first");
    let mut view_b = b.join(member("b").with_weight(3)).await.unwrap();
    wait_view(&mut view_b, &["a", "b"]).await;
    let mut view_c = c.join(member("c")).await.unwrap();
    for view in [&mut view_a, &mut view_b, &mut view_c] {
        wait_view(view, &["a", "b", "c"]).await;
    }
    assert_eq!(
        view_a.borrow()[1],
        member("b").with_weight(3),
        "records carry addr and weight"
    );
    assert!(
        matches!(a.join(member("a")).await, Err(Error::Config(_))),
        "joined twice"
    );
}

#[tokio::test]
async fn leave_removes_a_member_promptly() {
    let registry = TestRegistry::start(RegistryConfig::default()).await;
    let (a, b) = (discovery(&registry, 1), discovery(&registry, 2));
    let mut view = a.join(member("a")).await.unwrap();
    let mut view_b = b.join(member("b")).await.unwrap();
    wait_view(&mut view, &["a", "b"]).await;
    b.leave().await.unwrap();
    assert!(
        wait_view(&mut view, &["a"]).await < TTL / 2,
        "without waiting for the lease"
    );
    // The leaver's own work has stopped: its view's sender is gone.
    let closed = tokio::time::timeout(Duration::from_secs(1), view_b.wait_for(|_| false)).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the background tasks are still running"
    );
    assert!(
        registry
            .coordinator()
            .range("/members/b")
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

#[tokio::test]
async fn a_crashed_member_disappears_after_about_one_ttl() {
    let registry = TestRegistry::start(RegistryConfig::default()).await;
    let (a, b) = (discovery(&registry, 1), discovery(&registry, 2));
    let mut view = a.join(member("a")).await.unwrap();
    let mut view_b = b.join(member("b")).await.unwrap();
    wait_view(&mut view, &["a", "b"]).await;
    // A crash: the tasks stop with the discovery, nothing is deleted or revoked.
    drop(b);
    let closed = tokio::time::timeout(Duration::from_secs(1), view_b.wait_for(|_| false)).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the background tasks are still running"
    );
    // The last keep-alive went up to a third of the TTL before the crash.
    let gone = wait_view(&mut view, &["a"]).await;
    assert!(
        gone >= TTL / 2 && gone <= TTL + TTL / 2,
        "gone after {gone:?}"
    );
}

#[tokio::test]
async fn the_same_id_is_refused_while_its_owner_lives() {
    let registry = TestRegistry::start(RegistryConfig::default()).await;
    let (first, second) = (discovery(&registry, 1), discovery(&registry, 2));
    let mut view = first.join(member("a")).await.unwrap();
    let started = Instant::now();
    match second.join(member("a")).await {
        Err(Error::Config(why)) => {
            assert!(
                why.contains("already registered by a live process"),
                "{why}"
            )
        }
        other => panic!("second process with the same id: {other:?}"),
    }
    assert!(
        started.elapsed() >= TTL,
        "it waited for the lease to expire"
    );
    assert_eq!(*view.borrow_and_update(), [member("a")]);
    let (kvs, _) = registry.coordinator().range("/members/").await.unwrap();
    assert_eq!(kvs.len(), 1);
    assert!(String::from_utf8_lossy(&kvs[0].value).contains("\"incarnation\":1"));
}

#[tokio::test]
async fn a_restart_with_the_same_id_succeeds_once_the_old_lease_expired() {
    let registry = TestRegistry::start(RegistryConfig::default()).await;
    let (a, b) = (discovery(&registry, 1), discovery(&registry, 2));
    let mut view = a.join(member("a")).await.unwrap();
    b.join(member("b")).await.unwrap();
    wait_view(&mut view, &["a", "b"]).await;
    drop(b);
    let restarted = discovery(&registry, 3);
    let started = Instant::now();
    let mut view_b = restarted.join(member("b")).await.unwrap();
    assert!(started.elapsed() <= TTL * 2, "took {:?}", started.elapsed());
    wait_view(&mut view_b, &["a", "b"]).await;
    let (kvs, _) = registry.coordinator().range("/members/b").await.unwrap();
    assert!(String::from_utf8_lossy(&kvs[0].value).contains("\"incarnation\":3"));
    // Others saw b go (with the old lease) and come back, or never noticed; either way
    // b is in their view now.
    wait_view(&mut view, &["a", "b"]).await;
}

#[tokio::test]
async fn members_register_again_after_the_registry_restarts() {
    let registry = TestRegistry::start(RegistryConfig::default()).await;
    let addr = registry.addr.clone();
    let (a, b) = (discovery(&registry, 1), discovery(&registry, 2));
    let mut view_a = a.join(member("a")).await.unwrap();
    let mut view_b = b.join(member("b")).await.unwrap();
    wait_view(&mut view_a, &["a", "b"]).await;
    registry.stop().await;
    // Without the registry, the nodes keep serving on the last known membership: the
    // views stay as they were well past a lease TTL.
    tokio::time::sleep(TTL * 3).await;
    assert!(!view_a.has_changed().unwrap() && !view_b.has_changed().unwrap());
    assert_eq!(ids(&view_a.borrow()), ["a", "b"]);
    assert_eq!(ids(&view_b.borrow()), ["a", "b"]);
    // A new registry on the same address, empty, its revisions back at 1.
    let _registry = TestRegistry::start_at(
        &addr,
        RegistryConfig {
            first_lease: 1000,
            ..RegistryConfig::default()
        },
    )
    .await;
    // Their leases are unknown to it: each drops out and registers again.
    let (kvs, _) = loop {
        let (kvs, revision) = _registry.coordinator().range("/members/").await.unwrap();
        if kvs.len() == 2 {
            break (kvs, revision);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kvs[0].key, "/members/a");
    assert_eq!(kvs[1].key, "/members/b");
    wait_view(&mut view_a, &["a", "b"]).await;
    wait_view(&mut view_b, &["a", "b"]).await;
}
