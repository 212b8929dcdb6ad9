//! peercache: a distributed read-through cache in the groupcache family.
//!
//! A node caches values per [`Group`] (a namespace). On a miss, the owner of the key
//! (by consistent hashing, [`Ring`]) loads it from the group's [`Loader`]; concurrent
//! misses share one load ([`singleflight`]). Stores are byte-bounded ([`store`]).
//!
//! The node reaches the world through seams, so the same code runs under a simulator:
//! the network through [`Net`], membership through [`Discovery`], the source through
//! [`Loader`], peers through [`peer::PeerClient`], and time through [`time`]
//! (`tokio::time`, which the simulator drives).
//!
//! Layers, each importing only those below it:
//!
//! ```text
//!  node ──► grpc, http, resp, group, discovery (servers, membership, shutdown)
//!  grpc ──► group, peer                       (tonic client and service)
//!  http, metrics ──► group, peer
//!  resp ──► group, peer, auth                 (the Redis protocol)
//!  group ──► store, ring, singleflight, time, loader, peer (the trait and picker)
//!  store, ring, singleflight, time, net, discovery, peer, auth, buggify (ground floor;
//!  auth: client tokens and roles, for any front; buggify: the simulator's hooks, empty
//!  without the `sim` feature)
//! ```
//!
//! ```
//! # use peercache::{LoaderFn, Registry, Result};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
//! let registry = Registry::new();
//! let users = registry
//!     .group("users")
//!     .capacity(1 << 20)
//!     .loader(LoaderFn(|key: String| async move { Ok(bytes::Bytes::from(format!("user {key}"))) }))
//!     .build()?;
//! assert_eq!(users.get("42").await?, "user 42");
//! assert_eq!(users.stats().loads, 1);
//! # Ok(()) }
//! ```

pub mod auth;
pub mod buggify;
pub mod codec;
pub mod discovery;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod grpc;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod net;
pub mod node;
pub mod peer;
pub mod proto;
pub mod resp;
pub mod ring;
pub mod singleflight;
pub mod source;
mod status;
pub mod store;
pub mod time;
pub mod tls;

pub use discovery::{Discovery, EtcdDiscovery, StaticDiscovery};
pub use error::{Error, Result};
pub use group::{
    Group, GroupBuilder, GroupStats, HotConfig, HotKey, HotKeyConfig, PolicyKind, Registry,
};
pub use loader::{Loader, LoaderFn};
pub use net::{Net, TokioNet};
pub use node::{Node, NodeConfig};
pub use ring::{Member, Ring};
