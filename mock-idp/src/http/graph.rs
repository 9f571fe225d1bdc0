//! The mock's Microsoft Graph: `transitiveMemberOf/microsoft.graph.group` for the token's own
//! user (`/v1.0/me/…`, delegated) and by object id (`/v1.0/users/{oid}/…`), paged with
//! `@odata.nextLink`, with throttling and a missing permission switched in by [`Behaviour`]
//! (docs/reference/ENTRA-2.md §5; bodies as `tests/fixtures/entra/graph.*.json`).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::entra::json_response;
use crate::{Behaviour, Shared};

use super::*;

pub(super) async fn me_groups(
    State(s): S,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    groups(&s, &headers, query.as_deref(), None).await
}

pub(super) async fn user_groups(
    State(s): S,
    Path(oid): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    groups(&s, &headers, query.as_deref(), Some(oid)).await
}

/// Graph's error body (`{"error":{"code","message","innerError":{…}}}`).
fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2026-01-01T00:00:00",
                "request-id": "0000aaaa-11bb-cccc-dd22-eeeeee333333",
                "client-request-id": "0000aaaa-11bb-cccc-dd22-eeeeee333333"
            }
        }}),
    )
}

/// Who a bearer token speaks for.
enum Caller {
    Delegated,
    App,
}

// One piece on purpose: Graph's checks in the order a caller meets them (token, throttling,
// permission, the user), then the page.
async fn groups(
    s: &Shared,
    headers: &HeaderMap,
    query: Option<&str>,
    user: Option<String>,
) -> Response {
    let behaviour: Behaviour = {
        let mut inner = s.lock();
        inner.counters.graph += 1;
        if user.is_some() {
            inner.counters.graph_app_only += 1;
        }
        inner.behaviour.clone()
    };
    if let Some(r) = pre_fault(s, &behaviour.graph_fault).await {
        return r;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (caller, throttle) = {
        let mut inner = s.lock();
        let caller = if inner.userinfo.contains_key(token) {
            Some(Caller::Delegated)
        } else if inner.graph_app_tokens.contains(token) {
            Some(Caller::App)
        } else {
            None
        };
        let throttle = match &behaviour.graph_throttle {
            Some(t) if inner.graph_throttled < t.times => {
                inner.graph_throttled += 1;
                Some(t.retry_after.clone())
            }
            _ => None,
        };
        (caller, throttle)
    };
    let Some(caller) = caller else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    };
    if user.is_none() && matches!(caller, Caller::App) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        );
    }
    if let Some(retry_after) = throttle {
        let mut resp = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": {
                "code": "TooManyRequests",
                "innerError": {"code": "429", "date": "2026-01-01T00:00:00", "message": "Please retry after", "request-id": "0000aaaa-11bb-cccc-dd22-eeeeee444444", "status": "429"},
                "message": "Please retry again later."
            }}),
        );
        if let Ok(v) = HeaderValue::from_str(&retry_after) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    if behaviour.graph_forbidden {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    if let Some(oid) = &user
        && !oid.eq_ignore_ascii_case(&s.user.oid)
    {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{oid}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    }
    let all: Vec<String> = match behaviour.group_count {
        Some(n) => (1..=n).map(crate::overage_group).collect(),
        None => s.user.groups.clone(),
    };
    let skip: usize = query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .and_then(|mut pairs| pairs.find(|(k, _)| k == "$skiptoken"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let size = behaviour.graph_page_size.unwrap_or(100).max(1);
    let end = (skip + size).min(all.len());
    let value: Vec<Value> = all
        .get(skip.min(end)..end)
        .unwrap_or_default()
        .iter()
        .map(|id| json!({"@odata.type": "#microsoft.graph.group", "id": id}))
        .collect();
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#groups(id)", s.base_url),
        "value": value,
    });
    if end < all.len() {
        let path = match &user {
            Some(oid) => format!("users/{oid}"),
            None => "me".to_owned(),
        };
        let origin = behaviour
            .graph_next_link_origin
            .as_deref()
            .unwrap_or(&s.base_url);
        body["@odata.nextLink"] = json!(format!(
            "{origin}/v1.0/{path}/transitiveMemberOf/microsoft.graph.group?$select=id&$skiptoken={end}"
        ));
    }
    post_fault(&behaviour.graph_fault, json_response(StatusCode::OK, &body))
}
