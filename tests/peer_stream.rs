//! Gets on the GetStream (src/grpc/stream.rs): a real node answers a raw stream's calls
//! by id, refuses bad ones with an error reply and keeps the stream; a message past the
//! limit ends the stream, not the node. A client asks a member without GetStream (an
//! older one) with unary calls, and one whose stream ends under a call asks again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Cluster, Db, db_group, http_get, metric};
use futures::StreamExt;
use peercache::Error;
use peercache::grpc::{Coalescing, GrpcPeer, PeerService};
use peercache::peer::{CallObserver, Outcome, PeerClient, PeerFailure};
use peercache::proto::peer_server;
use peercache::proto::{self, get_many_entry, get_many_reply};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

fn call(id: u64, group: &str, keys: &[&str]) -> proto::GetManyCall {
    proto::GetManyCall {
        id,
        request: Some(proto::GetManyRequest {
            group: group.into(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            deadline_ms: 2000,
            accept: vec![],
            max_reply_bytes: 0,
        }),
        cancel: false,
    }
}

fn values(reply: &proto::GetManyReply) -> Vec<String> {
    let Some(get_many_reply::Result::Response(r)) = &reply.result else {
        panic!("not a response: {reply:?}");
    };
    (r.entries.iter())
        .map(|e| match &e.result {
            Some(get_many_entry::Result::Found(f)) => String::from_utf8(f.value.to_vec()).unwrap(),
            other => panic!("not found: {other:?}"),
        })
        .collect()
}

fn error_kind(reply: &proto::GetManyReply) -> String {
    match &reply.result {
        Some(get_many_reply::Result::Error(e)) => e.kind.clone(),
        other => panic!("not an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_calls_by_id_and_refuses_bad_ones_without_ending() {
    let db = Db::default();
    let cluster = Cluster::start(1, db_group(&db)).await;
    let node = &cluster.nodes[0];
    let mut raw = common::raw_peer(&node.id).await;
    let (tx, rx) = mpsc::channel(16);
    let calls =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut replies = raw.get_stream(calls).await.unwrap().into_inner();

    let many: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    tx.send(call(10, "g", &["a", "b", "c"])).await.unwrap();
    tx.send(call(11, "nope", &["a"])).await.unwrap();
    tx.send(proto::GetManyCall {
        id: 12,
        request: None,
        cancel: false,
    })
    .await
    .unwrap();
    tx.send(call(13, "g", &many)).await.unwrap();
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let reply = replies.next().await.unwrap().unwrap();
        got.insert(reply.id, reply);
    }
    assert_eq!(values(&got[&10]), ["v:a", "v:b", "v:c"]);
    assert_eq!(error_kind(&got[&11]), "unknown-group");
    assert_eq!(error_kind(&got[&12]), "invalid");
    assert_eq!(error_kind(&got[&13]), "invalid", "too many keys");
    assert_eq!(db.total_loads(), 3, "nothing loaded for refused calls");

    // The stream goes on after the refusals.
    tx.send(call(14, "g", &["a", "d"])).await.unwrap();
    let reply = replies.next().await.unwrap().unwrap();
    assert_eq!(reply.id, 14);
    assert_eq!(values(&reply), ["v:a", "v:d"]);

    // The asker ends its side: the node ends the stream.
    drop(tx);
    assert!(replies.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_limit_ends_the_stream_not_the_node() {
    let db = Db::default();
    let cluster = Cluster::start(1, db_group(&db)).await;
    let node = &cluster.nodes[0];
    let mut raw = common::raw_peer(&node.id)
        .await
        .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(4);
    let calls =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut replies = raw.get_stream(calls).await.unwrap().into_inner();
    // Two keys of 8 MiB: past the node's message limit (its largest key and value
    // plus the envelope).
    let huge = "k".repeat(8 << 20);
    tx.send(call(1, "g", &[&huge, &huge])).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .expect("the stream ends at once");
    let status = ended.expect("with a status").unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    assert_eq!(db.total_loads(), 0);
    let (code, body) = http_get(&format!("{}/v1/groups/g/keys/x", node.url)).await;
    assert_eq!(
        (code, &body[..]),
        (200, &b"v:x"[..]),
        "the node keeps serving"
    );
}

/// A member that answers GetStream as its `mode` says. Every other call is the real
/// service's.
#[derive(Clone)]
struct Member {
    real: PeerService,
    mode: Mode,
    streams: Arc<AtomicUsize>,
    gets: Arc<AtomicUsize>,
    /// The GetStream calls it read (`Recording`).
    calls: Arc<parking_lot::Mutex<Vec<proto::GetManyCall>>>,
}

#[derive(Clone, Copy)]
enum Mode {
    /// Answers Unimplemented, as an older member.
    Lacking,
    /// Opens a stream and ends it before any reply, as a faulty or stopping one.
    Ending,
    /// Keeps every call it reads, answers them with the real service, except gets of
    /// keys starting with "slow", which it never answers.
    Recording,
}

#[tonic::async_trait]
impl peer_server::Peer for Member {
    async fn get(
        &self,
        r: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.real.get(r).await
    }
    async fn get_many(
        &self,
        r: Request<proto::GetManyRequest>,
    ) -> Result<Response<proto::GetManyResponse>, Status> {
        self.real.get_many(r).await
    }
    type GetStreamStream = futures::stream::BoxStream<'static, Result<proto::GetManyReply, Status>>;
    async fn get_stream(
        &self,
        calls: Request<Streaming<proto::GetManyCall>>,
    ) -> Result<Response<Self::GetStreamStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        let mut calls = calls.into_inner();
        match self.mode {
            Mode::Lacking => Err(Status::unimplemented("no GetStream here")),
            Mode::Ending => {
                // Reads the first call, then ends without a reply.
                let replies = futures::stream::once(async move {
                    let _ = calls.next().await;
                })
                .filter_map(|()| async { None });
                Ok(Response::new(replies.boxed()))
            }
            Mode::Recording => {
                let (tx, rx) = mpsc::channel(16);
                let (kept, real) = (self.calls.clone(), self.real.clone());
                tokio::spawn(async move {
                    while let Some(Ok(call)) = calls.next().await {
                        kept.lock().push(call.clone());
                        let Some(req) = call.request else { continue };
                        if req.keys.iter().any(|k| k.starts_with("slow")) {
                            continue;
                        }
                        let answer = real.get_many(Request::new(req)).await.unwrap();
                        let result = get_many_reply::Result::Response(answer.into_inner());
                        let reply = proto::GetManyReply {
                            id: call.id,
                            result: Some(result),
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            return;
                        }
                    }
                });
                let replies = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|reply| (reply, rx))
                });
                Ok(Response::new(replies.boxed()))
            }
        }
    }
    async fn set(
        &self,
        r: Request<proto::SetRequest>,
    ) -> Result<Response<proto::SetResponse>, Status> {
        self.real.set(r).await
    }
    async fn remove(
        &self,
        r: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::RemoveResponse>, Status> {
        self.real.remove(r).await
    }
    async fn invalidate(
        &self,
        r: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        self.real.invalidate(r).await
    }
    async fn peek(
        &self,
        r: Request<proto::PeekRequest>,
    ) -> Result<Response<proto::PeekResponse>, Status> {
        self.real.peek(r).await
    }
    async fn push(
        &self,
        r: Request<proto::PushRequest>,
    ) -> Result<Response<proto::PushResponse>, Status> {
        self.real.push(r).await
    }
}

/// Calls seen by a client, by name and outcome, and the streams it opened.
#[derive(Default)]
struct Seen(
    parking_lot::Mutex<Vec<(&'static str, Outcome)>>,
    AtomicUsize,
);

impl CallObserver for Seen {
    fn observe(&self, rpc: &'static str, outcome: Outcome, _: Duration) {
        self.0.lock().push((rpc, outcome));
    }

    fn observe_stream_opened(&self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// A member serving group "g" from `db` as `Member` does, on a loopback port, and a
/// client of it that sends gets on GetStream, alone (no coalescing).
async fn member(db: &Db, mode: Mode) -> (Member, GrpcPeer, Arc<Seen>) {
    let registry = peercache::Registry::new();
    db_group(db)(0, &registry);
    let member = Member {
        real: PeerService::new(registry),
        mode,
        streams: Arc::default(),
        gets: Arc::default(),
        calls: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream_from(listener);
    let server = peer_server::PeerServer::new(member.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(incoming),
    );
    let (peer, seen) = client_alone(addr, 1 << 20, true);
    (member, peer, seen)
}

/// A client of the member at `addr` with message limit `limit`, sending gets alone
/// (no coalescing), on GetStream if `stream`; and what it saw.
fn client_alone(addr: std::net::SocketAddr, limit: usize, stream: bool) -> (GrpcPeer, Arc<Seen>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let seen = Arc::new(Seen::default());
    let peer =
        GrpcPeer::new(addr.to_string(), channel, limit, seen.clone()).with_coalescing(Coalescing {
            keys: 1,
            calls: 0,
            stream,
        });
    (peer, seen)
}

/// The accepted connections of `listener`, as tonic serves them.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| s);
        Some((accepted, listener))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_get_stream_is_asked_with_calls_and_not_offered_it_again() {
    let db = Db::default();
    let (member, peer, seen) = member(&db, Mode::Lacking).await;
    for key in ["a", "b", "c"] {
        let got = peer.get("g", key, Duration::from_secs(2)).await.unwrap();
        assert_eq!(&got.value[..], format!("v:{key}").as_bytes());
    }
    assert_eq!(
        member.streams.load(Ordering::SeqCst),
        1,
        "asked for a stream once"
    );
    assert_eq!(seen.1.load(Ordering::SeqCst), 0, "none opened");
    assert_eq!(member.gets.load(Ordering::SeqCst), 3, "three unary Gets");
    assert_eq!(
        *seen.0.lock(),
        [("get", Outcome::Ok); 3],
        "each a unary Get, reported as a get"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_stream_ends_before_its_reply_is_asked_again_with_a_call() {
    let db = Db::default();
    let (member, peer, seen) = member(&db, Mode::Ending).await;
    for key in ["a", "b"] {
        let got = peer.get("g", key, Duration::from_secs(2)).await.unwrap();
        assert_eq!(&got.value[..], format!("v:{key}").as_bytes());
    }
    assert_eq!(
        member.streams.load(Ordering::SeqCst),
        2,
        "a new stream for the next get"
    );
    assert_eq!(seen.1.load(Ordering::SeqCst), 2, "both opened");
    assert_eq!(
        member.gets.load(Ordering::SeqCst),
        2,
        "each get asked again alone"
    );
    assert_eq!(*seen.0.lock(), [("get", Outcome::Ok); 2]);
    assert_eq!(db.total_loads(), 2);
}

/// A node stops at once with a peer's GetStream open: the stream ends when the node
/// stops, and the draining server does not wait out its grace period (3 s) for it.
/// (Before: the stop took the whole grace period.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_peers_stream_open_stops_without_waiting_out_its_grace() {
    let db = Db::default();
    let mut cluster = Cluster::start(2, db_group(&db)).await;
    let key = cluster.key_owned_by(1, "k");
    let (code, _) = http_get(&format!("{}/v1/groups/g/keys/{key}", cluster.nodes[0].url)).await;
    assert_eq!(code, 200);
    assert_eq!(db.loads(&key), 1, "loaded by node 1, asked over the stream");
    let opened = metric(&cluster.nodes[0].url, "peercache_peer_streams_opened_total").await;
    assert_eq!(opened, Some(1), "node 0 opened a stream to node 1");
    let started = std::time::Instant::now();
    cluster.nodes[1].stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "stopping took {took:?}");
    // Node 0 keeps answering: the key's owner is gone, so it loads it itself.
    let (code, body) = http_get(&format!("{}/v1/groups/g/keys/{key}", cluster.nodes[0].url)).await;
    assert_eq!((code, &body[..]), (200, format!("v:{key}").as_bytes()));
}

/// A real node's peer service on a loopback port, serving group "g" from `db` (values
/// up to 1 MiB), and a client of it whose message limit is 256 KiB: a member
/// configured with smaller limits than the owner, as during a rolling change of a
/// group's value limit. Gets go alone, on GetStream if `stream`, else as unary Gets.
async fn owner_with_larger_limits(db: &Db, stream: bool) -> (GrpcPeer, Arc<Seen>) {
    let registry = peercache::Registry::new();
    db_group(db)(0, &registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(peercache::grpc::server(PeerService::new(registry)))
            .serve_with_incoming(tokio_stream_from(listener)),
    );
    client_alone(addr, 256 << 10, stream)
}

/// A value past the asker's message limit fails its own get, as a load error saying
/// both sizes (as a value past its limit from its own source would); the stream and
/// the other gets on it go on, and on unary Gets the owner is not taken for
/// unreachable. (Before: the owner sent the reply and the asker's decoder refused it.
/// On the stream that ended the stream: every call on it failed as unreachable, and
/// the next get opened a new stream. On a unary Get the owner was taken for
/// unreachable: the gets queued for it failed, to be asked of another member.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_past_the_askers_limit_fails_its_get_not_the_stream() {
    for stream in [true, false] {
        let db = Db::default();
        db.write("big", Some(&"x".repeat(512 << 10)));
        let (peer, seen) = owner_with_larger_limits(&db, stream).await;
        let got = peer.get("g", "a", Duration::from_secs(2)).await.unwrap();
        assert_eq!(&got.value[..], b"v:a");
        let err = peer
            .get("g", "big", Duration::from_secs(2))
            .await
            .unwrap_err();
        match &err {
            PeerFailure::Answered(Error::Load(m)) => assert!(
                m.contains("524288 bytes") && m.contains("the asking member reads"),
                "{m}"
            ),
            other => panic!("stream {stream}: not refused as a load error: {other:?}"),
        }
        let got = peer.get("g", "b", Duration::from_secs(2)).await.unwrap();
        assert_eq!(&got.value[..], b"v:b");
        let opened = seen.1.load(Ordering::SeqCst);
        assert_eq!(opened, usize::from(stream), "one stream, still open");
        assert_eq!(db.loads("big"), 1);
    }
}

/// Within one GetMany, only the value past the asker's limit is refused; the keys
/// around it are answered, and an asker that does not say its limit (an older one) is
/// answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_value_past_the_askers_limit_is_refused_in_a_get_many() {
    let db = Db::default();
    db.write("big", Some(&"x".repeat(512 << 10)));
    let cluster = Cluster::start(1, db_group(&db)).await;
    let mut raw = common::raw_peer(&cluster.nodes[0].id).await;
    let ask = |max_reply_bytes| proto::GetManyRequest {
        group: "g".into(),
        keys: vec!["a".into(), "big".into(), "b".into()],
        deadline_ms: 2000,
        accept: vec![],
        max_reply_bytes,
    };
    let answer = raw.get_many(ask(256 << 10)).await.unwrap().into_inner();
    let kinds: Vec<String> = (answer.entries.iter())
        .map(|e| match &e.result {
            Some(get_many_entry::Result::Found(f)) => format!("{} bytes", f.value.len()),
            Some(get_many_entry::Result::Error(e)) => format!("{}: {}", e.kind, e.message),
            None => "left out".into(),
        })
        .collect();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[0], "3 bytes");
    assert!(
        kinds[1].starts_with("load: the owner's value is 524288 bytes"),
        "{kinds:?}"
    );
    assert_eq!(kinds[2], "3 bytes");
    let answer = raw.get_many(ask(0)).await.unwrap().into_inner();
    match &answer.entries[1].result {
        Some(get_many_entry::Result::Found(f)) => assert_eq!(f.value.len(), 512 << 10),
        other => panic!("{other:?}"),
    }
}

/// Loads `v:<key>`, after `delay` for keys starting with "slow".
struct Slow(Duration);

#[async_trait::async_trait]
impl peercache::Loader for Slow {
    async fn load(&self, key: &str) -> peercache::Result<bytes::Bytes> {
        if key.starts_with("slow") {
            tokio::time::sleep(self.0).await;
        }
        Ok(bytes::Bytes::from(format!("v:{key}")))
    }
}

/// One node whose group `g` loads keys starting with "slow" in 600 ms, and a GetStream
/// to it: the calls sent on `tx` and their replies.
async fn slow_node_stream() -> (
    Cluster,
    mpsc::Sender<proto::GetManyCall>,
    Streaming<proto::GetManyReply>,
) {
    let cluster = Cluster::start(1, |_, reg: &peercache::Registry| {
        reg.group("g")
            .capacity(1 << 20)
            .loader(Slow(Duration::from_millis(600)))
            .build()
            .unwrap();
    })
    .await;
    let mut raw = common::raw_peer(&cluster.nodes[0].id).await;
    let (tx, rx) = mpsc::channel(16);
    let calls =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let replies = raw.get_stream(calls).await.unwrap().into_inner();
    (cluster, tx, replies)
}

/// The cancel of call `id`.
fn cancel(id: u64) -> proto::GetManyCall {
    proto::GetManyCall {
        id,
        request: None,
        cancel: true,
    }
}

/// A call the asker cancels is dropped unanswered, and the stream goes on. (Before: a cancel read as a call without its
/// request, answered with an error at once, and the call was answered when its load
/// ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_dropped_unanswered_and_the_stream_goes_on() {
    let (_cluster, tx, mut replies) = slow_node_stream().await;
    tx.send(call(1, "g", &["slow"])).await.unwrap();
    tx.send(cancel(1)).await.unwrap();
    tx.send(call(2, "g", &["a"])).await.unwrap();
    let first = replies.next().await.unwrap().unwrap();
    assert_eq!((first.id, values(&first)), (2, vec!["v:a".to_owned()]));
    let more = tokio::time::timeout(Duration::from_millis(1200), replies.next()).await;
    assert!(more.is_err(), "a reply to the cancelled call: {more:?}");
    tx.send(call(3, "g", &["b"])).await.unwrap();
    let third = replies.next().await.unwrap().unwrap();
    assert_eq!((third.id, values(&third)), (3, vec!["v:b".to_owned()]));
}

/// A call cancelled after its load began leaves the load running: it fills the cache
/// and the next get of the key is a hit. (A call cancelled before the owner first ran
/// it, as in the test above, starts no load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_a_cancelled_call_began_goes_on_and_is_cached() {
    let (_cluster, tx, mut replies) = slow_node_stream().await;
    tx.send(call(1, "g", &["slow"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(cancel(1)).await.unwrap();
    let none = tokio::time::timeout(Duration::from_millis(800), replies.next()).await;
    assert!(none.is_err(), "a reply to the cancelled call: {none:?}");
    let asked = std::time::Instant::now();
    tx.send(call(2, "g", &["slow"])).await.unwrap();
    let second = replies.next().await.unwrap().unwrap();
    assert_eq!((second.id, values(&second)), (2, vec!["v:slow".to_owned()]));
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "loaded again: {:?}",
        asked.elapsed()
    );
}

/// A get given up after its call was written (its deadline passed) cancels the call
/// at the peer, as a unary call is cancelled with its HTTP/2 stream; the stream goes
/// on. (Before: the call ran on at the peer until its own deadline, holding one of
/// the stream's places.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_given_up_on_the_stream_is_cancelled_at_the_peer() {
    let db = Db::default();
    let (member, peer, seen) = member(&db, Mode::Recording).await;
    let given_up = peer.get("g", "slow", Duration::from_millis(200)).await;
    assert!(given_up.is_err(), "{given_up:?}");
    let got = peer.get("g", "a", Duration::from_secs(2)).await.unwrap();
    assert_eq!(&got.value[..], b"v:a");
    let calls = member.calls.lock().clone();
    let slow = (calls.iter())
        .find(|c| c.request.as_ref().is_some_and(|r| r.keys == ["slow"]))
        .expect("the slow call")
        .id;
    assert!(
        (calls.iter()).any(|c| c.cancel && c.request.is_none() && c.id == slow),
        "{calls:?}"
    );
    assert_eq!(seen.1.load(Ordering::SeqCst), 1, "one stream");
}
