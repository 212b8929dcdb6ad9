//! The rogue's own peer server: the peer protocol on `rogue:7000` behind TLS with the
//! rogue's certificate (another CA's), asking no client certificate, so anything that
//! completes a handshake gets in. Every request is counted and answered with forged
//! data: a value the source never had, huge versions. If a node ever trusted the rogue,
//! the counts say so and the forged value would reach a client, where safety fails it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use peercache::proto::{self, peer_server::PeerServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::{Request, Response, Status};
use turmoil::net::{TcpListener, TcpStream};

use super::{FORGED_VERSION, RogueLog};
use crate::harness::db::value_of;
use crate::harness::tls::rogue_cert;

/// Serves the forged peer protocol on `listener` until the host stops.
pub async fn serve(listener: TcpListener, log: Arc<Mutex<RogueLog>>, value_size: usize) {
    let acceptor = TlsAcceptor::from(Arc::new(config()));
    let (tx, rx) = mpsc::channel(16);
    let counts = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, tx, log) = (acceptor.clone(), tx.clone(), counts.clone());
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(tls) => {
                        log.lock().unwrap().handshakes += 1;
                        let _ = tx.send(Ok::<_, io::Error>(Conn(tls))).await;
                    }
                    Err(_) => log.lock().unwrap().refused_handshakes += 1,
                }
            });
        }
    });
    let incoming =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let forged = Forged { log, value_size };
    let _ = tonic::transport::Server::builder()
        .add_service(PeerServer::new(forged))
        .serve_with_incoming(incoming)
        .await;
}

/// The rogue's server configuration: its certificate, no client authentication.
fn config() -> rustls::ServerConfig {
    let cert = rogue_cert();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the rogue's certificate parses");
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).expect("the rogue's key parses");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the rogue's certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// The peer protocol, forged: counts and lies.
#[derive(Clone)]
struct Forged {
    log: Arc<Mutex<RogueLog>>,
    value_size: usize,
}

impl Forged {
    fn received(&self) {
        self.log.lock().unwrap().requests += 1;
    }

    fn forged_many(&self, request: &proto::GetManyRequest) -> proto::GetManyResponse {
        let entries = (request.keys.iter())
            .map(|key| proto::GetManyEntry {
                result: Some(proto::get_many_entry::Result::Found(self.forged(key))),
            })
            .collect();
        proto::GetManyResponse { entries }
    }

    fn forged(&self, key: &str) -> proto::GetResponse {
        proto::GetResponse {
            value: value_of(key, FORGED_VERSION, self.value_size),
            version: FORGED_VERSION,
            expires_in_ms: 0,
            codec: proto::Codec::Identity as i32,
            hot: true,
        }
    }
}

#[tonic::async_trait]
impl proto::peer_server::Peer for Forged {
    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        self.received();
        Ok(Response::new(self.forged(&request.get_ref().key)))
    }

    async fn get_many(
        &self,
        request: Request<proto::GetManyRequest>,
    ) -> Result<Response<proto::GetManyResponse>, Status> {
        self.received();
        Ok(Response::new(self.forged_many(request.get_ref())))
    }

    type GetStreamStream = futures::stream::BoxStream<'static, Result<proto::GetManyReply, Status>>;

    /// Every call on the stream counted and answered with forged values.
    async fn get_stream(
        &self,
        request: Request<tonic::Streaming<proto::GetManyCall>>,
    ) -> Result<Response<Self::GetStreamStream>, Status> {
        use futures::StreamExt;
        self.received();
        let forged = self.clone();
        let replies = request.into_inner().map(move |call| {
            let call = call?;
            forged.received();
            let request = call.request.unwrap_or_default();
            Ok(proto::GetManyReply {
                id: call.id,
                result: Some(proto::get_many_reply::Result::Response(
                    forged.forged_many(&request),
                )),
            })
        });
        Ok(Response::new(replies.boxed()))
    }

    async fn set(
        &self,
        _: Request<proto::SetRequest>,
    ) -> Result<Response<proto::SetResponse>, Status> {
        self.received();
        Ok(Response::new(proto::SetResponse {
            version: FORGED_VERSION,
        }))
    }

    async fn remove(
        &self,
        _: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::RemoveResponse>, Status> {
        self.received();
        Ok(Response::new(proto::RemoveResponse {
            version: FORGED_VERSION,
        }))
    }

    async fn invalidate(
        &self,
        _: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        self.received();
        Ok(Response::new(proto::InvalidateResponse {}))
    }

    async fn peek(
        &self,
        request: Request<proto::PeekRequest>,
    ) -> Result<Response<proto::PeekResponse>, Status> {
        self.received();
        let key = &request.get_ref().key;
        Ok(Response::new(proto::PeekResponse {
            found: true,
            value: value_of(key, FORGED_VERSION, self.value_size),
            version: FORGED_VERSION,
            expires_in_ms: 0,
            codec: proto::Codec::Identity as i32,
        }))
    }

    async fn push(
        &self,
        request: Request<proto::PushRequest>,
    ) -> Result<Response<proto::PushResponse>, Status> {
        self.received();
        let accepted = request.get_ref().entries.len() as u32;
        Ok(Response::new(proto::PushResponse { accepted }))
    }
}

/// An accepted TLS connection, made acceptable to tonic's server.
struct Conn(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
