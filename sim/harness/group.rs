//! The cache a simulated node (or a test on its own) runs: the library's registry with
//! one group, [`GROUP`], set up from a [`GroupSpec`]. The only place that makes a
//! registry.

use std::sync::Arc;
use std::time::Duration;

use peercache::group::Compression;
use peercache::{HotConfig, Loader, Registry};

/// The name of the one group every test uses.
pub const GROUP: &str = "g";

/// How the group is set up: its loader, and what differs from the library's defaults
/// (`None` keeps the default).
#[derive(Clone)]
pub struct GroupSpec {
    pub loader: Arc<dyn Loader>,
    /// Main cache bytes.
    pub capacity: Option<u64>,
    /// Time to live of main entries, and its jitter (a share of it).
    pub ttl: Option<(Duration, f64)>,
    /// How hot copies are kept.
    pub hot: Option<HotConfig>,
    /// The deadline of one request.
    pub timeout: Option<Duration>,
    /// Values kept compressed, and sent so between peers.
    pub compress: Option<Compression>,
}

impl GroupSpec {
    /// A group loading its misses from `loader`, with the library's defaults.
    pub fn new(loader: impl Loader) -> GroupSpec {
        GroupSpec {
            loader: Arc::new(loader),
            capacity: None,
            ttl: None,
            hot: None,
            timeout: None,
            compress: None,
        }
    }

    /// A registry on tokio's (simulated) clock, its randomness drawn from `seed`, holding
    /// the group.
    pub fn registry(&self, seed: u64) -> peercache::Result<Registry> {
        let registry = Registry::with_seed(seed);
        let mut group = registry.group(GROUP).loader_arc(self.loader.clone());
        if let Some(bytes) = self.capacity {
            group = group.capacity(bytes);
        }
        if let Some((ttl, jitter)) = self.ttl {
            group = group.ttl(ttl).ttl_jitter(jitter);
        }
        if let Some(hot) = self.hot {
            group = group.hot(hot);
        }
        if let Some(timeout) = self.timeout {
            group = group.timeout(timeout);
        }
        if let Some(how) = self.compress {
            group = group.compress(how);
        }
        group.build()?;
        Ok(registry)
    }
}
