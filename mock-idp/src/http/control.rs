//! The `/_mock/…` control API (test tool only; the mock is bound to loopback by default), and
//! the logout endpoint.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::entra::{self};
use crate::{Behaviour, generate_key_blocking, install_key, publish_current};

use super::*;

pub(super) async fn logout(
    State(s): S,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !s.serves(&tenant) {
        return entra::error_page(90002, &format!("Tenant '{tenant}' not found."));
    }
    let p = Params::parse(query.as_deref(), &body);
    let registered = s.lock().redirect_uris.clone();
    match p.get("post_logout_redirect_uri") {
        Some(uri) if registered.iter().any(|r| r == uri) => {
            let params: Vec<(&str, &str)> =
                p.get("state").map(|st| ("state", st)).into_iter().collect();
            to_client(uri, ResponseMode::Query, &params)
        }
        _ => entra::signed_out_page(),
    }
}

pub(super) async fn get_behaviour(State(s): S) -> Response {
    let b = s.lock().behaviour.clone();
    Json(b).into_response()
}

pub(super) async fn put_behaviour(State(s): S, Json(b): Json<Behaviour>) -> StatusCode {
    s.lock().behaviour = b;
    StatusCode::NO_CONTENT
}

pub(super) async fn get_counters(State(s): S) -> Response {
    let c = s.lock().counters;
    Json(c).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct RotateQuery {
    #[serde(default = "default_true")]
    publish: bool,
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) async fn rotate(State(s): S, Query(q): Query<RotateQuery>) -> Response {
    match generate_key_blocking().await {
        Ok(key) => {
            let kid = install_key(&s, key, q.publish);
            Json(json!({ "kid": kid, "published": q.publish })).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("key generation failed: {e}\n"),
        )
            .into_response(),
    }
}

pub(super) async fn revoke_refresh_tokens(State(s): S) -> StatusCode {
    crate::revoke_refresh_tokens(&s);
    StatusCode::NO_CONTENT
}

pub(super) async fn publish(State(s): S) -> Response {
    publish_current(&s);
    let kid = s.lock().current.kid.clone();
    Json(json!({ "kid": kid, "published": true })).into_response()
}

pub(super) async fn get_redirect_uris(State(s): S) -> Response {
    let uris = s.lock().redirect_uris.clone();
    Json(uris).into_response()
}

pub(super) async fn put_redirect_uris(State(s): S, Json(uris): Json<Vec<String>>) -> StatusCode {
    s.lock().redirect_uris = uris;
    StatusCode::NO_CONTENT
}
