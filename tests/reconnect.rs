//! A peer channel after its owner went away: the next call reaches the owner over a
//! new connection, even when the channel has not yet seen the old one close.
//!
//! A tonic channel learns that its connection ended only when its connection tasks
//! next run. A call made before then is handed to the dead connection and fails
//! without ever being sent ("operation was canceled"). On a busy machine that window
//! is wide enough for a node to restart in, which made `peers_reconnect_to_a_restarted_owner`
//! in tests/cluster.rs flaky. Here the window is held open on purpose: on a
//! current-thread runtime, nothing else runs between closing the connection and the
//! next call.

mod common;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Db};
use parking_lot::Mutex;
use peercache::net::{ChannelTimeouts, Listener, Net};
use peercache::peer::Unobserved;
use peercache::{Member, TokioNet};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Real TCP whose dialled connections the test can end as the far side would: once
/// closed, a connection reads end-of-stream.
#[derive(Clone, Default)]
struct Closable {
    dialled: Arc<Mutex<Vec<Arc<Ends>>>>,
}

#[derive(Default)]
struct Ends {
    closed: AtomicBool,
    reader: Mutex<Option<Waker>>,
}

impl Closable {
    /// Ends every connection dialled so far, waking their readers.
    fn close_all(&self) {
        for ends in self.dialled.lock().iter() {
            ends.closed.store(true, Ordering::SeqCst);
            if let Some(reader) = ends.reader.lock().take() {
                reader.wake();
            }
        }
    }

    fn dialled(&self) -> usize {
        self.dialled.lock().len()
    }
}

struct Conn {
    tcp: TcpStream,
    ends: Arc<Ends>,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ends.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        *self.ends.reader.lock() = Some(cx.waker().clone());
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The seam wants a listener of the same streams; this test only dials.
struct Accepting(TcpListener);

impl Listener for Accepting {
    type Stream = Conn;

    async fn accept(&self) -> io::Result<(Conn, SocketAddr)> {
        let (tcp, from) = self.0.accept().await?;
        let ends = Arc::default();
        Ok((Conn { tcp, ends }, from))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for Closable {
    type Stream = Conn;
    type Listener = Accepting;

    async fn bind(&self, addr: &str) -> io::Result<Accepting> {
        Ok(Accepting(TokioNet.bind(addr).await?))
    }

    async fn connect(&self, addr: &str) -> io::Result<Conn> {
        let tcp = TokioNet.connect(addr).await?;
        let ends = Arc::<Ends>::default();
        self.dialled.lock().push(ends.clone());
        Ok(Conn { tcp, ends })
    }
}

#[tokio::test]
async fn a_call_after_the_owner_closed_the_connection_goes_out_on_a_new_one() {
    let db = Db::default();
    let owner = Cluster::start(1, |_, reg| {
        reg.group("g")
            .capacity(1 << 20)
            .loader(db.clone())
            .build()
            .unwrap();
    })
    .await;
    let net = Closable::default();
    let connect = peercache::grpc::connector(
        net.clone(),
        ChannelTimeouts::default(),
        None,
        peercache::grpc::message_limit(&owner.nodes[0].groups),
        peercache::grpc::Coalescing::default(),
        Arc::new(Unobserved),
    );
    let id = &owner.nodes[0].id;
    let peer = connect(&Member::new(id, id)).unwrap();
    let deadline = Duration::from_secs(5);
    let first = peer.get("g", "a", deadline).await.expect("first call");
    assert_eq!(first.value, Bytes::from("v:a"));

    net.close_all();
    let second = peer.get("g", "b", deadline).await;
    assert_eq!(
        second.map(|f| f.value),
        Ok(Bytes::from("v:b")),
        "the call after the close"
    );
    assert_eq!(net.dialled(), 2, "one new connection");
    assert_eq!(db.total_loads(), 2);
}
