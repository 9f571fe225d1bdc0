//! Extractors that guard handlers: [`CurrentUser`] for endpoints that need a signed-in user,
//! [`MaybeUser`] for pages that differ for one.

use axum::{extract::FromRequestParts, http::request::Parts};
use tower_sessions::Session;

use super::{AppState, error::AppError};
use crate::session::{ActiveUser, signed_in};

/// The guard for endpoints that need a signed-in user: rejects with `NotSignedIn`.
pub(super) struct CurrentUser(pub ActiveUser);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = session_from_parts(parts)?;
        signed_in(&session, state.config.session.idle_timeout)
            .await?
            .map(CurrentUser)
            .ok_or(AppError::NotSignedIn)
    }
}

/// The guard for pages that differ for signed-in users: never rejects for lack of a session.
pub(super) struct MaybeUser(pub Option<ActiveUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = session_from_parts(parts)?;
        Ok(MaybeUser(
            signed_in(&session, state.config.session.idle_timeout).await?,
        ))
    }
}

fn session_from_parts(parts: &Parts) -> Result<Session, AppError> {
    parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or_else(|| AppError::Internal("the session layer is missing".into()))
}
