//! The `peercache` binary: `peercache serve` runs one node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use peercache::discovery::{EtcdCoordinator, LeasedConfig};
use peercache::net::Net;
use peercache::source::{OriginConfig, SourceSpec};
use peercache::{
    Discovery, EtcdDiscovery, Member, Node, NodeConfig, Registry, StaticDiscovery, TokioNet,
};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: allocation was about a tenth of a node's CPU
/// under load with glibc (`perf`); reports/hop-bench.md compares the two builds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod auth_flags;
mod etcd_flags;
mod flags;
mod resp_flags;
mod tls_flags;

use flags::{GroupSpec, PeerSpec};

#[derive(Parser)]
#[command(version, about = "A distributed read-through cache")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node: gRPC for peers, HTTP (and with --resp-addr the Redis protocol) for
    /// clients.
    Serve(Box<Serve>),
    /// Makes a CA and node certificates for mutual TLS between peers (a demo cluster).
    Certs(tls_flags::Certs),
}

#[derive(Args)]
struct Serve {
    /// Address the gRPC (peer) server binds, HOST:PORT.
    #[arg(long, env = "PEERCACHE_GRPC_ADDR", default_value = "127.0.0.1:7001")]
    grpc_addr: String,
    /// Address the HTTP API binds, HOST:PORT.
    #[arg(long, env = "PEERCACHE_HTTP_ADDR", default_value = "127.0.0.1:8001")]
    http_addr: String,
    /// gRPC address of every member, this node included, each with an optional weight
    /// (ADDR[=WEIGHT], comma separated; default weight 1): a static membership, the same
    /// list on every node. Without --peers or --etcd the node runs alone.
    #[arg(
        long,
        env = "PEERCACHE_PEERS",
        value_delimiter = ',',
        conflicts_with = "etcd"
    )]
    peers: Vec<PeerSpec>,
    /// etcd endpoints, http://HOST:PORT or https://HOST:PORT (comma separated):
    /// membership from etcd, each node registered under a lease it keeps alive.
    #[arg(long, env = "PEERCACHE_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    #[command(flatten)]
    etcd_access: etcd_flags::EtcdArgs,
    /// Key prefix of this cluster's member records in etcd.
    #[arg(
        long,
        env = "PEERCACHE_ETCD_PREFIX",
        default_value = "/peercache/default/"
    )]
    etcd_prefix: String,
    /// This node's id in etcd: unique in the cluster (default: the advertised address).
    #[arg(long, env = "PEERCACHE_NODE_ID", requires = "etcd")]
    node_id: Option<String>,
    /// Time to live of the node's etcd lease: a crashed node leaves the others' rings
    /// about this long after its last keep-alive (etcd grants whole seconds).
    #[arg(long, env = "PEERCACHE_LEASE_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// The address peers reach this node at, as written in --peers (default: --grpc-addr).
    #[arg(long, env = "PEERCACHE_ADVERTISE")]
    advertise: Option<String>,
    /// A group to serve, NAME[:CAPACITY] (repeatable; default capacity 64MiB).
    #[arg(
        long = "group",
        env = "PEERCACHE_GROUPS",
        value_delimiter = ',',
        required = true
    )]
    groups: Vec<GroupSpec>,
    /// Default time to live of entries (e.g. 300s, 5m).
    #[arg(long, env = "PEERCACHE_TTL", default_value = "300s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The loader: demo[:LATENCY_MS], http://origin/path/{key}, or none (a pure cache).
    #[arg(long, env = "PEERCACHE_SOURCE", default_value = "demo")]
    source: SourceSpec,
    /// Longest a request may take, peer call and load included.
    #[arg(long, env = "PEERCACHE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Remember a "not found" from the source on the key's owner for this long (e.g.
    /// 2s), so floods of missing keys do not reach the source; off when unset, as a
    /// source that gains a key without a write through the cache would look empty
    /// for that long. A write of the key ends it at once.
    #[arg(long, env = "PEERCACHE_NEGATIVE_TTL", value_parser = humantime::parse_duration)]
    negative_ttl: Option<Duration>,
    /// Longest a copy of another member's key is kept (the staleness bound when an
    /// invalidation is lost).
    #[arg(long, env = "PEERCACHE_HOT_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    hot_ttl: Duration,
    /// Longest a value loaded while its owner is suspected of being unreachable is kept
    /// (default: --hot-ttl). Longer (e.g. 1h) stops a dead member's keys from being
    /// loaded again every hot TTL, which with --peers goes on for as long as it is
    /// dead; the price: under a partition, a write its owner acknowledged without
    /// reaching this node may be missed that long. Copies are dropped when it answers.
    #[arg(long, env = "PEERCACHE_SUSPECT_COPY_TTL", value_parser = humantime::parse_duration)]
    suspect_copy_ttl: Option<Duration>,
    /// Share of values fetched from peers kept as hot copies at random, 0 to 1, on top
    /// of those fetched twice recently.
    #[arg(long, env = "PEERCACHE_HOT_FILL", default_value_t = 0.0)]
    hot_fill: f64,
    /// Keep a hot copy of a value fetched twice recently (off: only --hot-fill decides).
    #[arg(long, env = "PEERCACHE_HOT_SECOND_FETCH", default_value_t = true, action = clap::ArgAction::Set)]
    hot_second_fetch: bool,
    /// Hot-key detection at the owner: gets from peers are counted per window of this
    /// length, and a key above --hot-key-rate and --hot-key-share in a window is hot
    /// (listed at /v1/hotkeys; askers keep a copy at once). 0 turns it off.
    #[arg(long, env = "PEERCACHE_HOT_KEY_WINDOW", default_value = "500ms", value_parser = humantime::parse_duration)]
    hot_key_window: Duration,
    /// Compression of values: none, lz4, snappy, zstd[:LEVEL 1-22] or gzip[:LEVEL 0-9].
    /// Values of at least --compress-min bytes are kept compressed in every group's
    /// main and hot caches (the capacity then counts compressed bytes, so more keys
    /// fit; unless --compress-wire-only) and travel compressed between peers; a value the codec does not shrink is
    /// kept as it is. Clients receive the original bytes, or with gzip and zstd the
    /// compressed ones when their Accept-Encoding names the codec.
    #[arg(long, env = "PEERCACHE_COMPRESS", default_value = "none")]
    compress: peercache::codec::Codec,
    /// Values shorter than this stay uncompressed (e.g. 1KiB, 512).
    #[arg(long, env = "PEERCACHE_COMPRESS_MIN", default_value = "1KiB", value_parser = byte_size)]
    compress_min: usize,
    /// Keep values as they are in memory and compress them only on the wire, when
    /// answering a peer (the capacity then counts raw bytes; hits cost no
    /// decompression).
    #[arg(long, env = "PEERCACHE_COMPRESS_WIRE_ONLY")]
    compress_wire_only: bool,
    /// Budget of each group's cache of decoded values (the values with their stored
    /// frames and keys), kept beside the compressed ones so a hot key is not
    /// decompressed on every hit by a client that does not accept the codec (default:
    /// a sixteenth of the group's capacity; 0: none; unused with
    /// --compress-wire-only).
    #[arg(long, env = "PEERCACHE_COMPRESS_DECODED", value_parser = byte_size)]
    compress_decoded: Option<usize>,
    /// Least gets per second from peers for a key to be hot.
    #[arg(long, env = "PEERCACHE_HOT_KEY_RATE", default_value_t = 500.0)]
    hot_key_rate: f64,
    /// Least share (0 to 1) of the gets peers send this node for a key to be hot.
    #[arg(long, env = "PEERCACHE_HOT_KEY_SHARE", default_value_t = 0.01)]
    hot_key_share: f64,
    /// Weight of this node in the ring, 1 to 1000, announced in etcd (default 1). With
    /// --peers, weights are given in the list instead.
    #[arg(long, env = "PEERCACHE_WEIGHT", value_parser = flags::weight)]
    weight: Option<u32>,
    /// Redirects an HTTP origin may send before its answer counts (0: a redirect is a
    /// failed load, 502).
    #[arg(long, env = "PEERCACHE_ORIGIN_REDIRECTS", default_value_t = 0)]
    origin_redirects: usize,
    /// A PEM file of CA certificates to trust for an https origin, besides the bundled
    /// Mozilla roots.
    #[arg(long, env = "PEERCACHE_ORIGIN_CA")]
    origin_ca: Option<PathBuf>,
    /// Longest an HTTP client may take to send a request's headers, counted from the
    /// connection's start or the end of its previous response: also the idle timeout of
    /// keep-alive connections. The connection is closed when it passes.
    #[arg(long, env = "PEERCACHE_HTTP_HEADER_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    http_header_timeout: Duration,
    /// Longest an HTTP request's body may take to arrive; then the answer is 408.
    #[arg(long, env = "PEERCACHE_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    http_body_timeout: Duration,
    /// Longest a response may wait for an HTTP client to read it (no byte taken); then
    /// the connection is closed.
    #[arg(long, env = "PEERCACHE_HTTP_WRITE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    http_write_timeout: Duration,
    /// Most HTTP client connections open at once; a connection beyond it is closed as
    /// soon as it is accepted. Peer (gRPC) connections do not count.
    #[arg(long, env = "PEERCACHE_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_connections: u32,
    /// On SIGTERM, how long requests in flight may go on before their connections are
    /// dropped.
    #[arg(long, env = "PEERCACHE_SHUTDOWN_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// On SIGTERM, how long the node spends first pushing the entries it owns to their
    /// owners in the ring without it (most recently used first), before it leaves the
    /// membership; 0 pushes nothing.
    #[arg(long, env = "PEERCACHE_LEAVE_PUSH", default_value = "3s", value_parser = humantime::parse_duration)]
    leave_push: Duration,
    /// For how long after a membership change a key's new owner asks its previous
    /// owner for the entry (memory only, 25 ms at most) before loading it from the
    /// source; 0 never asks. Entries of keys that moved away wait this long to be asked
    /// for.
    #[arg(long, env = "PEERCACHE_HANDOFF_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    handoff_window: Duration,
    /// Most gets to one peer sent together in one call (GetMany) when they are ready
    /// at the same moment; 1 sends every get alone.
    #[arg(long, env = "PEERCACHE_PEER_BATCH", default_value_t = peercache::grpc::DEFAULT_BATCH_KEYS as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    peer_batch: u16,
    /// Most calls of gets out to one peer at once; a get that finds this many waits
    /// for one to end and goes with the gets that come meanwhile (more keys per call
    /// under load). 0: no limit.
    #[arg(long, env = "PEERCACHE_PEER_CALLS", default_value_t = peercache::grpc::DEFAULT_BATCH_CALLS as u16)]
    peer_calls: u16,
    /// Send gets to each peer on one long-lived stream (GetStream) rather than a call
    /// each; a peer without it is asked with calls. false: a call each.
    #[arg(long, env = "PEERCACHE_PEER_STREAM", default_value_t = true, action = clap::ArgAction::Set)]
    peer_stream: bool,
    /// Threads that run requests (the runtime's workers); default: one per CPU core.
    #[arg(long, env = "PEERCACHE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    #[command(flatten)]
    tls: tls_flags::TlsArgs,
    #[command(flatten)]
    auth: auth_flags::AuthArgs,
    #[command(flatten)]
    resp: resp_flags::RespArgs,
}

