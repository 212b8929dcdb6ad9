//! The HTTP origin: a GET of a URL made from a template and the key.
//!
//! The key goes in as one percent-encoded segment and the URL must come out of the URL
//! parser as written, so no key can climb the origin's path (`..`) or add a query. The
//! body is read as it streams and dropped at the group's value limit, redirects are not
//! followed unless allowed, and https runs on rustls with the Mozilla roots (plus a
//! private CA if given).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{StatusCode, Url};

use crate::error::{Error, Result};
use crate::loader::Loader;

/// Longest an HTTP origin may take to answer, body included.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a key's bytes become in the URL: all but RFC 3986's unreserved characters are
/// percent-encoded, `/ ? # @ :` and `%` included.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Stands for `{key}` while a template goes through the URL parser: lowercase
/// alphanumeric, so the parser leaves it as it is wherever it sits.
const MARK: &str = "peercachekey7f3a";

/// How the origin is reached, beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct OriginConfig {
    /// Redirects followed before a response counts; 0 (the default) makes a redirect a
    /// failed load, so the origin alone decides what is fetched.
    pub redirects: usize,
    /// A PEM file of CA certificates trusted for https besides the bundled Mozilla roots.
    pub ca_file: Option<PathBuf>,
}

/// An origin URL with `{key}` in its path or query, as the URL parser writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The text around each `{key}`.
    parts: Vec<String>,
}

impl Template {
    /// Checks `s`: an http or https URL with `{key}` in its path or query.
    pub fn parse(s: &str) -> Result<Self, String> {
        let holes = s.matches("{key}").count();
        if holes == 0 {
            return Err(format!("origin URL {s:?} has no {{key}} placeholder"));
        }
        let url =
            Url::parse(&s.replace("{key}", MARK)).map_err(|e| format!("origin URL {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("origin URL {s:?}: want http:// or https://"));
        }
        let in_authority = [url.username(), url.password().unwrap_or_default()]
            .into_iter()
            .chain(url.host_str())
            .any(|part| part.contains(MARK));
        if in_authority {
            return Err(format!(
                "origin URL {s:?}: {{key}} must be in the path or query"
            ));
        }
        let parts: Vec<String> = url.as_str().split(MARK).map(str::to_owned).collect();
        if parts.len() != holes + 1 {
            return Err(format!("origin URL {s:?}: the parser moved {{key}}"));
        }
        Ok(Template { parts })
    }

    /// The URL for `key`, or an error if the URL parser would not keep the key literal:
    /// a whole path segment `.` or `..` (in any spelling) is a step, never a name.
    fn url(&self, key: &str) -> Result<Url> {
        let encoded = utf8_percent_encode(key, KEY).to_string();
        let text = self.parts.join(&encoded);
        match Url::parse(&text) {
            Ok(url) if url.as_str() == text => Ok(url),
            _ => Err(Error::Invalid(format!(
                "key {key:?} cannot be sent to the origin: it is not one literal path segment"
            ))),
        }
    }
}

/// The loader of an origin.
pub(super) struct Origin {
    template: Template,
    client: reqwest::Client,
}

impl Origin {
    pub(super) fn new(template: Template, config: &OriginConfig) -> Result<Self> {
        let redirects = match config.redirects {
            0 => reqwest::redirect::Policy::none(),
            n => reqwest::redirect::Policy::limited(n),
        };
        let mut builder = reqwest::Client::builder()
            .timeout(ORIGIN_TIMEOUT)
            .redirect(redirects);
        if let Some(path) = &config.ca_file {
            let what = || format!("origin CA file {}", path.display());
            let pem = std::fs::read(path).map_err(|e| Error::Config(format!("{}: {e}", what())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("{}: {e}", what())))?;
            if certs.is_empty() {
                return Err(Error::Config(format!("{}: no PEM certificate", what())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("origin client: {e}")))?;
        Ok(Origin { template, client })
    }

    /// GETs `key`'s URL and reads at most `max_len` bytes of the body.
    async fn fetch(&self, key: &str, max_len: usize) -> Result<Bytes> {
        let url = self.template.url(key)?;
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| Error::load(format!("origin: {e}")))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(format!("origin has no {key:?}")));
        }
        if status.is_redirection() {
            let to = resp.headers().get(reqwest::header::LOCATION);
            let to = to.and_then(|v| v.to_str().ok()).unwrap_or("nowhere");
            return Err(Error::load(format!(
                "origin answered {status}, a redirect to {to}: redirects are not followed beyond the configured number"
            )));
        }
        if !status.is_success() {
            return Err(Error::load(format!("origin answered {status}")));
        }
        let too_large = || format!("exceeds the {max_len}-byte limit");
        let announced = resp.content_length().unwrap_or(0);
        if announced > max_len as u64 {
            return Err(Error::load(format!(
                "origin value is {announced} bytes: {}",
                too_large()
            )));
        }
        // Reads chunk by chunk; dropping the response mid-body closes the connection.
        let mut body = BytesMut::with_capacity(announced as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::load(format!("origin body: {e}")))?
        {
            if chunk.len() > max_len - body.len() {
                return Err(Error::load(format!("origin value {}", too_large())));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

#[async_trait]
impl Loader for Origin {
    async fn load(&self, key: &str) -> Result<Bytes> {
        self.fetch(key, usize::MAX).await
    }

    async fn load_within(&self, key: &str, max_len: usize) -> Result<Bytes> {
        self.fetch(key, max_len).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_keep_the_key_in_the_path_or_query() {
        let t = Template::parse("http://O:80/users/{key}/data?x={key}").unwrap();
        assert_eq!(
            t.url("a/b?c").unwrap().as_str(),
            "http://o/users/a%2Fb%3Fc/data?x=a%2Fb%3Fc"
        );
        assert_eq!(t.url("%2e%2e").unwrap().path(), "/users/%252e%252e/data");
        for key in [".", ".."] {
            assert!(matches!(t.url(key), Err(Error::Invalid(_))), "{key}");
        }
        // Not a whole segment, or in a query: no step.
        let t = Template::parse("http://o/v/{key}.json").unwrap();
        assert_eq!(t.url("..").unwrap().path(), "/v/...json");
        let t = Template::parse("https://o/v?k={key}").unwrap();
        assert_eq!(t.url("..").unwrap().query(), Some("k=.."));
        for bad in [
            "http://{key}.o/v",
            "http://u:{key}@o/v",
            "ftp://o/{key}",
            "http://o/v",
            "http://[/{key}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
