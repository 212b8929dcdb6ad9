//! The HTTP API (axum): reads and writes of keys, stats, ring, health and metrics.
//! Handlers are thin: decode, call the group, encode. Every error is a JSON body with a
//! 4xx/5xx status; nothing a client sends can panic the node. The server under it, with
//! its connection limit and timeouts, is in http/server.rs; client authentication, which
//! runs before any handler, in http/auth.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::group::Registry;
use crate::metrics::Metrics;
use crate::peer::PeerPicker;

mod auth;
mod body;
mod encoding;
pub(crate) mod server;
mod write_stall;

pub use auth::ClientAuth;
pub use server::HttpLimits;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    /// The node's groups.
    pub groups: Registry,
    /// Membership, for `/v1/ring` and the node's id.
    pub picker: Arc<PeerPicker>,
    /// Where request latencies go and `/metrics` reads from.
    pub metrics: Arc<Metrics>,
    /// False until the node has joined the membership: until then reads, writes and
    /// `/healthz` answer 503, so a load balancer or client tries another node.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Client authentication; without it the API is open.
    pub auth: Option<ClientAuth>,
}

/// The handlers' state, shared: one reference count per request rather than one per
/// field.
type AppState = axum::extract::State<Arc<State>>;

/// The API's routes over `state`.
pub fn router(state: State) -> Router {
    let state = Arc::new(state);
    let routes = Router::new()
        .route("/api", get(api_get))
        .route(
            "/v1/groups/{group}/keys/{key}",
            get(key_get).put(key_put).delete(key_delete),
        )
        .route(
            "/v1/groups/{group}/keys/",
            get(empty_key).put(empty_key).delete(empty_key),
        )
        .route("/v1/groups/{group}/mget", post(mget))
        .route("/v1/stats", get(stats))
        .route("/v1/ring", get(ring))
        .route("/v1/hotkeys", get(hot_keys))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        // PUT reads its body with the group's own limit instead.
        .layer(DefaultBodyLimit::disable());
    // Without client authentication there is nothing to check: no layer to pass.
    let routes = match state.auth {
        Some(_) => routes.layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        )),
        None => routes,
    };
    routes
        .layer(middleware::from_fn_with_state(state.clone(), timed))
        .with_state(state)
}

/// An error response: a status and a JSON body `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::EmptyKey | Error::Config(_) | Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::KeyTooLong { .. } => StatusCode::URI_TOO_LONG,
            Error::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnknownGroup(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::GroupExists(_) => StatusCode::CONFLICT,
            Error::Load(_) => StatusCode::BAD_GATEWAY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
struct ApiParams {
    group: Option<String>,
    key: Option<String>,
}

/// `GET /api?group=G&key=K`: the value in a JSON envelope (base64 when not UTF-8).
async fn api_get(
    axum::extract::State(s): AppState,
    params: Result<Query<ApiParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (Some(group), Some(key)) = (params.group, params.key) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query parameters `group` and `key` are required",
        ));
    };
    let value = s.groups.get(&group)?.get(&key).await?;
    let mut body = json!({ "group": group, "key": key });
    put_value(&mut body, &value);
    Ok(Json(body))
}

type KeyPath = Result<Path<(String, String)>, axum::extract::rejection::PathRejection>;

fn key_path(path: KeyPath) -> ApiResult<(String, String)> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// `GET /v1/groups/{group}/keys/{key}`: the raw value; or, for a client whose
/// `Accept-Encoding` names gzip or zstd, the value compressed so when the node holds
/// or receives it that way (http/encoding.rs).
async fn key_get(
    axum::extract::State(s): AppState,
    path: KeyPath,
    // The request itself rather than a copy of its headers (axum's `HeaderMap`).
    req: Request,
) -> ApiResult<Response> {
    let (group, key) = key_path(path)?;
    let group = s.groups.get(&group)?;
    let accept = encoding::accepted(req.headers(), group.limits().1);
    let (value, codec) = group.get_as(&key, &accept).await?;
    let octets = (header::CONTENT_TYPE, "application/octet-stream");
    let vary = (header::VARY, "accept-encoding");
    Ok(match codec.content_coding() {
        Some(coding) => ([octets, vary, (header::CONTENT_ENCODING, coding)], value).into_response(),
        None => ([octets, vary], value).into_response(),
    })
}

#[derive(Deserialize)]
struct PutParams {
    ttl: Option<String>,
}

