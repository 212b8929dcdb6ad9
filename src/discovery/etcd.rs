//! [`EtcdCoordinator`]: the [`Coordinator`] of an etcd cluster (v3 API, through
//! etcd-client), and [`EtcdDiscovery`], lease-backed membership kept in it.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use tonic::Code;

use super::LeasedDiscovery;
use super::etcd_access::{self, EtcdTls, EtcdUser};
use crate::discovery::{Coordinator, KeyValue, Lease, LeaseId, WatchEvent, WatchStream};
use crate::error::{Error, Result};

/// Membership kept in etcd: each node's record under `<prefix><node id>`, attached to a
/// lease it keeps alive, followed by a prefix watch.
pub type EtcdDiscovery = LeasedDiscovery<EtcdCoordinator>;

/// Timeouts of an [`EtcdCoordinator`], and how it proves itself to etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Longest wait for each call (and for a watch to be established).
    pub call_timeout: Duration,
    /// Longest wait for a connection to an endpoint.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval, so a connection that goes silent fails (and the watch
    /// over it with it) instead of hanging. etcd answers pings closer than its
    /// `--grpc-keepalive-min-time` (5 s by default) with GOAWAY "too_many_pings", and
    /// pings without an open stream likewise, so this stays well above it and pings are
    /// sent only while a call or the watch is open.
    pub keep_alive: Duration,
    /// How long a ping may go unanswered before the connection counts as dead.
    pub keep_alive_timeout: Duration,
    /// TLS, for `https` endpoints (which need it).
    pub tls: Option<EtcdTls>,
    /// The user to authenticate as, for an etcd with authentication enabled.
    pub user: Option<EtcdUser>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            call_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keep_alive: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            tls: None,
            user: None,
        }
    }
}

/// An open keep-alive stream of one lease.
struct Keeper {
    lease: LeaseId,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

/// A client of an etcd cluster. It connects on first use, spreads calls over the
/// endpoints, and reconnects after failures.
pub struct EtcdCoordinator {
    client: Client,
    call_timeout: Duration,
    /// Authenticated as on first use (a token etcd forgets, when it restarts, is
    /// renewed by etcd-client from then on).
    user: Option<EtcdUser>,
    authenticated: tokio::sync::OnceCell<()>,
    /// The keep-alive stream of the lease last kept alive, reused by its next
    /// keep-alive (a node keeps one lease at a time). Taken out while in use, so a call
    /// given up halfway cannot leave an answer behind for the next one.
    keeper: parking_lot::Mutex<Option<Keeper>>,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("call_timeout", &self.call_timeout)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl EtcdCoordinator {
    /// A client of the etcd cluster at `endpoints` (`http://host:port`, or
    /// `https://host:port` with [`EtcdConfig::tls`]). Nothing is dialled yet, nor the
    /// user authenticated: an etcd that is down is waited for by the calls, not here.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S], config: EtcdConfig) -> Result<Self> {
        let endpoints: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        etcd_access::check_endpoints(&endpoints, config.tls.as_ref())?;
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(config.keep_alive, config.keep_alive_timeout)
            .with_keep_alive_while_idle(false)
            .with_auto_token_refresh(true);
        let options = etcd_access::with_tls(options, config.tls.as_ref());
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| etcd_access::connect_error(&endpoints, e))?;
        Ok(EtcdCoordinator {
            client,
            call_timeout: config.call_timeout,
            user: config.user,
            authenticated: tokio::sync::OnceCell::new(),
            keeper: parking_lot::Mutex::new(None),
        })
    }

    /// The client, authenticated as the user if one is set. The first call to get
    /// through authenticates; a refusal is [`Error::Config`].
    async fn client(&self) -> Result<Client> {
        if let Some(user) = &self.user {
            let authenticate = async {
                let mut c = self.client.clone();
                // Credentials set here serve every clone of the client.
                (c.update_user(Some(user.credentials())).await)
                    .map_err(|e| etcd_access::authentication_error(user, e))
            };
            let once = self.authenticated.get_or_try_init(|| async {
                crate::time::within(self.call_timeout, authenticate).await?
            });
            once.await?;
        }
        Ok(self.client.clone())
    }

    /// An etcd-client call, given up after the call timeout.
    async fn call<T>(
        &self,
        f: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        crate::time::within(self.call_timeout, f)
            .await?
            .map_err(error)
    }

    /// One keep-alive over an open stream: the TTL etcd restarted the lease with, 0 if
    /// the lease is gone.
    async fn renew(k: &mut Keeper) -> Result<i64> {
        k.keeper.keep_alive().await.map_err(error)?;
        match k.stream.message().await.map_err(error)? {
            Some(resp) => Ok(resp.ttl()),
            None => Err(Error::Unavailable(
                "etcd: the keep-alive stream ended".into(),
            )),
        }
    }

    /// A keep-alive stream of `lease`; `None` if etcd does not know the lease.
    async fn open_keeper(&self, lease: LeaseId) -> Result<Option<Keeper>> {
        let mut c = self.client().await?;
        match c.lease_keep_alive(lease).await {
            Ok((keeper, stream)) => Ok(Some(Keeper {
                lease,
                keeper,
                stream,
            })),
            // etcd-client's reading of etcd answering the first keep-alive with TTL 0.
            Err(etcd_client::Error::LeaseKeepAliveError(why)) if why == "lease not found" => {
                Ok(None)
            }
            Err(e) => Err(error(e)),
        }
    }
}

