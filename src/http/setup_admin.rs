//! The setup-link admin API (issue 17), on the admin listener — or, without one, on the public
//! listener to a local operator only, like `/admin/traces` (`traces::is_local_operator`):
//! `POST /admin/setup-links` creates a link and answers its URL (the only time the token is
//! shown), `GET /admin/setup-links` lists the links (never a token), and
//! `POST /admin/setup-links/{id}/revoke` revokes one. `entrance setup-link` (`cli`) calls them.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{AppState, error::AppError, traces::is_local_operator};
use crate::session::setup_links::{self, LinkState, LinkStatus, SetupLink, Unusable};

pub(crate) const PATH: &str = "/admin/setup-links";
pub(crate) const REVOKE_PATH: &str = "/admin/setup-links/{id}/revoke";

/// `POST /admin/setup-links`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    pub connection: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Who asks (`entrance setup-link create` sends the local user name), for the audit lines.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Seconds; the default is [`setup_links::DEFAULT_LIFETIME`].
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A link as the API shows it: never its token or its hash.
#[derive(Debug, Serialize)]
pub(crate) struct LinkView {
    pub id: String,
    pub connection: String,
    pub name: String,
    /// Whether the link adds a credential to a connection a setup created (a rotation).
    pub rotation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub status: LinkStatus,
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl LinkView {
    fn of(link: &SetupLink, now: i64) -> LinkView {
        LinkView {
            id: link.id.clone(),
            connection: link.connection.clone(),
            name: link.name.clone(),
            rotation: link.rotation,
            created_by: link.created_by.clone(),
            created_at: rfc3339(link.created_at),
            expires_at: rfc3339(link.expires_at),
            status: link.status(now),
        }
    }
}

/// Who may call: on the admin listener whoever reaches it; on the public listener a local
/// operator only (404 to anyone else, as if the route did not exist). On both, a request a
/// browser sent (it carries `Origin`, as every browser POST does) is refused: another site's
/// page must not create links through an operator's browser.
fn refused(on_admin: bool, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<Response> {
    if !on_admin && !is_local_operator(peer, headers) {
        return Some(StatusCode::NOT_FOUND.into_response());
    }
    if headers.contains_key(header::ORIGIN) {
        return Some(AppError::CrossSiteRequest.into_response());
    }
    None
}

/// The listener a route was mounted on.
#[derive(Clone, Copy)]
pub(crate) struct OnAdmin(pub bool);

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn peer(p: Peer) -> Option<SocketAddr> {
    p.map(|Extension(ConnectInfo(p))| p)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(OnAdmin(on_admin)): Extension<OnAdmin>,
    p: Peer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if let Some(res) = refused(on_admin, peer(p), &headers) {
        return Ok(res);
    }
    let now = state.clock.now_unix();
    let links: Vec<LinkView> = setup_links::list(&state.store)
        .await?
        .iter()
        .map(|l| LinkView::of(l, now))
        .collect();
    Ok(Json(serde_json::json!({ "links": links })).into_response())
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(OnAdmin(on_admin)): Extension<OnAdmin>,
    p: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if let Some(res) = refused(on_admin, peer(p), &headers) {
        return Ok(res);
    }
    let req: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| AppError::SetupLinkRequest(format!("the request body: {e}")))?;
    let id = req.connection.trim();
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AppError::SetupLinkRequest(format!(
            "{id:?} is not a usable connection id: use 1 to 64 letters, digits, '-' or '_'"
        )));
    }
    // A file connection's credential is the file's (rotated there, `client_secrets`); a
    // stored one's is rotated by a new link, which keeps its name unless given another. The
    // live connections are the file's (as last reloaded) and the stored ones.
    let stored = setup_links::stored(&state.store, id).await?;
    if stored.is_none() && state.connections.load().iter().any(|c| c.config.id == id) {
        return Err(AppError::SetupLinkConflict(format!(
            "connection {id:?} is in the configuration file; a setup link creates a new connection or renews the credential of one a setup link created — renew this one's in the file (client_secrets keeps the old and the new side by side)"
        )));
    }
    let name = match (req.name.as_deref().map(str::trim), &stored) {
        (Some(name), _) => name,
        (None, Some(c)) => c.name.as_str(),
        (None, None) => id,
    };
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::SetupLinkRequest(
            "the name must be 1 to 100 characters on one line".into(),
        ));
    }
    let created_by = req.created_by.as_deref().map(str::trim);
    if created_by.is_some_and(|by| by.chars().count() > 100 || by.chars().any(char::is_control)) {
        return Err(AppError::SetupLinkRequest(
            "created_by must be at most 100 characters on one line".into(),
        ));
    }
    let created_by = created_by.filter(|by| !by.is_empty());
    let lifetime = match req.expires_in_secs {
        None => setup_links::DEFAULT_LIFETIME,
        Some(secs) => Duration::from_secs(secs),
    };
    if !(setup_links::MIN_LIFETIME..=setup_links::MAX_LIFETIME).contains(&lifetime) {
        return Err(AppError::SetupLinkRequest(format!(
            "a setup link lives from {} minutes to {} days",
            setup_links::MIN_LIFETIME.as_secs() / 60,
            setup_links::MAX_LIFETIME.as_secs() / 86400
        )));
    }
    let now = state.clock.now_unix();
    let created = setup_links::create(
        &state.store,
        id,
        name,
        created_by,
        stored.is_some(),
        lifetime,
        now,
    )
    .await?;
    let url = format!(
        "{}{}{}",
        state.config.public_origin(),
        super::setup::PREFIX,
        created.token
    );
    tracing::info!(
        target: "entrance::audit",
        event = "setup_link_created",
        link = %created.link.id,
        connection = %created.link.connection,
        rotation = stored.is_some(),
        created_by = created_by.unwrap_or(""),
        expires_at = created.link.expires_at,
        "setup link created"
    );
    let mut view = serde_json::to_value(LinkView::of(&created.link, now))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    view["url"] = url.into();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(OnAdmin(on_admin)): Extension<OnAdmin>,
    p: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    if let Some(res) = refused(on_admin, peer(p), &headers) {
        return Ok(res);
    }
    let now = state.clock.now_unix();
    match setup_links::end(&state.store, &id, LinkState::Revoked, now).await? {
        None => Err(AppError::SetupLink(Unusable::Unknown)),
        Some(link) => {
            tracing::info!(
                target: "entrance::audit",
                event = "setup_link_revoked",
                link = %link.id,
                connection = %link.connection,
                "setup link revoked"
            );
            Ok(Json(LinkView::of(&link, now)).into_response())
        }
    }
}
