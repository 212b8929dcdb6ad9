//! The RESP server: accepts clients on a [`Listener`] up to the connection limit and
//! serves each (connection.rs) until it closes or the node stops. On stop the listener
//! closes and each connection answers the commands it has read, then closes; whoever
//! runs the server bounds that wait and drops the future, which drops every
//! connection still open.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tokio_util::sync::CancellationToken;

use super::RespConfig;
use super::connection;
use super::frame::Limits;
use crate::error::{Error, Result};
use crate::group::{Group, Registry};
use crate::http::ClientAuth;
use crate::net::Listener;
use crate::net::transport::serve_clients;
use crate::peer::PeerPicker;
use crate::time::Instant;
use crate::tls::Tls;

/// What every connection of the server shares.
pub(super) struct Shared {
    /// The groups in database order.
    pub dbs: Vec<Group>,
    /// The database a connection starts on.
    pub default_db: usize,
    pub config: RespConfig,
    pub limits: Limits,
    /// Most bytes of input a connection may hold: one command at its largest.
    pub max_buffer: usize,
    pub auth: Option<ClientAuth>,
    /// False until the node has joined the membership; key commands wait for it.
    pub ready: Arc<AtomicBool>,
    pub picker: Arc<PeerPicker>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub started: Instant,
    pub counts: Counts,
}

/// The server's own counters, for INFO.
#[derive(Default)]
pub(super) struct Counts {
    pub connected: AtomicU64,
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub commands: AtomicU64,
}

/// What the node hands the RESP server.
pub(crate) struct Setup {
    pub groups: Registry,
    pub config: RespConfig,
    pub auth: Option<ClientAuth>,
    pub ready: Arc<AtomicBool>,
    pub picker: Arc<PeerPicker>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The clients' TLS (the HTTPS certificate): connections handshake first.
    pub tls: Option<Arc<Tls>>,
}

impl Shared {
    fn new(setup: Setup) -> Result<Shared> {
        let Setup {
            groups,
            config,
            auth,
            ready,
            picker,
            metrics,
            tls: _,
        } = setup;
        let dbs = if config.groups.is_empty() {
            groups.groups()
        } else {
            (config.groups.iter().map(|name| groups.get(name))).collect::<Result<Vec<_>>>()?
        };
        let default_db = match &config.default_group {
            None => 0,
            Some(name) => dbs.iter().position(|g| g.name() == name).ok_or_else(|| {
                Error::Config(format!("the RESP default group {name:?} is not served"))
            })?,
        };
        if dbs.is_empty() {
            return Err(Error::Config("RESP needs at least one group".into()));
        }
        // A bulk holds a key or a value; a command holds at most `max_args` of them,
        // but only one may be large (SET key value), and a few lines of headers.
        let max_bulk = (dbs.iter())
            .map(|g| {
                let (key, value) = g.limits();
                key.max(value)
            })
            .max()
            .expect("at least one group");
        let limits = Limits {
            max_bulk,
            max_array: config.max_args,
            max_inline: config.max_inline,
            max_depth: 1,
        };
        let max_buffer = max_bulk + config.max_inline.max(64 << 10);
        Ok(Shared {
            dbs,
            default_db,
            config,
            limits,
            max_buffer,
            auth,
            ready,
            picker,
            metrics,
            started: crate::time::now(),
            counts: Counts::default(),
        })
    }
}

/// Serves one connection on `stream` as the server would, then returns; for the fuzz
/// target, which drives a connection over an in-memory stream.
#[cfg(feature = "fuzzing")]
pub(crate) async fn serve_one<S>(stream: S, setup: Setup) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let shared = Shared::new(setup)?;
    connection::serve(stream, &shared, 1, CancellationToken::new()).await;
    Ok(())
}

/// Serves clients on `listener` until `stopped` completes, then closes the listener
/// and waits for the connections to answer what they have read. Dropping the future
/// drops every connection.
pub(crate) async fn serve<L: Listener>(
    listener: L,
    setup: Setup,
    stopped: impl Future<Output = ()>,
) -> Result<()> {
    let tls = setup.tls.clone();
    let shared = Arc::new(Shared::new(setup)?);
    let refused = |from| {
        shared.counts.refused.fetch_add(1, Relaxed);
        tracing::debug!(%from, "RESP connection limit reached; closing a new connection");
    };
    let serve = |stream, place, draining| {
        let id = shared.counts.connections.fetch_add(1, Relaxed) + 1;
        let (shared, tls) = (shared.clone(), tls.clone());
        async move {
            shared.counts.connected.fetch_add(1, Relaxed);
            secured(stream, tls.as_deref(), &shared, id, draining).await;
            shared.counts.connected.fetch_sub(1, Relaxed);
            drop(place);
        }
    };
    let max = shared.config.max_connections;
    serve_clients(listener, max, stopped, refused, serve).await;
    Ok(())
}

/// Serves one connection, after its TLS handshake when `tls` is set (a failed one is
/// counted with the client port's refusals and closes the connection).
async fn secured<S>(
    stream: S,
    tls: Option<&Tls>,
    shared: &Shared,
    id: u64,
    draining: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match Tls::accept_if(tls, stream).await {
        Ok(stream) => connection::serve(stream, shared, id, draining).await,
        Err(e) => tracing::debug!(error = %e, "RESP TLS handshake failed"),
    }
}
