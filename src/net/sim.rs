//! The network seam over turmoil's simulated TCP.

use std::io;
use std::net::SocketAddr;

use super::{Listener, Net, split_host_port};

/// Simulated TCP: every byte crosses turmoil's network, with its partitions, holds,
/// latency and loss. Use it only inside a turmoil host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNet;

impl Net for SimNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        let (host, port) = split_host_port(addr)?;
        turmoil::net::TcpListener::bind((host, port)).await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let (host, port) = split_host_port(addr)?;
        turmoil::net::TcpStream::connect((host, port)).await
    }
}

impl Listener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        turmoil::net::TcpListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        turmoil::net::TcpListener::local_addr(self)
    }
}
