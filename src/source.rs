//! The sources `peercache serve` can put behind its groups: a demo source, an HTTP
//! origin (origin.rs), or none (a pure cache).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::loader::Loader;

mod origin;

use origin::Origin;
pub use origin::{OriginConfig, Template};

/// A source as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `demo[:LATENCY_MS]`: a deterministic value per key after a fixed latency.
    Demo {
        /// Pretend load latency.
        latency: Duration,
    },
    /// `http[s]://origin/path/{key}`: fetches the URL with the key substituted.
    Http {
        /// The URL, containing `{key}` once or more in its path or query.
        template: Template,
    },
    /// `none`: misses are not found.
    None,
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(SourceSpec::None);
        }
        if s == "demo" {
            return Ok(SourceSpec::Demo {
                latency: Duration::ZERO,
            });
        }
        if let Some(ms) = s.strip_prefix("demo:") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("demo latency {ms:?} is not a number of milliseconds"))?;
            return Ok(SourceSpec::Demo {
                latency: Duration::from_millis(ms),
            });
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(SourceSpec::Http {
                template: Template::parse(s)?,
            });
        }
        Err(format!(
            "unknown source {s:?}: want demo[:LATENCY_MS], http://origin/path/{{key}} or none"
        ))
    }
}

impl SourceSpec {
    /// The loader this source stands for, an origin reached as `origin` says.
    pub fn loader_with(&self, origin: &OriginConfig) -> Result<Arc<dyn Loader>> {
        Ok(match self {
            SourceSpec::Demo { latency } => Arc::new(Demo { latency: *latency }),
            SourceSpec::Http { template } => Arc::new(Origin::new(template.clone(), origin)?),
            SourceSpec::None => Arc::new(NoSource),
        })
    }

    /// The loader this source stands for, an origin reached with the defaults.
    pub fn loader(&self) -> Arc<dyn Loader> {
        self.loader_with(&OriginConfig::default())
            .expect("an origin client without a CA file builds")
    }
}

/// The demo value of `key`: the same on every node and every run.
pub fn demo_value(key: &str) -> Bytes {
    let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    Bytes::from(format!("value of {key} ({h:016x})"))
}

struct Demo {
    latency: Duration,
}

#[async_trait]
impl Loader for Demo {
    async fn load(&self, key: &str) -> Result<Bytes> {
        if !self.latency.is_zero() {
            crate::time::sleep(self.latency).await;
        }
        Ok(demo_value(key))
    }
}

struct NoSource;

#[async_trait]
impl Loader for NoSource {
    async fn load(&self, key: &str) -> Result<Bytes> {
        Err(Error::NotFound(format!(
            "{key:?} is not cached and this node has no source"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("none".parse(), Ok(SourceSpec::None));
        assert_eq!(
            "demo".parse(),
            Ok(SourceSpec::Demo {
                latency: Duration::ZERO
            })
        );
        assert_eq!(
            "demo:5".parse(),
            Ok(SourceSpec::Demo {
                latency: Duration::from_millis(5)
            })
        );
        let http: SourceSpec = "http://127.0.0.1:9/v/{key}".parse().unwrap();
        assert!(matches!(http, SourceSpec::Http { .. }));
        for bad in [
            "demo:x",
            "http://h/no-placeholder",
            "https://{key}/v",
            "ftp://x/{key}",
            "db",
        ] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn demo_values_are_stable_and_distinct() {
        assert_eq!(demo_value("a"), demo_value("a"));
        assert_ne!(demo_value("a"), demo_value("b"));
    }
}
