//! `GET /healthz` (the process serves) and `GET /readyz` (it can serve sign-ins: the session
//! store answers): the status alone on the public listener, with each connection's state and
//! the store's error on the admin listener.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::AppState;
use crate::{oidc::provider::NotReady, rotation};

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    store: StoreReadiness,
    connections: Vec<ConnectionReadiness>,
}

#[derive(Serialize)]
struct StoreReadiness {
    ok: bool,
    error: Option<String>,
}

#[derive(Serialize)]
struct ConnectionReadiness {
    id: String,
    name: String,
    state: &'static str,
    reason: Option<&'static str>,
    /// Whole days until `client_secret_expires_at` (negative once past); absent when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_expires_in_days: Option<i64>,
    /// What an admin should act on (an expiring secret), each a sentence.
    warnings: Vec<String>,
}

/// The public listener's `/readyz`: the status alone (200 or 503 and `{"status": …}`), the
/// same verdict as [`readyz`]. Anyone can ask it, so it names no connection, no secret expiry
/// and no store error; those are on the admin listener and in the log.
pub(super) async fn readyz_status(State(state): State<AppState>) -> Response {
    let (status, code) = match state.store.probe().await {
        Ok(()) => ("ready", StatusCode::OK),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the session store does not answer");
            ("not_ready", StatusCode::SERVICE_UNAVAILABLE)
        }
    };
    (code, Json(serde_json::json!({ "status": status }))).into_response()
}

/// The admin listener's `/readyz`: 200 when the session store answers, 503 when it does not,
/// with the store's error and each connection's state. Connections are reported but never
/// decide the status: one customer's IdP outage must not take entrance out of the load
/// balancer for every other customer.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    // The probe goes through the store's own timeout, so a hung store answers 503 promptly.
    let store = match state.store.probe().await {
        Ok(()) => StoreReadiness {
            ok: true,
            error: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the session store does not answer");
            StoreReadiness {
                ok: false,
                error: Some(e.to_string()),
            }
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let connections = state
        .connections
        .load()
        .iter()
        .map(|c| {
            let (state, reason) = match c.provider() {
                Ok(_) => ("ready", None),
                Err(NotReady::Starting) => ("starting", None),
                Err(NotReady::Failed(e)) => ("not_ready", Some(e.code())),
            };
            let (secret_expires_in_days, warnings) = rotation::secret_expiry(&c.config, now);
            ConnectionReadiness {
                id: c.config.id.clone(),
                name: c.config.name.clone(),
                state,
                reason,
                secret_expires_in_days,
                warnings,
            }
        })
        .collect();
    let (status, code) = if store.ok {
        ("ready", StatusCode::OK)
    } else {
        ("not_ready", StatusCode::SERVICE_UNAVAILABLE)
    };
    let body = Readiness {
        status,
        store,
        connections,
    };
    (code, Json(body)).into_response()
}
