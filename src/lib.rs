//! peercache: a distributed read-through cache in the groupcache family.
//!
//! A node caches values per [`Group`] (a namespace). On a miss, the owner of the key
//! (by consistent hashing, [`Ring`]) loads it from the group's [`Loader`]; concurrent
//! misses share one load ([`singleflight`]). Stores are byte-bounded ([`store`]).
//!
//! Time comes only through the [`Clock`] seam, so the same code runs under a simulator.
//!
//! ```
//! # use std::sync::Arc;
//! # use peercache::{LoaderFn, Registry, Result, TokioClock};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
//! let registry = Registry::new(Arc::new(TokioClock::new()));
//! let users = registry
//!     .group("users")
//!     .capacity(1 << 20)
//!     .loader(LoaderFn(|key: String| async move { Ok(bytes::Bytes::from(format!("user {key}"))) }))
//!     .build()?;
//! assert_eq!(users.get("42").await?, "user 42");
//! assert_eq!(users.stats().loads, 1);
//! # Ok(()) }
//! ```

pub mod clock;
pub mod discovery;
mod error;
pub mod group;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod net;
pub mod node;
pub mod peer;
pub mod proto;
pub mod ring;
pub mod singleflight;
pub mod source;
pub mod store;

pub use clock::{Clock, ManualClock, TokioClock};
pub use discovery::{Discovery, EtcdDiscovery, StaticDiscovery};
pub use error::{Error, Result};
pub use group::{Group, GroupBuilder, GroupStats, HotConfig, PolicyKind, Registry};
pub use loader::{Loader, LoaderFn};
pub use net::{Net, TokioNet};
pub use node::{Node, NodeConfig};
pub use ring::{Member, Ring};