/// `PUT /v1/groups/{group}/keys/{key}?ttl=30s`: stores the body; answers the version.
/// A body longer than the group's value limit is refused from its announced length
/// before it is read, or as soon as it grows past the limit (413); one that arrives too
/// slowly is 408, one cut short 400.
async fn key_put(
    axum::extract::State(s): AppState,
    path: KeyPath,
    params: Result<Query<PutParams>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
    let (group, key) = key_path(path)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let ttl = params.ttl.as_deref().map(parse_ttl).transpose()?;
    let group = s.groups.get(&group)?;
    let (_, max) = group.limits();
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = announced.filter(|&len| len > max as u64) {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        return Err(Error::ValueTooLarge { len, max }.into());
    }
    let body = axum::body::to_bytes(body, max.saturating_add(1))
        .await
        .map_err(|e| {
            let (status, msg) = body::read_failure(&e, max);
            ApiError::new(status, msg)
        })?;
    let version = group.set(&key, body, ttl).await?;
    Ok(Json(json!({ "version": version })))
}

/// `DELETE /v1/groups/{group}/keys/{key}`: removes the key; answers the version.
async fn key_delete(axum::extract::State(s): AppState, path: KeyPath) -> ApiResult<Json<Value>> {
    let (group, key) = key_path(path)?;
    let version = s.groups.get(&group)?.remove(&key).await?;
    Ok(Json(json!({ "version": version })))
}

/// Most keys in one mget.
pub const MAX_MGET_KEYS: usize = 1024;
/// Most bytes of an mget request body.
const MAX_MGET_BODY: usize = 2 << 20;
/// Most value bytes in one mget answer; the keys after that are answered 413 each (ask
/// for them again).
const MAX_MGET_VALUES: usize = 32 << 20;

#[derive(Deserialize)]
struct MgetRequest {
    keys: Vec<String>,
}

/// `POST /v1/groups/{group}/mget` with `{"keys": [...]}`: every key's value as a single
/// get would answer it, in order (`Group::get_many`: one call per owner). JSON by
/// default: `{"results": [{"key", "value"[, "encoding": "base64"]} or {"key", "error",
/// "status"}]}`; with `Accept: application/x-protobuf`, the binary form: a
/// `peercache.v1.GetManyResponse` (proto/peercache/v1/peer.proto) whose entries carry
/// the value (`found.value`, other fields zero) or the error (`kind`, `message`).
async fn mget(
    axum::extract::State(s): AppState,
    Path(group): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let group = s.groups.get(&group)?;
    let body = axum::body::to_bytes(body, MAX_MGET_BODY)
        .await
        .map_err(|e| {
            let (status, msg) = body::read_failure(&e, MAX_MGET_BODY);
            ApiError::new(status, msg)
        })?;
    let MgetRequest { keys } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"keys\": [\"key\", ...]}}: {e}"),
        )
    })?;
    if keys.len() > MAX_MGET_KEYS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} keys; at most {MAX_MGET_KEYS} in one mget", keys.len()),
        ));
    }
    let mut results = group.get_many(&keys).await;
    let mut total = 0usize;
    for result in &mut results {
        if let Ok(value) = result {
            total = total.saturating_add(value.len());
            if total > MAX_MGET_VALUES {
                *result = Err(Error::ValueTooLarge {
                    len: total,
                    max: MAX_MGET_VALUES,
                });
            }
        }
    }
    let binary = (headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
        .is_some_and(|accept| accept.contains("application/x-protobuf"));
    if binary {
        let entries = results.into_iter().map(mget_entry).collect();
        let answer = prost::Message::encode_to_vec(&crate::proto::GetManyResponse { entries });
        return Ok(([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response());
    }
    let results: Vec<Value> = (keys.into_iter().zip(results))
        .map(|(key, result)| match result {
            Ok(value) => {
                let mut entry = json!({ "key": key });
                put_value(&mut entry, &value);
                entry
            }
            Err(e) => {
                let ApiError(status, error) = e.into();
                json!({ "key": key, "error": error, "status": status.as_u16() })
            }
        })
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// One key's answer in the binary form of an mget.
fn mget_entry(result: crate::error::Result<bytes::Bytes>) -> crate::proto::GetManyEntry {
    use crate::proto::get_many_entry::Result as Entry;
    let entry = match result {
        Ok(value) => Entry::Found(crate::proto::GetResponse {
            value,
            ..Default::default()
        }),
        Err(e) => {
            let (kind, message) = crate::status::parts(&e);
            Entry::Error(crate::proto::KeyError { kind, message })
        }
    };
    crate::proto::GetManyEntry {
        result: Some(entry),
    }
}

/// Puts `value` in a JSON object as `"value"`: text as it is, other bytes in base64
/// with `"encoding": "base64"`.
fn put_value(body: &mut Value, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(text) => body["value"] = text.into(),
        Err(_) => {
            body["value"] = base64::engine::general_purpose::STANDARD
                .encode(value)
                .into();
            body["encoding"] = "base64".into();
        }
    }
}

async fn empty_key() -> ApiError {
    Error::EmptyKey.into()
}

fn parse_ttl(text: &str) -> ApiResult<Duration> {
    match humantime::parse_duration(text) {
        Ok(ttl) if !ttl.is_zero() => Ok(ttl),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ttl must be positive",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("ttl {text:?}: {e}"),
        )),
    }
}

