//! `GET /me`: who is signed in, as JSON.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::AppState;
use crate::{http::error::AppError, http::extract::CurrentUser};

#[derive(Serialize)]
pub(super) struct Me<'a> {
    user: &'a str,
    connection: &'a str,
    sub: &'a str,
    oid: Option<&'a str>,
    tid: Option<&'a str>,
    name: Option<&'a str>,
    email: Option<&'a str>,
    email_verified: bool,
    preferred_username: Option<&'a str>,
    groups: &'a [String],
    roles: &'a [String],
    /// True when Entra could not put the user's groups in the token: `groups` is then
    /// unknown, not empty.
    groups_overage: bool,
    issued_at: i64,
    expires_at: i64,
}

pub(super) async fn me(
    State(state): State<AppState>,
    CurrentUser(s): CurrentUser,
) -> Result<Response, AppError> {
    let id = &s.identity;
    // As on /auth: a session the connection's current allowed_groups/allowed_roles no
    // longer admit is refused; one whose connection is gone (or no longer admits its tenant)
    // is not signed in (`CurrentUser` already checked; this covers a reload in between).
    let conn = state.session_connection(id).ok_or(AppError::NotSignedIn)?;
    if let Err(denial) = conn.config.access.check(id) {
        return Err(AppError::NotPermitted {
            connection: id.connection.clone(),
            user: id.user.clone(),
            denial,
        });
    }
    let me = Me {
        user: &id.user,
        connection: &id.connection,
        sub: &id.sub,
        oid: id.oid.as_deref(),
        tid: id.tid.as_deref(),
        name: id.name.as_deref(),
        email: id.email.as_deref(),
        email_verified: id.email_verified,
        preferred_username: id.preferred_username.as_deref(),
        groups: &id.groups,
        roles: &id.roles,
        groups_overage: id.groups_overage,
        issued_at: s.issued_at,
        expires_at: s.expires_at,
    };
    Ok(Json(&me).into_response())
}
