//! `GET /`: who is signed in and a sign-out button, or a sign-in button per connection (and,
//! when connections list email domains, an email box that picks the connection).

use axum::{extract::State, response::Html};
use serde::Deserialize;

use super::{AppState, Params, urlencode};
use crate::{
    http::error::AppError,
    http::extract::MaybeUser,
    http::pages::{self, escape},
    return_to,
    session::ActiveUser,
};

#[derive(Debug, Deserialize)]
pub(super) struct HomeParams {
    return_to: Option<String>,
}

pub(super) async fn home(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Params(params): Params<HomeParams>,
) -> Result<Html<String>, AppError> {
    let body = match user {
        Some(user) => format!(
            "<h1>Signed in</h1><p>{}</p>\
<form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>",
            signed_in_as(&state, &user),
        ),
        None => {
            let return_to = return_to::sanitize(
                params.return_to.as_deref(),
                &state.config.public_url,
                &state.config.allowed_return_hosts,
            );
            let mut body = String::from("<h1>Sign in</h1>");
            // One button per connection: a link to /login, styled as a button (a GET form
            // would do the same, but a link also works as a bookmark or from another app).
            if state
                .connections
                .load()
                .iter()
                .any(|c| !c.config.domains.is_empty())
            {
                // A plain GET form: /login routes the address by its domain.
                body.push_str(&format!(
                    "<form method=\"get\" action=\"/login\"><p><label>Work email \
<input type=\"email\" name=\"login_hint\" autocomplete=\"username\" required></label> \
<input type=\"hidden\" name=\"return_to\" value=\"{}\">\
<button type=\"submit\">Continue</button></p></form>",
                    escape(&return_to),
                ));
            }
            for c in state.connections.load().iter() {
                body.push_str(&format!(
                    "<p><a class=\"button\" href=\"/login?connection={}&amp;return_to={}\">Sign in with {}</a></p>",
                    escape(&urlencode(&c.config.id)),
                    escape(&urlencode(&return_to)),
                    escape(&c.config.name),
                ));
            }
            body
        }
    };
    Ok(Html(pages::page("entrance", &body)))
}

/// "You are signed in as **Ada Lovelace** (ada@…) through Contoso." as HTML, escaped.
pub(super) fn signed_in_as(state: &AppState, user: &ActiveUser) -> String {
    let id = &user.identity;
    let who = id
        .name
        .as_deref()
        .or(id.preferred_username.as_deref())
        .unwrap_or(&id.user);
    let connection = state
        .connection(&id.connection)
        .map(|c| c.config.name.clone())
        .unwrap_or_else(|_| id.connection.clone());
    format!(
        "You are signed in as <strong>{}</strong>{} through {}.",
        escape(who),
        id.email
            .as_deref()
            .map(|e| format!(" ({})", escape(e)))
            .unwrap_or_default(),
        escape(&connection),
    )
}
