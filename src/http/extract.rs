//! Extractors that guard handlers: [`CurrentUser`] for endpoints that need a signed-in user,
//! [`MaybeUser`] for pages that differ for one.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use tower_sessions::Session;

use super::{AppState, error::AppError};
use crate::session::{ActiveUser, signed_in};

/// The guard for endpoints that need a signed-in user: rejects with `NotSignedIn`.
pub(super) struct CurrentUser(pub Arc<ActiveUser>);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        current_user(parts, state)
            .await?
            .map(CurrentUser)
            .ok_or(AppError::NotSignedIn)
    }
}

/// The guard for pages that differ for signed-in users: never rejects for lack of a session.
pub(super) struct MaybeUser(pub Option<Arc<ActiveUser>>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(current_user(parts, state).await?))
    }
}

/// The session's user, if signed in through a connection that still admits them
/// ([`super::Shared::session_connection`]).
async fn current_user(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<Arc<ActiveUser>>, AppError> {
    let session = session_from_parts(parts)?;
    let user = signed_in(
        &session,
        &state.users,
        state.config.session.idle_timeout,
        &state.clock,
    )
    .await?;
    Ok(user.filter(|u| state.session_connection(&u.identity).is_some()))
}

fn session_from_parts(parts: &Parts) -> Result<Session, AppError> {
    parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or_else(|| AppError::Internal("the session layer is missing".into()))
}
