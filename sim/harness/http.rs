//! Talking HTTP to the nodes from a simulated client: one exchange per fresh connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use turmoil::net::TcpStream;

use super::BoxError;
use super::group::GROUP;
use super::node::HTTP_PORT;

/// One HTTP/1.1 exchange with `host`, on a fresh simulated connection.
pub async fn call(
    host: &str,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<(StatusCode, Bytes), BoxError> {
    let stream = TcpStream::connect((host, HTTP_PORT)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let exchange = async move {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .body(Full::new(body.into()))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Result::<_, BoxError>::Ok((status, body))
    };
    // The connection is driven here, not spawned: a timed-out call leaves nothing behind.
    tokio::pin!(exchange, conn);
    tokio::select! {
        r = &mut exchange => r,
        c = &mut conn => match c {
            Err(e) => Err(e.into()),
            Ok(()) => exchange.await,
        },
    }
}

/// The path of `key` in the group.
pub fn key_path(key: &str) -> String {
    format!("/v1/groups/{GROUP}/keys/{key}")
}
