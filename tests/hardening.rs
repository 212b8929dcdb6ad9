//! What a hostile or careless caller of the peer protocol, or an impatient client, must
//! not be able to do to a node: poison versions, exhaust memory, make a load start over.

mod common;

use bytes::Bytes;
use common::{Cluster, Db, db_group};
use peercache::proto::peer_client::PeerClient;
use peercache::proto::{InvalidateRequest, SetRequest};

/// A raw gRPC client of node `i`, as anyone who can reach its port could make.
async fn raw_peer(cluster: &Cluster, i: usize) -> PeerClient<tonic::transport::Channel> {
    PeerClient::connect(format!("http://{}", cluster.nodes[i].id))
        .await
        .expect("connect to the node's gRPC port")
}

/// An `Invalidate` at the top of the version range followed by a `Set` of the same key
/// once made the owner mint versions above what peers accept for every later write, to
/// any key: their invalidations were refused, and other nodes served old copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_version_does_not_stop_invalidations() {
    let db = Db::default();
    let cluster = Cluster::start(2, db_group(&db)).await;
    let (owner, reader) = (cluster.nodes[0].group("g"), cluster.nodes[1].group("g"));
    let k = cluster.key_owned_by(0, "k");
    let x = cluster.key_owned_by(0, "x");
    for key in [&k, &x] {
        assert_eq!(reader.get(key).await.unwrap(), format!("v:{key}"));
    }
    assert_eq!(reader.stats().hot.items, 2, "the reader keeps both copies");

    let mut raw = raw_peer(&cluster, 0).await;
    for version in [1 << 62, u64::MAX] {
        let poison = InvalidateRequest {
            group: "g".into(),
            key: x.clone(),
            version,
        };
        // Accepted or refused, what matters is what follows.
        let _ = raw.invalidate(poison).await;
        let set = SetRequest {
            group: "g".into(),
            key: x.clone(),
            value: Bytes::from_static(b"poison"),
            deadline_ms: 1000,
            ..SetRequest::default()
        };
        raw.set(set).await.expect("a Set through the owner");
    }

    db.write(&k, Some("new k"));
    owner.set(&k, Bytes::from("new k"), None).await.unwrap();
    assert_eq!(
        reader.get(&k).await.unwrap(),
        "new k",
        "another key's write"
    );
    db.write(&x, Some("new x"));
    owner.set(&x, Bytes::from("new x"), None).await.unwrap();
    assert_eq!(
        reader.get(&x).await.unwrap(),
        "new x",
        "the poisoned key's write"
    );
}
