//! The network seam. It mirrors `tokio::net` (bind, accept, connect over byte streams) so
//! the node runs on real sockets ([`TokioNet`]) or inside the turmoil simulator
//! ([`SimNet`], feature `sim`) with the same gRPC and HTTP stacks on top.
//!
//! Addresses are `host:port` strings: real hosts resolve through the OS, simulated ones
//! through turmoil's DNS.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "sim")]
mod sim;
pub(crate) mod transport;

#[cfg(feature = "sim")]
pub use sim::SimNet;
pub use transport::ChannelTimeouts;

/// Binds listeners and dials connections.
pub trait Net: Clone + Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound listener yielding [`Net::Stream`]s.
    type Listener: Listener<Stream = Self::Stream>;

    /// Binds a listener on `addr` (`host:port`; port 0 lets the system choose).
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// A bound listener, like `tokio::net::TcpListener`.
pub trait Listener: Send + Sync + 'static {
    /// The streams it accepts.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Real TCP through tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNet;

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        // Peer RPCs are small request/response pairs: do not wait to coalesce them.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, from) = tokio::net::TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok((stream, from))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// Splits `host:port` (IPv6 hosts in brackets) for resolvers that want the parts.
#[cfg(any(feature = "sim", test))]
pub(crate) fn split_host_port(addr: &str) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad address {addr:?}, want host:port"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_parts() {
        assert_eq!(split_host_port("node1:7000").unwrap(), ("node1", 7000));
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1", 80));
        assert!(split_host_port("node1").is_err());
        assert!(split_host_port(":80").is_err());
        assert!(split_host_port("a:99999").is_err());
    }
}
