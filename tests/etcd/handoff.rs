//! Handoff with real processes and a real etcd: a node joining takes the keys that move
//! to it from their previous owners instead of loading them, and a node stopped with
//! SIGTERM pushes its entries to their new owners before it leaves.

use std::time::Duration;

use peercache::source::demo_value;
use tokio::time::Instant;

use crate::ONE_AT_A_TIME;
use crate::nodes::{ServeNode, ring_of, rings_become};
use crate::server::EtcdServer;

const KEYS: usize = 400;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("k{i}")).collect()
}

/// Gets every key through `node`, checking each value.
async fn read_all(node: &ServeNode) {
    for k in keys() {
        let (status, body) = node.get(&k).await.unwrap();
        assert_eq!(
            (status, body.as_bytes()),
            (200, &demo_value(&k)[..]),
            "{k} via {}",
            node.id
        );
    }
}

async fn sum(nodes: &[&ServeNode], stat: &str) -> u64 {
    let mut total = 0;
    for n in nodes {
        total += n.stat(stat).await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_its_keys_from_their_previous_owners() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let prefix = "/peercache/handoff-join/";
    let mut nodes: Vec<ServeNode> = (0..2)
        .map(|i| ServeNode::spawn(&etcd.endpoint(), prefix, &format!("n{i}"), 1))
        .collect();
    let two: Vec<&ServeNode> = nodes.iter().collect();
    // Start-up only (not what is tested): generous for a loaded 2-core machine.
    rings_become(&two, &two, Instant::now(), Duration::from_secs(15)).await;
    read_all(&nodes[0]).await;
    assert_eq!(
        sum(&two, "loads").await,
        KEYS as u64,
        "each key loaded once"
    );
    nodes.push(ServeNode::spawn(&etcd.endpoint(), prefix, "n2", 1));
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(15)).await;
    let ring = ring_of(&all);
    let moved = (keys().iter())
        .filter(|k| ring.owner(k).unwrap().id == "n2")
        .count() as u64;
    assert!(moved > KEYS as u64 / 5, "{moved} keys moved to n2");
    for n in &all {
        read_all(n).await;
    }
    let joiner = &nodes[2];
    let (loaded, taken) = (
        joiner.stat("loads").await,
        joiner.stat("handoff_hits").await,
    );
    println!("etcd handoff: {moved} keys moved to the joiner; it loaded {loaded}, took {taken}");
    assert!(
        loaded * 10 <= moved,
        "the joiner loaded {loaded} of {moved} moved keys"
    );
    assert_eq!(
        loaded + taken,
        moved,
        "every moved key taken or loaded once"
    );
    let others: Vec<&ServeNode> = nodes[..2].iter().collect();
    assert_eq!(
        sum(&others, "loads").await,
        KEYS as u64,
        "no other node loaded again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_pushes_its_entries_to_their_new_owners() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let prefix = "/peercache/handoff-leave/";
    let mut nodes: Vec<ServeNode> = (0..3)
        .map(|i| ServeNode::spawn(&etcd.endpoint(), prefix, &format!("n{i}"), 1))
        .collect();
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(15)).await;
    let ring = ring_of(&all);
    read_all(&nodes[0]).await;
    let leavers = (keys().iter())
        .filter(|k| ring.owner(k).unwrap().id == "n2")
        .count() as u64;
    assert!(leavers > KEYS as u64 / 5, "n2 owns {leavers} keys");
    let rest: Vec<&ServeNode> = nodes[..2].iter().collect();
    let loads_before = sum(&rest, "loads").await;
    nodes[2].proc.terminate();
    {
        let rest: Vec<&ServeNode> = nodes[..2].iter().collect();
        rings_become(&rest, &rest, Instant::now(), Duration::from_secs(10)).await;
    }
    let exit = nodes[2].proc.exited_within(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit}");
    let rest: Vec<&ServeNode> = nodes[..2].iter().collect();
    let accepted = sum(&rest, "handoff_accepted").await;
    assert_eq!(
        accepted, leavers,
        "every entry of the leaver was pushed and kept"
    );
    for n in &rest {
        read_all(n).await;
    }
    let reloaded = sum(&rest, "loads").await - loads_before;
    println!(
        "etcd handoff: the leaver owned {leavers} keys; {reloaded} loaded again after it left"
    );
    assert!(
        reloaded * 10 <= leavers,
        "{reloaded} of the leaver's {leavers} keys loaded again"
    );
}