/// The error an etcd-client error means: etcd's refusals keep their meaning; anything
/// about reaching etcd is `Unavailable`. Refusals of this client's rights (no user
/// given to an etcd that wants one, a user without rights to a key) are
/// [`Error::Config`]: waiting does not mend them.
pub(super) fn error(e: etcd_client::Error) -> Error {
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::NotFound => Error::NotFound(status.message().to_owned()),
            Code::PermissionDenied => Error::Config(format!("etcd: {}", status.message())),
            Code::InvalidArgument if status.message().contains("user name is empty") => {
                Error::Config(format!(
                    "etcd: {}: its authentication is enabled, so a user is needed",
                    status.message()
                ))
            }
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Error::Invalid(format!("etcd: {}", status.message()))
            }
            Code::DeadlineExceeded => Error::Timeout,
            _ => Error::Unavailable(format!("etcd: {status}")),
        },
        etcd_client::Error::InvalidArgs(why) => Error::Invalid(format!("etcd: {why}")),
        other => Error::Unavailable(format!("etcd: {other}")),
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

/// etcd counts TTLs in whole seconds: round up, at least one.
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Error::Unavailable("etcd: answer without a header".into()))
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        let mut c = self.client().await?;
        let resp = self.call(c.lease_grant(ttl_secs(ttl), None)).await?;
        Ok(Lease {
            id: resp.id(),
            ttl: secs(resp.ttl()),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>> {
        // The open stream of this lease, if any; a stream from before a restart of etcd
        // fails, and a fresh one answers.
        let cached = (self.keeper.lock().take()).filter(|k| k.lease == lease);
        let renewed = match cached {
            Some(mut k) => {
                match crate::time::within(self.call_timeout, Self::renew(&mut k)).await {
                    Ok(Ok(ttl)) => Some((k, ttl)),
                    _ => None,
                }
            }
            None => None,
        };
        let (k, ttl) = match renewed {
            Some(renewed) => renewed,
            None => {
                let opened = async {
                    let Some(mut k) = self.open_keeper(lease).await? else {
                        return Ok(None);
                    };
                    // Opening renewed the lease but hides etcd's answer; one more
                    // keep-alive tells the TTL.
                    let ttl = Self::renew(&mut k).await?;
                    Ok(Some((k, ttl)))
                };
                match crate::time::within(self.call_timeout, opened).await?? {
                    Some(opened) => opened,
                    None => return Ok(None),
                }
            }
        };
        if ttl <= 0 {
            return Ok(None);
        }
        *self.keeper.lock() = Some(k);
        Ok(Some(secs(ttl)))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        {
            let mut keeper = self.keeper.lock();
            if keeper.as_ref().is_some_and(|k| k.lease == lease) {
                *keeper = None;
            }
        }
        let mut c = self.client().await?;
        match self.call(c.lease_revoke(lease)).await {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Option<i64>> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut c = self.client().await?;
        let resp = self.call(c.txn(txn)).await?;
        let revision = revision(resp.header())?;
        Ok(resp.succeeded().then_some(revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        let mut c = self.client().await?;
        let options = PutOptions::new().with_lease(lease);
        let resp = self.call(c.put(key, value, Some(options))).await?;
        revision(resp.header())
    }

    async fn delete(&self, key: &str) -> Result<i64> {
        let mut c = self.client().await?;
        let resp = self.call(c.delete(key, None)).await?;
        revision(resp.header())
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let mut c = self.client().await?;
        let options = GetOptions::new().with_prefix();
        let resp = self.call(c.get(prefix, Some(options))).await?;
        let revision = revision(resp.header())?;
        Ok((resp.kvs().iter().map(key_value).collect(), revision))
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let mut c = self.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision);
        let stream = self.call(c.watch(prefix, Some(options))).await?;
        // The stream owns the request half too: dropping it would close the watch.
        let batches = futures::stream::unfold(Some(stream), |stream| async move {
            let mut stream = stream?;
            loop {
                let resp = match stream.message().await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        let ended = Error::Unavailable("etcd: the watch ended".into());
                        return Some((Err(ended), None));
                    }
                    Err(e) => return Some((Err(error(e)), None)),
                };
                if resp.compact_revision() > 0 {
                    let why = format!(
                        "compacted: etcd keeps revisions from {} on",
                        resp.compact_revision()
                    );
                    return Some((Err(Error::Invalid(why)), None));
                }
                if resp.canceled() {
                    let why = format!("etcd canceled the watch: {}", resp.cancel_reason());
                    return Some((Err(Error::Unavailable(why)), None));
                }
                let events: Vec<WatchEvent> = (resp.events().iter())
                    .filter_map(|event| {
                        let kv = event.kv()?;
                        Some(match event.event_type() {
                            EventType::Put => WatchEvent::Put(key_value(kv)),
                            EventType::Delete => WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                revision: kv.mod_revision(),
                            },
                        })
                    })
                    .collect();
                // The creation answer and progress notices carry no events.
                if !events.is_empty() {
                    return Some((Ok(events), Some(stream)));
                }
            }
        });
        Ok(batches.boxed())
    }
}
