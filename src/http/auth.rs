//! The HTTP API's client authentication: `Authorization: Bearer TOKEN` checked against
//! the node's [`Tokens`] before any handler runs, so a refused request learns nothing of
//! the groups, keys or routes behind it (the same 401 everywhere).
//!
//! What each route needs:
//!
//! | route | action |
//! |---|---|
//! | `/healthz` | none: always open |
//! | `/metrics` | none, or admin with [`ClientAuth::protect_metrics`] |
//! | `GET /v1/groups/{g}/keys/{k}`, `GET /api`, `POST /v1/groups/{g}/mget` | read |
//! | `PUT`, `DELETE /v1/groups/{g}/keys/{k}` | write |
//! | `/v1/stats`, `/v1/ring`, and any route not named here | admin |
//! | no such route | read: a valid token of any role, which then gets 404 |
//!
//! No token, or a wrong one, is 401 with `WWW-Authenticate: Bearer`; a valid token whose
//! role does not permit the request is 403. Both are counted in the metrics.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use arc_swap::ArcSwap;

use super::{ApiError, AppState};
use crate::auth::{Action, Refusal, Tokens};

/// Client authentication of the HTTP API.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The tokens and their roles; replaced whole when the token file is read again.
    pub tokens: Arc<ArcSwap<Tokens>>,
    /// Whether `/metrics` needs an admin token; it is open otherwise, like `/healthz`.
    pub protect_metrics: bool,
}

/// Lets the request through to its handler, or refuses it (401, 403).
pub(super) async fn authorize(
    axum::extract::State(s): AppState,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let Some(auth) = &s.auth else {
        return next.run(req).await;
    };
    let route = matched.as_ref().map(MatchedPath::as_str);
    let Some(action) = required(req.method(), route, auth.protect_metrics) else {
        return next.run(req).await;
    };
    match auth.tokens.load().authorize(bearer(req.headers()), action) {
        Ok(_) => next.run(req).await,
        Err(refusal) => {
            s.metrics.auth_refused(refusal);
            refused(refusal, action)
        }
    }
}

/// The action a request on `route` (None: no route matched) needs, if any.
fn required(method: &Method, route: Option<&str>, protect_metrics: bool) -> Option<Action> {
    let reads = method == Method::GET || method == Method::HEAD;
    match route {
        Some("/healthz") => None,
        Some("/metrics") => protect_metrics.then_some(Action::Admin),
        Some("/api") if reads => Some(Action::Read),
        Some("/v1/groups/{group}/mget") => Some(Action::Read),
        Some("/v1/groups/{group}/keys/{key}" | "/v1/groups/{group}/keys/") => {
            Some(if reads { Action::Read } else { Action::Write })
        }
        None => Some(Action::Read),
        // Stats, ring, and whatever is added later without a line here.
        Some(_) => Some(Action::Admin),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case); an
/// empty one for any other credentials, which no token matches; None without the header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let token = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => &[],
    };
    Some(token)
}

fn refused(refusal: Refusal, action: Action) -> Response {
    let (status, msg) = match refusal {
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            "a bearer token is required".to_owned(),
        ),
        Refusal::Invalid => (
            StatusCode::UNAUTHORIZED,
            "the bearer token is not valid".to_owned(),
        ),
        Refusal::Forbidden => (
            StatusCode::FORBIDDEN,
            format!(
                "this request needs a token of the {} role",
                action.least_role().as_str()
            ),
        ),
    };
    let mut resp = ApiError::new(status, msg).into_response();
    if refusal.is_unauthorized() {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"peercache\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_the_table_says() {
        let (get, put, delete, post) = (Method::GET, Method::PUT, Method::DELETE, Method::POST);
        let key = Some("/v1/groups/{group}/keys/{key}");
        let need = |m: &Method, route: Option<&str>| required(m, route, false);
        assert_eq!(need(&get, Some("/healthz")), None);
        assert_eq!(need(&get, Some("/metrics")), None);
        assert_eq!(required(&get, Some("/metrics"), true), Some(Action::Admin));
        assert_eq!(need(&get, key), Some(Action::Read));
        assert_eq!(need(&Method::HEAD, key), Some(Action::Read));
        assert_eq!(need(&put, key), Some(Action::Write));
        assert_eq!(need(&delete, key), Some(Action::Write));
        assert_eq!(need(&post, key), Some(Action::Write));
        assert_eq!(need(&get, Some("/api")), Some(Action::Read));
        let mget = Some("/v1/groups/{group}/mget");
        assert_eq!(need(&post, mget), Some(Action::Read), "a read of many keys");
        assert_eq!(need(&get, Some("/v1/stats")), Some(Action::Admin));
        assert_eq!(need(&get, Some("/v1/ring")), Some(Action::Admin));
        assert_eq!(need(&post, Some("/v1/admin/anything")), Some(Action::Admin));
        assert_eq!(need(&get, None), Some(Action::Read));
    }

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_only() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            bearer(&h).map(<[u8]>::to_vec)
        };
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(with("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("bearer   abc"), Some(b"abc".to_vec()));
        assert_eq!(with("Basic YWxhZGRpbjpvcGVuc2VzYW1l"), Some(vec![]));
        assert_eq!(with("Bearer"), Some(vec![]));
    }
}
