//! The HTTP API through the real router: method, path and query, headers and body from
//! the input. Rule: no panic, and no 5xx but the load failures the API documents (502
//! bad gateway, 503 unavailable or joining, 504 timeout).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use tower::ServiceExt;

use super::{GroupName, Key, block_on, decode, node};
use crate::metrics::Metrics;

#[derive(Debug, Arbitrary)]
struct Input {
    method: Verb,
    route: Route,
    /// After a `?` when present: structured pairs or raw bytes.
    query: Option<Query>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// False: the node has not joined yet.
    ready: bool,
}

#[derive(Debug, Arbitrary)]
enum Verb {
    Get,
    Put,
    Delete,
    Post,
    Head,
    Options,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Route {
    Api,
    /// `/v1/groups/{group}/keys/{key}`, both percent-encoded or not.
    Key {
        group: GroupName,
        key: Key,
        encode: bool,
    },
    Keys(GroupName),
    Stats,
    Ring,
    Healthz,
    Metrics,
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Query {
    Pairs(Vec<(Field, Value)>),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Field {
    Group,
    Key,
    Ttl,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Group(GroupName),
    Key(Key),
    /// A TTL such as `30s`: a number and a unit.
    Ttl(u64, String),
    Raw(String),
}

/// Percent-encodes everything but unreserved characters, as a client library would.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn component(text: &str, encode: bool) -> Vec<u8> {
    if encode {
        percent_encoding::utf8_percent_encode(text, COMPONENT)
            .to_string()
            .into_bytes()
    } else {
        text.as_bytes().to_vec()
    }
}

impl Input {
    fn path_and_query(&self) -> Vec<u8> {
        let mut out = match &self.route {
            Route::Api => b"/api".to_vec(),
            Route::Key { group, key, encode } => {
                let mut p = b"/v1/groups/".to_vec();
                p.extend(component(group.name(), *encode));
                p.extend(b"/keys/");
                p.extend(component(&key.text(), *encode));
                p
            }
            Route::Keys(group) => [b"/v1/groups/", group.name().as_bytes(), b"/keys/"].concat(),
            Route::Stats => b"/v1/stats".to_vec(),
            Route::Ring => b"/v1/ring".to_vec(),
            Route::Healthz => b"/healthz".to_vec(),
            Route::Metrics => b"/metrics".to_vec(),
            Route::Raw(bytes) => bytes.clone(),
        };
        match &self.query {
            None => {}
            Some(Query::Raw(bytes)) => {
                out.push(b'?');
                out.extend(bytes);
            }
            Some(Query::Pairs(pairs)) => {
                out.push(b'?');
                for (i, (field, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(b'&');
                    }
                    let field = match field {
                        Field::Group => "group",
                        Field::Key => "key",
                        Field::Ttl => "ttl",
                        Field::Other(s) => s,
                    };
                    let value = match value {
                        Value::Group(g) => g.name().to_owned(),
                        Value::Key(k) => k.text(),
                        Value::Ttl(n, unit) => format!("{n}{unit}"),
                        Value::Raw(s) => s.clone(),
                    };
                    out.extend(component(field, true));
                    out.push(b'=');
                    out.extend(component(&value, true));
                }
            }
        }
        out
    }

    /// The request, or `None` when its parts are not valid HTTP (hyper refuses those
    /// before any route sees them).
    fn request(self) -> Option<Request<Body>> {
        let method = match &self.method {
            Verb::Get => Method::GET,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
            Verb::Post => Method::POST,
            Verb::Head => Method::HEAD,
            Verb::Options => Method::OPTIONS,
            Verb::Other(s) => Method::from_bytes(s.as_bytes()).ok()?,
        };
        let uri = Uri::try_from(self.path_and_query()).ok()?;
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(value).ok()?;
            req = req.header(name, value);
        }
        req.body(Body::from(self.body)).ok()
    }
}

/// One request from `data` through the router of a fresh node.
pub fn http(data: &[u8]) {
    let Some(input) = decode::<Input>(data) else {
        return;
    };
    let ready = input.ready;
    let Some(req) = input.request() else {
        return;
    };
    let (groups, picker) = node();
    let app = crate::http::router(crate::http::State {
        metrics: Arc::new(Metrics::new(groups.clone())),
        groups,
        picker,
        ready: Arc::new(AtomicBool::new(ready)),
        auth: None,
    });
    block_on(async move {
        let resp = app.oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a response body reads to its end");
        let documented = [
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ];
        assert!(
            !status.is_server_error() || documented.contains(&status),
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    });
}