/// `GET /v1/stats`: every group's counters, the requests refused for their token (by
/// reason) when clients authenticate, and the TLS handshake counts of each port with TLS.
async fn stats(axum::extract::State(s): AppState) -> Json<Value> {
    let groups: BTreeMap<String, Value> = s
        .groups
        .groups()
        .iter()
        .map(|g| (g.name().to_owned(), json!(g.stats())))
        .collect();
    // Members suspected of being unreachable, with the seconds their suspicion has left.
    let suspected: BTreeMap<String, f64> = (s.picker.suspected().into_iter())
        .map(|(id, left)| (id, left.as_secs_f64()))
        .collect();
    let mut body = json!({ "node": s.picker.self_id(), "groups": groups, "suspected": suspected });
    if s.auth.is_some() {
        body["auth_refusals"] = json!(s.metrics.auth_refusals());
    }
    let tls = s.metrics.tls_counts();
    if !tls.is_empty() {
        body["tls"] = json!(tls);
    }
    Json(body)
}

/// `GET /v1/hotkeys`: per group, the keys peers ask this node (their owner) for most
/// that are hot now: key, estimated gets per second, and since when (seconds since the
/// group started).
async fn hot_keys(axum::extract::State(s): AppState) -> Json<Value> {
    let groups: BTreeMap<String, Value> = (s.groups.groups().iter())
        .map(|g| (g.name().to_owned(), json!(g.hot_keys())))
        .collect();
    Json(json!({ "node": s.picker.self_id(), "groups": groups }))
}

/// `GET /v1/ring`: the members this node sees, with their vnode counts.
async fn ring(axum::extract::State(s): AppState) -> Json<Value> {
    let view = s.picker.view();
    let members: Vec<Value> = view
        .ring
        .members()
        .iter()
        .map(|m| json!({ "id": m.id, "address": m.addr, "weight": m.weight, "vnodes": view.ring.points_of(&m.id) }))
        .collect();
    Json(
        json!({ "node": s.picker.self_id(), "vnodes_per_weight": view.ring.vnodes(), "members": members }),
    )
}

/// `GET /metrics`: Prometheus text.
async fn metrics(axum::extract::State(s): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Times every request into the latency histogram, by route and status.
async fn timed(
    axum::extract::State(s): AppState,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let op = operation(req.method(), matched.as_ref().map(MatchedPath::as_str));
    let started = crate::time::now();
    let joining = !s.ready.load(std::sync::atomic::Ordering::Acquire);
    let resp = if joining
        && matches!(
            op,
            "api_get" | "get" | "mget" | "set" | "remove" | "healthz"
        ) {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is joining the cluster",
        )
        .into_response()
    } else {
        next.run(req).await
    };
    s.metrics
        .observe_request(op, resp.status().as_u16(), started.elapsed());
    resp
}

fn operation(method: &axum::http::Method, route: Option<&str>) -> &'static str {
    use axum::http::Method;
    match (route, method) {
        (Some("/api"), _) => "api_get",
        (Some("/v1/groups/{group}/keys/{key}"), &Method::GET) => "get",
        (Some("/v1/groups/{group}/keys/{key}"), &Method::PUT) => "set",
        (Some("/v1/groups/{group}/keys/{key}"), &Method::DELETE) => "remove",
        (Some("/v1/groups/{group}/mget"), _) => "mget",
        (Some("/v1/stats"), _) => "stats",
        (Some("/v1/ring"), _) => "ring",
        (Some("/metrics"), _) => "metrics",
        (Some("/healthz"), _) => "healthz",
        _ => "other",
    }
}