/// Reads the TLS material and the client tokens again on each SIGHUP, for ever, so
/// certificates and tokens rotate without a restart.
async fn reload_on_hangup(
    tls: tls_flags::Ports,
    auth_args: auth_flags::AuthArgs,
    auth: Option<peercache::http::ClientAuth>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot listen for SIGHUP: certificates and tokens will not be reloaded"
            );
            return std::future::pending().await;
        };
        while hangups.recv().await.is_some() {
            tls.reload();
            if let Some(auth) = &auth {
                auth_args.reload(auth);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (tls, auth_args, auth);
    std::future::pending().await
}

/// A duration above zero (e.g. 500ms, 30s).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command
        && let Some(n) = args.worker_threads
    {
        runtime.worker_threads(n.into());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Certs(certs) => certs.run(),
    }
}

async fn serve(args: Serve) -> anyhow::Result<()> {
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.grpc_addr.clone());
    let mut config = NodeConfig::new(advertise.clone());
    config.http = peercache::http::HttpLimits {
        header_timeout: args.http_header_timeout,
        body_timeout: args.http_body_timeout,
        write_timeout: args.http_write_timeout,
        max_connections: args.http_max_connections as usize,
    };
    config.shutdown_grace = args.shutdown_grace;
    config.leave_push = args.leave_push;
    config.handoff_window = args.handoff_window;
    config.coalescing = peercache::grpc::Coalescing {
        keys: usize::from(args.peer_batch),
        calls: usize::from(args.peer_calls),
        stream: args.peer_stream,
    };
    let tls = args.tls.load()?;
    tls.warn_if_open(&args.grpc_addr, &args.http_addr);
    config.peer_tls = tls.peer.clone();
    config.http_tls = tls.http.clone();
    config.auth = args.auth.client_auth()?;
    config.resp = args
        .resp
        .config(args.groups.iter().map(|g| g.name.clone()).collect())?;
    tokio::spawn(reload_on_hangup(
        tls,
        args.auth.clone(),
        config.auth.clone(),
    ));
    check_descriptors(config.http.max_connections);
    if !args.peers.is_empty() || !args.etcd.is_empty() {
        // Peers dial this address, and etcd records it for them.
        if let Err(e) = flags::dialable(&advertise) {
            bail!("this node's address {e}: set --advertise to the address peers reach it at");
        }
    }
    let discovery: Arc<dyn Discovery> = if args.etcd.is_empty() {
        Arc::new(static_discovery(&args, &advertise)?)
    } else {
        config.id = args.node_id.clone().unwrap_or_else(|| advertise.clone());
        config.weight = args.weight.unwrap_or(1);
        Arc::new(etcd_discovery(&args, &config.id).await?)
    };
    let groups = Registry::new();
    let origin = OriginConfig {
        redirects: args.origin_redirects,
        ca_file: args.origin_ca.clone(),
    };
    let loader = args.source.loader_with(&origin)?;
    for spec in &args.groups {
        let mut builder = groups
            .group(spec.name.clone())
            .ttl(args.ttl)
            .ttl_jitter(0.1)
            .timeout(args.timeout)
            .hot(peercache::HotConfig {
                ttl: args.hot_ttl,
                suspected_ttl: args.suspect_copy_ttl,
                fill_ratio: args.hot_fill,
                second_fetch: args.hot_second_fetch,
                ..Default::default()
            })
            .hot_keys(peercache::HotKeyConfig {
                window: args.hot_key_window,
                min_rate: args.hot_key_rate,
                min_share: args.hot_key_share,
                ..Default::default()
            })
            .loader_arc(loader.clone());
        if let Some(cap) = spec.capacity {
            builder = builder.capacity(cap);
        }
        if let Some(ttl) = args.negative_ttl {
            builder = builder.negative_ttl(ttl);
        }
        if args.compress != peercache::codec::Codec::Identity {
            builder = builder.compress(peercache::group::Compression {
                codec: args.compress,
                min: args.compress_min,
                wire_only: args.compress_wire_only,
                decoded: args.compress_decoded.map(|bytes| bytes as u64),
            });
        }
        builder.build()?;
    }
    let grpc = TokioNet
        .bind(&args.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", args.grpc_addr))?;
    let http = TokioNet
        .bind(&args.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", args.http_addr))?;
    let clients_tls = config.http_tls.is_some();
    let mut node = Node::new(TokioNet, groups, discovery, config);
    if let Some(addr) = &args.resp.resp_addr {
        if !tls_flags::loopback(addr) && !clients_tls {
            tracing::warn!(
                addr,
                "the Redis-protocol port is bound beyond loopback without TLS: set --http-tls-cert and --http-tls-key (Redis clients connect with TLS then, as HTTPS clients do) and --auth-file for tokens"
            );
        }
        let resp =
            (TokioNet.bind(addr).await).with_context(|| format!("binding RESP on {addr}"))?;
        node = node.with_resp(resp);
    }
    node.run(grpc, Some(http), shutdown_signal()).await?;
    Ok(())
}

/// The membership of `--peers`, weights included (alone without it).
fn static_discovery(args: &Serve, advertise: &str) -> anyhow::Result<StaticDiscovery> {
    if args.weight.is_some() {
        bail!(
            "--weight is announced through --etcd; with a static membership give each member's \
             weight in --peers as ADDR=WEIGHT, the same list on every node"
        );
    }
    if let Some(Err(e)) = args
        .peers
        .iter()
        .map(|p| flags::dialable(&p.addr))
        .find(Result::is_err)
    {
        bail!("--peers: {e}");
    }
    let peers = match args.peers.as_slice() {
        [] => vec![PeerSpec {
            addr: advertise.to_owned(),
            weight: 1,
        }],
        peers => peers.to_vec(),
    };
    if !peers.iter().any(|p| p.addr == advertise) {
        let list: Vec<&str> = peers.iter().map(|p| p.addr.as_str()).collect();
        bail!(
            "--peers ({}) must include this node's address {advertise} (set --advertise if it differs from --grpc-addr)",
            list.join(",")
        );
    }
    Ok(StaticDiscovery::with_members(
        peers.iter().map(Member::from),
    ))
}

/// File descriptors kept for what is not a client connection: peer connections, the
/// origin's, etcd's, listeners, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the open-file limit to its hard limit (as Go's runtime does), since each client
/// connection holds a descriptor, and warns if the connection limit would still let
/// clients take the descriptors that peers and the origin need.
fn check_descriptors(max_connections: usize) {
    let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) else {
        return;
    };
    let wanted = (max_connections as u64).saturating_add(RESERVED_DESCRIPTORS);
    if limit < wanted {
        tracing::warn!(
            open_files = limit,
            "--http-max-connections {max_connections} leaves fewer than {RESERVED_DESCRIPTORS} of the {limit} file descriptors this process may open for peers, the origin and etcd; raise `ulimit -n` to {wanted} or lower --http-max-connections"
        );
    }
}

/// Membership from the etcd cluster at `--etcd`, under `--etcd-prefix`.
async fn etcd_discovery(args: &Serve, id: &str) -> anyhow::Result<EtcdDiscovery> {
    if id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace) {
        bail!("--node-id {id:?}: must be non-empty, without '/' or spaces");
    }
    let mut prefix = args.etcd_prefix.clone();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    let etcd = EtcdCoordinator::connect(&args.etcd, args.etcd_access.config(&args.etcd)?).await?;
    // Tells this process's record from an earlier one's with the same id.
    let incarnation = peercache::time::incarnation();
    let config = LeasedConfig {
        prefix,
        lease_ttl: args.lease_ttl,
        incarnation,
        seed: incarnation,
        ..LeasedConfig::default()
    };
    Ok(EtcdDiscovery::new(Arc::new(etcd), config))
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A size in bytes such as 1KiB or 512.
fn byte_size(s: &str) -> Result<usize, String> {
    let bytes = parse_size::parse_size(s).map_err(|e| format!("{s:?}: {e}"))?;
    usize::try_from(bytes).map_err(|_| format!("{s:?} is too large"))
}
