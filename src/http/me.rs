//! `GET /me`: who is signed in, as JSON.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::session::CurrentUser;

#[derive(Serialize)]
pub struct Me<'a> {
    user: &'a str,
    connection: &'a str,
    sub: &'a str,
    oid: Option<&'a str>,
    tid: Option<&'a str>,
    name: Option<&'a str>,
    email: Option<&'a str>,
    email_verified: bool,
    preferred_username: Option<&'a str>,
    issued_at: i64,
    expires_at: i64,
}

pub async fn me(CurrentUser(s): CurrentUser) -> Response {
    let id = &s.identity;
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
        issued_at: s.issued_at,
        expires_at: s.expires_at,
    };
    Json(&me).into_response()
}
