//! The one error type at the HTTP boundary: every failure a request can meet, its status, its
//! stable reason code, and what the user and the admin are told. Rendering (HTML or JSON,
//! with the correlation id) and logging happen once, in `crate::http::edge`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use std::sync::Arc;

use crate::{
    entra,
    oidc::graph::{Caller, GraphError},
    oidc::identity::Denial,
    oidc::provider::NotReady,
    oidc::token::TokenError,
    oidc::userinfo::UserinfoError,
    oidc::verifier::Rejection,
    oidc::verifier::access::Insufficient,
    session::{
        SessionError, StateProblem,
        setup_links::{CreateError, Unusable},
    },
};

impl From<CreateError> for AppError {
    fn from(e: CreateError) -> AppError {
        match e {
            CreateError::Session(e) => e.into(),
            other => AppError::SetupLinkConflict(other.to_string()),
        }
    }
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> AppError {
        match e {
            SessionError::Store(e) => AppError::Session(e),
            SessionError::Corrupt(message) => AppError::Internal(message),
            SessionError::State {
                problem,
                connection,
                return_to,
            } => AppError::State {
                problem,
                connection,
                return_to,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error("there is no connection {0:?}")]
    UnknownConnection(String),
    #[error("no connection was chosen and several are configured")]
    ConnectionRequired,
    #[error("no connection lists the email domain {0:?} in its domains")]
    UnknownDomain(String),
    #[error("{user} is not allowed by connection {connection:?}'s allowed_groups/allowed_roles{}", match .denial { Denial::GroupsUnknown => " (the token carried no groups: group overage)", Denial::NotListed => "" })]
    NotPermitted {
        connection: String,
        user: String,
        denial: Denial,
    },
    #[error("connection {connection:?} is not ready: {reason}")]
    ConnectionNotReady {
        connection: String,
        name: String,
        reason: Box<NotReady>,
    },
    #[error("the request is missing the {0} parameter")]
    MissingParameter(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the request body is not application/x-www-form-urlencoded")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("the sign-in state is {}", match .problem { StateProblem::Unknown => "unknown or already used", StateProblem::Expired => "expired" })]
    State {
        problem: StateProblem,
        /// The connection to offer "Sign in again" for, when known.
        connection: Option<String>,
        /// Where the login was headed, when known.
        return_to: Option<String>,
    },
    #[error("the IdP answered the sign-in with error {error:?}: {description}")]
    IdpError {
        connection: String,
        name: String,
        error: String,
        description: String,
    },
    #[error(
        "the callback's iss parameter {actual:?} is not the issuer {expected:?} the login was sent to (RFC 9207 mix-up defence)"
    )]
    IssuerParameterMismatch { expected: String, actual: String },
    #[error("redeeming the code at {name}'s token endpoint failed: {source}")]
    Token {
        connection: String,
        name: String,
        source: Box<TokenError>,
    },
    #[error("the userinfo step with {name} failed: {source}")]
    Userinfo {
        connection: String,
        name: String,
        source: crate::oidc::userinfo::UserinfoError,
    },
    /// A group overage could not be resolved through Microsoft Graph: the sign-in fails
    /// rather than judge `allowed_groups` on no list or on part of one.
    #[error("reading the user's groups from Microsoft Graph ({} call, tenant {}) failed: {source}", .caller.kind(), .tenant.as_deref().unwrap_or("unknown"))]
    Groups {
        connection: String,
        name: String,
        /// The user's tenant: where the permission must be granted and consented.
        tenant: Option<String>,
        caller: Caller,
        source: Box<GraphError>,
    },
    #[error("the ID token was rejected: {rejection}")]
    IdToken {
        connection: String,
        rejection: Rejection,
    },
    #[error("not signed in")]
    NotSignedIn,
    /// `/auth` ended the session: no access token for the upstream API can be had without a
    /// new sign-in (refresh refused for good, or none kept).
    #[error("{user}'s session through connection {connection:?} ended: {reason}")]
    UpstreamSignInAgain {
        connection: String,
        user: String,
        reason: &'static str,
        source: Option<Box<TokenError>>,
    },
    /// The upstream access token expired and could not be refreshed now; the session stays.
    #[error("the upstream access token of connection {connection:?} expired and could not be refreshed{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_else(|| " (another request's refresh did not finish in time)".into()))]
    UpstreamUnavailable {
        connection: String,
        source: Option<Box<TokenError>>,
    },
    /// The access token is over `upstream.max_token_bytes`: refused, never passed cut or
    /// left out silently.
    #[error(
        "the upstream access token of connection {connection:?} is {bytes} bytes, over upstream.max_token_bytes ({max})"
    )]
    AccessTokenTooLarge {
        connection: String,
        bytes: usize,
        max: usize,
    },
    #[error("bearer token refused ({}): {rejection}", rejection.code())]
    BearerRejected {
        /// The connection the token was checked against, when one was chosen.
        connection: Option<String>,
        rejection: Rejection,
    },
    #[error("bearer token refused by connection {connection:?}'s api: {reason}")]
    BearerInsufficient {
        connection: String,
        reason: Insufficient,
    },
    #[error(
        "{user} is not allowed by connection {connection:?}'s allowed_groups/allowed_roles (bearer token)"
    )]
    BearerNotPermitted {
        connection: String,
        user: String,
        denial: Denial,
    },
    #[error("bad Authorization header: {0}")]
    BearerRequest(&'static str),
    #[error("too many sign-in requests from this client; retry in {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    #[error("a state-changing request came from another site (Origin check failed)")]
    CrossSiteRequest,
    #[error("the request took longer than server.request_timeout_secs ({0:?})")]
    RequestTimeout(std::time::Duration),
    #[error("the session store failed: {0}")]
    Session(#[from] tower_sessions::session::Error),
    /// A setup page's link (issue 17) that opens nothing: unknown, expired, spent or revoked.
    #[error("setup link refused: {0}")]
    SetupLink(Unusable),
    /// A setup form posted from elsewhere than its own page: the Origin rule of sign-out
    /// (`logout::from_our_own_page`) or the link's form token failed.
    #[error("the setup form did not come from its own page (Origin check or form token failed)")]
    SetupForm,
    /// The admin API refused a setup-link request (an id taken, a link already active).
    #[error("setup link request refused: {0}")]
    SetupLinkConflict(String),
    /// The admin API could not use a setup-link request as sent (a bad id, name, lifetime or
    /// body): 400 with the reason, which is the operator's to read.
    #[error("setup link request invalid: {0}")]
    SetupLinkRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Who should act, and how, on an error page.
pub(crate) struct Explanation {
    pub title: String,
    /// Plain words for the person signing in.
    pub user: String,
    /// What the admin should check; None when it is not a configuration matter.
    pub admin: Option<String>,
    /// Where "Sign in again" leads, where signing in again can help.
    pub retry: Option<Retry>,
}

/// The "Sign in again" of an error page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retry {
    /// This connection's sign-in, towards where the failed login was headed when known.
    Connection {
        id: String,
        return_to: Option<String>,
    },
    /// The start page, to pick a connection: the failed login's is not known (a callback
    /// whose state this browser never had).
    StartPage,
}

impl Retry {
    fn connection(id: &str) -> Option<Retry> {
        Some(Retry::Connection {
            id: id.to_owned(),
            return_to: None,
        })
    }

    /// The link: `/login?connection=…[&return_to=…]` (which sanitizes `return_to` again,
    /// `src/return_to.rs`) or `/`.
    pub(crate) fn href(&self) -> String {
        let encode = crate::http::urlencode;
        match self {
            Retry::Connection { id, return_to } => {
                let mut href = format!("/login?connection={}", encode(id));
                if let Some(to) = return_to {
                    href.push_str(&format!("&return_to={}", encode(to)));
                }
                href
            }
            Retry::StartPage => "/".to_owned(),
        }
    }
}

impl AppError {
    pub(crate) fn not_ready(conn: &crate::config::ConnectionConfig, reason: NotReady) -> AppError {
        AppError::ConnectionNotReady {
            connection: conn.id.clone(),
            name: conn.name.clone(),
            reason: Box::new(reason),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            AppError::UnknownConnection(_)
            | AppError::ConnectionRequired
            | AppError::UnknownDomain(_)
            | AppError::MissingParameter(_)
            | AppError::BadRequest(_)
            | AppError::State { .. }
            | AppError::IssuerParameterMismatch { .. }
            | AppError::BearerRequest(_) => StatusCode::BAD_REQUEST,
            AppError::IdpError { error, .. } if error == "access_denied" => StatusCode::FORBIDDEN,
            AppError::CrossSiteRequest
            | AppError::NotPermitted { .. }
            | AppError::BearerInsufficient { .. }
            | AppError::BearerNotPermitted { .. } => StatusCode::FORBIDDEN,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::IdpError { .. }
            | AppError::IdToken { .. }
            | AppError::NotSignedIn
            | AppError::UpstreamSignInAgain { .. }
            | AppError::BearerRejected { .. } => StatusCode::UNAUTHORIZED,
            AppError::UpstreamUnavailable {
                source: Some(source),
                ..
            } if matches!(
                **source,
                TokenError::Transport(crate::oidc::http_client::FetchError::Timeout(_))
            ) =>
            {
                StatusCode::GATEWAY_TIMEOUT
            }
            AppError::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::AccessTokenTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Token { source, .. } => match &**source {
                // The code itself was bad (expired, reused): the user's retry fixes it.
                TokenError::Refused { error, .. } if error.error == "invalid_grant" => {
                    StatusCode::BAD_REQUEST
                }
                TokenError::Transport(crate::oidc::http_client::FetchError::Timeout(_)) => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                // Our own signing failed, or the platform's token could not be read: nothing
                // reached the IdP.
                TokenError::Assertion(_) | TokenError::Federated(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::BAD_GATEWAY,
            },
            AppError::Userinfo { source, .. } => match source {
                UserinfoError::Transport(crate::oidc::http_client::FetchError::Timeout(_)) => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                _ => StatusCode::BAD_GATEWAY,
            },
            AppError::Groups { source, .. } => match &**source {
                GraphError::Transport(crate::oidc::http_client::FetchError::Timeout(_)) => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                GraphError::AppToken(e)
                    if matches!(
                        **e,
                        TokenError::Transport(crate::oidc::http_client::FetchError::Timeout(_))
                    ) =>
                {
                    StatusCode::GATEWAY_TIMEOUT
                }
                GraphError::Throttled { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            // 503, not 408: a browser may repeat a request answered 408 by itself (RFC 9110
            // §15.5.9), and a repeated callback would spend its code twice; the time is also
            // usually the IdP's or the store's, not the client's.
            AppError::ConnectionNotReady { .. }
            | AppError::Session(_)
            | AppError::RequestTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::SetupLink(Unusable::Unknown) => StatusCode::NOT_FOUND,
            AppError::SetupLink(_) => StatusCode::GONE,
            AppError::SetupForm => StatusCode::FORBIDDEN,
            AppError::SetupLinkConflict(_) => StatusCode::CONFLICT,
            AppError::SetupLinkRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable snake_case reason for JSON bodies, logs and metrics.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            AppError::UnknownConnection(_) => "unknown_connection",
            AppError::ConnectionRequired => "connection_required",
            AppError::UnknownDomain(_) => "unknown_domain",
            AppError::NotPermitted { .. } => "not_permitted",
            AppError::ConnectionNotReady { .. } => "connection_not_ready",
            AppError::MissingParameter(_) => "missing_parameter",
            AppError::BadRequest(_) => "bad_request",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::State {
                problem: StateProblem::Unknown,
                ..
            } => "state_unknown",
            AppError::State {
                problem: StateProblem::Expired,
                ..
            } => "state_expired",
            AppError::IdpError { .. } => "idp_error",
            AppError::IssuerParameterMismatch { .. } => "issuer_parameter_mismatch",
            AppError::Token { source, .. } => match &**source {
                TokenError::Transport(_) => "token_endpoint_unreachable",
                TokenError::Refused { .. } => "token_refused",
                TokenError::UnexpectedStatus(_) | TokenError::Malformed(_) => {
                    "token_response_invalid"
                }
                TokenError::MissingIdToken => "missing_id_token",
                TokenError::Assertion(_) | TokenError::Federated(_) => "client_assertion_failed",
            },
            AppError::IdToken { .. } => "id_token_rejected",
            AppError::Userinfo { .. } => "userinfo_failed",
            AppError::Groups { .. } => "groups_unresolved",
            AppError::NotSignedIn => "not_signed_in",
            AppError::UpstreamSignInAgain { .. } => "upstream_sign_in_again",
            AppError::UpstreamUnavailable { .. } => "upstream_refresh_failed",
            AppError::AccessTokenTooLarge { .. } => "access_token_too_large",
            // RFC 6750 §3.1's error codes, which the WWW-Authenticate header carries too.
            AppError::BearerRejected { .. } => "invalid_token",
            AppError::BearerInsufficient { .. } | AppError::BearerNotPermitted { .. } => {
                "insufficient_scope"
            }
            AppError::BearerRequest(_) => "invalid_request",
            AppError::CrossSiteRequest => "cross_site_request",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Session(_) => "session_store_unavailable",
            AppError::RequestTimeout(_) => "request_timeout",
            AppError::SetupLink(Unusable::Unknown) => "setup_link_unknown",
            AppError::SetupLink(Unusable::Expired) => "setup_link_expired",
            AppError::SetupLink(Unusable::Spent) => "setup_link_spent",
            AppError::SetupLink(Unusable::Revoked) => "setup_link_revoked",
            AppError::SetupForm => "setup_form_refused",
            AppError::SetupLinkConflict(_) => "setup_link_conflict",
            AppError::SetupLinkRequest(_) => "bad_request",
            AppError::Internal(_) => "internal",
        }
    }

    /// A finer reason where there is one: the ID-token rule that failed, the OAuth error.
    pub(crate) fn detail(&self) -> Option<String> {
        match self {
            AppError::IdToken { rejection, .. } | AppError::BearerRejected { rejection, .. } => {
                Some(rejection.code().to_owned())
            }
            AppError::BearerInsufficient { reason, .. } => Some(reason.code().to_owned()),
            AppError::BearerNotPermitted { denial, .. } => Some(
                match denial {
                    Denial::NotListed => "not_listed",
                    Denial::GroupsUnknown => "groups_overage",
                }
                .to_owned(),
            ),
            AppError::Userinfo { source, .. } => Some(source.code().to_owned()),
            AppError::Groups { source, .. } => Some(source.code().to_owned()),
            AppError::IdpError { error, .. } => Some(error.clone()),
            AppError::NotPermitted { denial, .. } => Some(
                match denial {
                    Denial::NotListed => "not_listed",
                    Denial::GroupsUnknown => "groups_overage",
                }
                .to_owned(),
            ),
            AppError::Token { source, .. } => match &**source {
                TokenError::Refused { error, .. } => Some(error.error.clone()),
                _ => None,
            },
            AppError::UpstreamSignInAgain { reason, source, .. } => Some(match source.as_deref() {
                Some(TokenError::Refused { error, .. }) => error.error.clone(),
                _ => (*reason).to_owned(),
            }),
            AppError::UpstreamUnavailable { source, .. } => source.as_deref().map(|e| match e {
                TokenError::Refused { error, .. } => error.error.clone(),
                TokenError::Transport(_) => "token_endpoint_unreachable".to_owned(),
                _ => "token_response_invalid".to_owned(),
            }),
            AppError::ConnectionNotReady { reason, .. } => match &**reason {
                NotReady::Failed(e) => Some(e.code().to_owned()),
                NotReady::Starting => Some("starting".to_owned()),
            },
            _ => None,
        }
    }

    /// The connection the error belongs to, when known.
    pub(crate) fn connection(&self) -> Option<&str> {
        match self {
            AppError::ConnectionNotReady { connection, .. }
            | AppError::IdpError { connection, .. }
            | AppError::Token { connection, .. }
            | AppError::IdToken { connection, .. }
            | AppError::Userinfo { connection, .. }
            | AppError::Groups { connection, .. }
            | AppError::NotPermitted { connection, .. }
            | AppError::BearerInsufficient { connection, .. }
            | AppError::BearerNotPermitted { connection, .. }
            | AppError::UpstreamSignInAgain { connection, .. }
            | AppError::UpstreamUnavailable { connection, .. }
            | AppError::AccessTokenTooLarge { connection, .. } => Some(connection),
            AppError::State { connection, .. } | AppError::BearerRejected { connection, .. } => {
                connection.as_deref()
            }
            _ => None,
        }
    }

    /// The AADSTS code behind the error, when Entra gave one.
    pub(crate) fn aadsts(&self) -> Option<u32> {
        match self {
            AppError::IdpError { description, .. } => entra::aadsts_code(description),
            _ => match self.token_error()? {
                TokenError::Refused { error, .. } => error.aadsts(),
                _ => None,
            },
        }
    }

    /// The token endpoint's answer behind the error: a code redemption's or a refresh's.
    pub(crate) fn token_error(&self) -> Option<&TokenError> {
        match self {
            AppError::Token { source, .. } => Some(source),
            AppError::UpstreamSignInAgain { source, .. }
            | AppError::UpstreamUnavailable { source, .. } => source.as_deref(),
            AppError::Groups { source, .. } => match &**source {
                GraphError::AppToken(e) => Some(e.as_ref()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The IdP's own words about the failure (an error redirect's `error_description`, a token
    /// endpoint's), for the log and the traces ring — never for the page (issue 12.5).
    pub(crate) fn idp_description(&self) -> Option<&str> {
        match self {
            AppError::IdpError { description, .. } => Some(description),
            _ => match self.token_error()? {
                TokenError::Refused { error, .. } => error.error_description.as_deref(),
                _ => None,
            },
        }
    }

    /// What the person signing in and the admin are told. One piece on purpose: a single
    /// `match` over every variant is the table a reviewer reads to see that each failure has a
    /// status, a user message that leaks nothing, and an admin fix; the compiler then holds
    /// the table complete whenever a variant is added.
    ///
    /// Pages and JSON errors are public: the admin's part is a short hint — the AADSTS code
    /// and its fix, a reason code, the key to change — and never a metadata or endpoint URL,
    /// an IdP's response text, an issuer, a subject or a store error (issue 12.5). Those are
    /// in the log line with the same reference id (`edge::render`), and the failed login in
    /// `/admin/traces` on the admin listener.
    pub(crate) fn explain(&self) -> Explanation {
        let aadsts_fix = self
            .aadsts()
            .and_then(entra::aadsts)
            .map(|row| format!("AADSTS{}: {} Fix: {}", row.code, row.meaning, row.fix));
        let plain = |title: &str, user: &str| Explanation {
            title: title.to_owned(),
            user: user.to_owned(),
            admin: None,
            retry: None,
        };
        match self {
            AppError::UnknownConnection(id) => Explanation {
                admin: Some(format!(
                    "No connection has the id {id:?}; check the link that led here."
                )),
                ..plain(
                    "Unknown sign-in option",
                    "This sign-in link names an organisation entrance does not know.",
                )
            },
            AppError::ConnectionRequired => plain(
                "Choose how to sign in",
                "Several organisations sign in here: go to the start page and pick yours.",
            ),
            AppError::UnknownDomain(domain) => Explanation {
                admin: Some(format!(
                    "No connection lists {domain:?} in its domains. If these users should sign in here, add it to their connection's domains = [...]."
                )),
                ..plain(
                    "No sign-in for this address",
                    &format!(
                        "No sign-in is set up for {domain}. Check the email address, or ask your administrator."
                    ),
                )
            },
            AppError::NotPermitted { denial, .. } => Explanation {
                admin: Some(match denial {
                    Denial::NotListed => "The user is in none of this connection's allowed_groups and holds none of its allowed_roles. Add the user to one of the allowed groups or assign them an allowed app role in Entra (Enterprise applications → Users and groups), or change allowed_groups / allowed_roles.".to_owned(),
                    Denial::GroupsUnknown => "The user's groups could not be read: they are in more groups than fit in a token (group overage), so Entra sent none and allowed_groups cannot be checked. In the app registration's Token configuration, edit the groups claim to emit \"Groups assigned to the application\" (and assign the allowed groups to the application), or grant access by app roles with allowed_roles instead.".to_owned(),
                }),
                ..plain(
                    "Your account is not allowed to use this application",
                    "You signed in, but your administrator has not given your account access to this application. Ask them to grant it.",
                )
            },
            AppError::ConnectionNotReady {
                connection,
                name,
                reason,
            } => Explanation {
                admin: Some(match &**reason {
                    NotReady::Starting => {
                        "entrance is still fetching this connection's IdP metadata.".to_owned()
                    }
                    NotReady::Failed(e) => format!(
                        "The connection is not ready ({}). entrance retries by itself; the log line with this reference and `entrance check` say why.",
                        e.code()
                    ),
                }),
                // "Try again in a few minutes": the button does, when the user is ready.
                retry: Retry::connection(connection),
                ..plain(
                    &format!("Could not reach {name}'s sign-in service"),
                    "Signing in is not possible right now. Please try again in a few minutes.",
                )
            },
            AppError::MissingParameter(_)
            | AppError::BadRequest(_)
            | AppError::UnsupportedMediaType
            | AppError::PayloadTooLarge => plain(
                "This sign-in link is not valid",
                "The address is incomplete or damaged. Start again from the application you wanted to use.",
            ),
            AppError::State {
                problem,
                connection,
                return_to,
            } => Explanation {
                // An expired login knows its connection and destination; an unknown state
                // knows nothing, so the start page lets the user pick.
                retry: Some(match connection {
                    Some(id) => Retry::Connection {
                        id: id.clone(),
                        return_to: return_to.clone(),
                    },
                    None => Retry::StartPage,
                }),
                ..plain(
                    "This sign-in has expired",
                    match problem {
                        StateProblem::Expired => "Signing in took too long. Please sign in again.",
                        StateProblem::Unknown => {
                            "This sign-in was already used, was started in another browser, or has expired. Please sign in again."
                        }
                    },
                )
            },
            AppError::IdpError {
                connection,
                name,
                error,
                ..
            } => Explanation {
                admin: Some(aadsts_fix.unwrap_or_else(|| {
                    format!(
                        "{name} answered {}. Its description is in the log line with this reference.",
                        oauth_error_code(error)
                    )
                })),
                retry: Retry::connection(connection),
                ..plain(
                    "Sign-in was not completed",
                    &format!(
                        "{name} did not sign you in. If this keeps happening, contact your administrator."
                    ),
                )
            },
            AppError::IssuerParameterMismatch { .. } => Explanation {
                admin: Some("The callback's iss parameter is not the issuer this sign-in was sent to (RFC 9207 mix-up defence). The log line with this reference has both values.".to_owned()),
                ..plain(
                    "Sign-in was refused",
                    "The answer came from a different sign-in service than the one you were sent to.",
                )
            },
            AppError::Token {
                connection,
                name,
                source,
            } => {
                let (title, user) = match &**source {
                    TokenError::Transport(_) => (
                        format!("Could not reach {name}'s sign-in service"),
                        "Signing in could not be completed. Please try again in a few minutes.",
                    ),
                    TokenError::Refused { error, .. } if error.error == "invalid_grant" => (
                        "This sign-in has expired".to_owned(),
                        "Please sign in again.",
                    ),
                    _ => (
                        format!("{name}'s sign-in service refused entrance"),
                        "Signing in is not possible because of a configuration problem. Your administrator has to fix it.",
                    ),
                };
                // The IdP's own words (which certificate, and why: Entra's "[Reason - The key
                // used is expired.]") name the app and the tenant: they are logged with this
                // reference and kept in the traces, not shown here.
                let admin = aadsts_fix.unwrap_or_else(|| match &**source {
                    TokenError::Transport(crate::oidc::http_client::FetchError::Timeout(t)) => {
                        format!(
                            "The token endpoint did not answer within http.timeout_secs ({} s).",
                            t.as_secs()
                        )
                    }
                    TokenError::Transport(_) => "The token endpoint could not be reached; the log line with this reference has the cause (for Entra: login.microsoftonline.com, through HTTPS_PROXY if outbound traffic needs a proxy).".to_owned(),
                    TokenError::Refused { error, .. } => format!(
                        "The token endpoint refused the code ({}). The IdP's description is in the log line with this reference.",
                        oauth_error_code(&error.error)
                    ),
                    TokenError::UnexpectedStatus(status) => format!(
                        "The token endpoint answered HTTP {status} without an OAuth error."
                    ),
                    TokenError::Malformed(_) => "The token response is not valid JSON of the expected shape; the log line with this reference says what is wrong.".to_owned(),
                    TokenError::MissingIdToken => source.to_string(),
                    TokenError::Assertion(_) => "The client assertion could not be signed with client_private_key_file; the log line with this reference has the cause.".to_owned(),
                    TokenError::Federated(_) => "The federated credential's token (client_assertion_file, client_assertion_env or AZURE_FEDERATED_TOKEN_FILE) could not be read; the log line with this reference says why, and `entrance check` shows the file's state.".to_owned(),
                });
                Explanation {
                    title,
                    user: user.to_owned(),
                    admin: Some(admin),
                    // Also after the admin's fix: the same button then works.
                    retry: Retry::connection(connection),
                }
            }
            AppError::Userinfo {
                connection,
                name,
                source,
            } => Explanation {
                admin: Some(match source {
                    UserinfoError::NoEndpoint => format!(
                        "This connection has userinfo = true, but {name}'s metadata publishes no userinfo_endpoint. Remove userinfo = true from the connection."
                    ),
                    UserinfoError::NoAccessToken => format!(
                        "{name}'s token response carried no access_token, which the userinfo call needs. Remove userinfo = true from the connection."
                    ),
                    UserinfoError::InsecureEndpoint(_) => format!(
                        "{name}'s metadata publishes a userinfo_endpoint that is not https: the access token would travel in clear. Fix the IdP's metadata, or set userinfo = false on the connection."
                    ),
                    UserinfoError::Transport(_) => "The userinfo endpoint could not be reached (the log line with this reference has the cause). Check that entrance can reach it (for Entra: graph.microsoft.com, through HTTPS_PROXY if outbound traffic needs a proxy).".to_owned(),
                    UserinfoError::Refused(status) => format!(
                        "The userinfo endpoint refused the access token (HTTP {status}). For Entra the access token must be for Microsoft Graph: with userinfo = true, do not add another API's scopes to the connection's scopes."
                    ),
                    UserinfoError::Malformed => "The userinfo response is not a JSON object with a sub (a signed application/jwt response is not supported). Remove userinfo = true or make the IdP answer plain JSON.".to_owned(),
                    UserinfoError::SubMismatch { .. } => format!(
                        "userinfo's sub is not the ID token's: the answer was refused (OpenID Connect Core §5.3.4). The userinfo endpoint answered for someone else; check {name}'s configuration and any proxy in between."
                    ),
                }),
                retry: Retry::connection(connection),
                ..plain(
                    "Sign-in was not completed",
                    &format!(
                        "Signing in with {name} could not be completed. Please try again; if it keeps happening, contact your administrator."
                    ),
                )
            },
            AppError::Groups {
                connection,
                name,
                tenant,
                caller,
                source,
            } => Explanation {
                admin: Some(aadsts_fix.unwrap_or_else(|| groups_fix(tenant.as_deref(), *caller, source))),
                retry: Retry::connection(connection),
                ..plain(
                    "Sign-in was not completed",
                    &format!(
                        "Your groups could not be read from {name}, so this sign-in cannot be checked. Please try again in a few minutes; if it keeps happening, contact your administrator."
                    ),
                )
            },
            AppError::IdToken {
                connection,
                rejection,
            } => Explanation {
                admin: Some(format!(
                    "ID token rejected ({}). The log line with this reference has the values that did not match.",
                    rejection.code()
                )),
                retry: Retry::connection(connection),
                ..plain(
                    "Sign-in was refused",
                    "The sign-in answer could not be verified. Please try again; if it keeps happening, contact your administrator.",
                )
            },
            AppError::NotSignedIn => plain("Not signed in", "Please sign in."),
            AppError::UpstreamSignInAgain {
                connection, reason, ..
            } => Explanation {
                admin: Some(aadsts_fix.unwrap_or_else(|| match *reason {
                    "no_upstream_token" => "The session holds no access token for the upstream API: it signed in before the connection had an upstream table, or the IdP sent no access token. Signing in again gets one.".to_owned(),
                    "no_refresh_token" => "The upstream access token expired and the IdP issued no refresh token: check that offline_access is granted (Entra: API permissions, and the user's or admin consent).".to_owned(),
                    _ => "The IdP refused to refresh the upstream access token for good (revoked, expired, or it needs the user again), so the session ended. The log line with this reference and /admin/traces have its answer.".to_owned(),
                })),
                retry: Retry::connection(connection),
                ..plain(
                    "Please sign in again",
                    "Your sign-in has ended. Please sign in again.",
                )
            },
            AppError::UpstreamUnavailable { .. } => Explanation {
                admin: Some(aadsts_fix.unwrap_or_else(|| "The access token for the upstream API expired and refreshing it failed for now (the IdP did not answer, or answered with a temporary error). entrance tries again on the next request and keeps the session; the log line with this reference has the cause.".to_owned())),
                ..plain(
                    "Temporarily unavailable",
                    "Your sign-in could not be renewed right now. Please try again in a few minutes.",
                )
            },
            AppError::AccessTokenTooLarge { bytes, max, .. } => Explanation {
                admin: Some(format!(
                    "The access token for the upstream API is {bytes} bytes, over upstream.max_token_bytes ({max}). Raise upstream.max_token_bytes together with the proxy's buffer for the auth answer (README, \"Passing tokens to your app\"), or make the token smaller (fewer optional claims or groups in it)."
                )),
                ..plain(
                    "Something went wrong",
                    "This application cannot be used right now because of a configuration problem. Your administrator has to fix it.",
                )
            },
            AppError::BearerRejected { rejection, .. } => Explanation {
                admin: Some(format!(
                    "Access token rejected ({}): {rejection}",
                    rejection.code()
                )),
                ..plain(
                    "Access token refused",
                    &bearer_description(self).unwrap_or_default(),
                )
            },
            AppError::BearerInsufficient { reason, .. } => Explanation {
                admin: Some(format!(
                    "{reason}. Grant it in Entra (API permissions and admin consent for scopes; Enterprise applications → Users and groups, or the client's API permissions, for app roles), or change the connection's api table."
                )),
                ..plain("Access token refused", &reason.to_string())
            },
            AppError::BearerNotPermitted { .. } => Explanation {
                admin: Some("The token's user is in none of this connection's allowed_groups and holds none of its allowed_roles, which apply to API callers as to sign-ins.".to_owned()),
                ..plain(
                    "Access token refused",
                    "The user this token speaks for is not allowed to use this application.",
                )
            },
            AppError::BearerRequest(what) => plain(
                "Bad Authorization header",
                &format!("The request carries {what}; send exactly one Authorization: Bearer <token>."),
            ),
            AppError::RateLimited { .. } => plain(
                "Too many attempts",
                "Too many sign-in attempts came from your network. Please wait a minute and try again.",
            ),
            AppError::CrossSiteRequest => plain(
                "Request refused",
                "This request did not come from entrance's own page. To sign out, use the Sign out button on the start page.",
            ),
            AppError::RequestTimeout(limit) => Explanation {
                admin: Some(format!(
                    "The request was stopped after server.request_timeout_secs ({} s). The log lines with this reference id show the slow step: usually a call to the IdP (each bounded by http.timeout_secs) or the session store.",
                    limit.as_secs()
                )),
                ..plain(
                    "This took too long",
                    "entrance could not finish your request in time. Please try again in a moment.",
                )
            },
            AppError::Session(_) => plain(
                "Temporarily unavailable",
                "entrance cannot reach its session storage. Please try again in a moment.",
            ),
            // The link's page says what happened to it and who can help; never which
            // connection it was for, nor anything about other links or connections.
            AppError::SetupLink(unusable) => plain(
                "This setup link cannot be used",
                &format!(
                    "{} Ask the person who sent you this link for a new one.",
                    match unusable {
                        Unusable::Unknown => "This setup link is not valid: check that the whole link was copied.",
                        Unusable::Expired => "This setup link has expired.",
                        Unusable::Spent => "This setup link was already used: the setup it was for is complete.",
                        Unusable::Revoked => "This setup link was withdrawn.",
                    }
                ),
            ),
            AppError::SetupForm => plain(
                "Request refused",
                "This form did not come from its setup page. Open your setup link again and submit the form from there.",
            ),
            AppError::SetupLinkConflict(reason) | AppError::SetupLinkRequest(reason) => {
                Explanation {
                    admin: Some(reason.clone()),
                    ..plain("Setup link refused", reason)
                }
            }
            AppError::Internal(_) => plain(
                "Something went wrong",
                "An unexpected error happened. Please try again.",
            ),
        }
    }
}

/// The admin's fix for a group overage Graph could not resolve: which permission to grant, of
/// which kind, and in which tenant (the least-privileged one Graph documents for the call,
/// docs/reference/ENTRA-2.md §5). Graph's code is a fixed identifier, not its message.
fn groups_fix(tenant: Option<&str>, caller: Caller, source: &GraphError) -> String {
    let tenant = tenant
        .map(|t| format!("tenant {t}"))
        .unwrap_or_else(|| "the user's tenant".to_owned());
    let permission = caller.permission();
    match (source, caller) {
        (GraphError::Forbidden { code }, Caller::Delegated) => format!(
            "Microsoft Graph refused to list the user's groups (HTTP 403 {code}). In the app registration's API permissions add the delegated Microsoft Graph permission {permission} (the least-privileged one for /me/transitiveMemberOf) and make sure it is consented in {tenant}."
        ),
        (GraphError::Forbidden { code }, Caller::AppOnly) => format!(
            "Microsoft Graph refused to list the user's groups (HTTP 403 {code}). Add the application permission {permission} (Microsoft Graph; the least-privileged one for /users/{{id}}/transitiveMemberOf app-only) to the app registration, and have an admin of {tenant} grant admin consent (Enterprise applications → Permissions → Grant admin consent)."
        ),
        (GraphError::Throttled { .. }, _) => format!(
            "Microsoft Graph throttled the groups lookup in {tenant} (HTTP 429). entrance waits out a Retry-After of at most 2 s once; sign-ins work again when the tenant's Graph budget recovers."
        ),
        (GraphError::Transport(crate::oidc::http_client::FetchError::Timeout(t)), _) => format!(
            "Microsoft Graph did not answer within http.timeout_secs ({} s).",
            t.as_secs()
        ),
        (GraphError::Transport(_), _) => "Microsoft Graph could not be reached; the log line with this reference has the cause (graph.microsoft.com or the national cloud's Graph host, through HTTPS_PROXY if outbound traffic needs a proxy).".to_owned(),
        (GraphError::TooManyGroups { max }, _) => format!(
            "The user is in more than {max} groups, the connection's groups.max_groups: entrance never judges allowed_groups on part of a list. Raise groups.max_groups, or grant access by app roles (allowed_roles)."
        ),
        (GraphError::TooManyPages { max }, _) => format!(
            "The user's groups fill more than {max} Graph pages, the connection's groups.max_pages. Raise groups.max_pages (and groups.max_groups), or grant access by app roles (allowed_roles)."
        ),
        (GraphError::AppToken(_), _) => format!(
            "No app-only token for Microsoft Graph could be had from {tenant}'s token endpoint; the log line with this reference has the answer. An admin of {tenant} must consent to the application (with its {permission} application permission)."
        ),
        (GraphError::MissingClaim(claim), _) => format!(
            "The ID token carries no usable {claim}, which the Graph call needs; is this connection's IdP Entra ID?"
        ),
        (GraphError::Status { status: 401, code }, Caller::Delegated) => format!(
            "Microsoft Graph refused the sign-in's access token (HTTP 401 {code}): it is not a Graph token. Do not add another API's scopes to the connection's scopes; ask for an API's token with an upstream table (groups are then read app-only)."
        ),
        (GraphError::Status { status, code }, _) => format!(
            "Microsoft Graph answered HTTP {status} ({code}); the log line with this reference has the details."
        ),
        (
            GraphError::Malformed(_) | GraphError::ForeignNextLink(_) | GraphError::NoGraphHost(_),
            _,
        ) => format!(
            "Microsoft Graph's answer could not be used ({}); the log line with this reference has the details.",
            source.code()
        ),
    }
}

/// An OAuth `error` value as a page may show it: the IdP's token (`access_denied`), or a
/// placeholder when it is not one — the value comes from a URL anyone can craft, and a page
/// must not repeat a stranger's sentence under entrance's name.
fn oauth_error_code(error: &str) -> &str {
    let is_token = !error.is_empty()
        && error.len() <= 64
        && error
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if is_token { error } else { "an error" }
}

impl IntoResponse for AppError {
    /// The response carries the error itself; `edge::render` turns it into a page or JSON
    /// once it knows what the client accepts and the request's correlation id.
    fn into_response(self) -> Response {
        let mut res = self.status().into_response();
        if let AppError::RateLimited { retry_after } = &self
            && let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.as_secs().to_string())
        {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        if let Some(challenge) = www_authenticate(&self)
            && let Ok(v) = axum::http::HeaderValue::from_str(&challenge)
        {
            res.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, v);
        }
        res.extensions_mut().insert(Arc::new(self));
        res
    }
}

/// RFC 6750 §3's challenge for a refused bearer token: `error`, a readable
/// `error_description` and, for `insufficient_scope`, the `scope` that was needed.
fn www_authenticate(err: &AppError) -> Option<String> {
    let description = bearer_description(err)?;
    let mut challenge = format!(
        "Bearer error=\"{}\", error_description=\"{}\"",
        err.code(),
        quoted(&description)
    );
    if let AppError::BearerInsufficient { reason, .. } = err
        && let Some(scope) = reason.needed()
    {
        challenge.push_str(&format!(", scope=\"{}\"", quoted(&scope)));
    }
    Some(challenge)
}

/// The `error_description` of a bearer refusal: the rule, in words a client developer can act
/// on. Values a token chose (an audience, an issuer) are left out: they are the caller's own.
fn bearer_description(err: &AppError) -> Option<String> {
    Some(match err {
        AppError::BearerRejected { rejection, .. } => match rejection {
            Rejection::GraphToken => "the token is for Microsoft Graph, not for this API; request a token for this API's scope".to_owned(),
            Rejection::AudienceNotAccepted(_) => "the token's audience (aud) is not this API".to_owned(),
            Rejection::Expired => "the token has expired".to_owned(),
            Rejection::NotYetValid | Rejection::IssuedInFuture => "the token is not valid yet".to_owned(),
            Rejection::MissingClaim(claim) => format!("the token has no {claim} claim"),
            Rejection::TenantNotAllowed(_) => "the token's tenant is not allowed".to_owned(),
            Rejection::IssuerMismatch { .. } | Rejection::TenantMismatch { .. } => {
                "the token's issuer is not accepted".to_owned()
            }
            other => format!("the token is not valid ({})", other.code()),
        },
        AppError::BearerInsufficient { reason, .. } => reason.to_string(),
        AppError::BearerNotPermitted { .. } => {
            "the token's user is not allowed to use this application".to_owned()
        }
        AppError::BearerRequest(what) => format!("the request carries {what}"),
        _ => return None,
    })
}

/// RFC 6750 §3: `error_description` and `scope` are quoted strings of visible ASCII without
/// `"` or `\` (%x20-21 / %x23-5B / %x5D-7E).
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| matches!(*c as u32, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::token::OAuthError;

    fn retry(err: AppError) -> Option<String> {
        err.explain().retry.map(|r| r.href())
    }

    fn idp_error(error: &str) -> AppError {
        AppError::IdpError {
            connection: "contoso".into(),
            name: "Contoso".into(),
            error: error.into(),
            description: String::new(),
        }
    }

    fn refused(error: &str) -> AppError {
        AppError::Token {
            connection: "contoso".into(),
            name: "Contoso".into(),
            source: Box::new(TokenError::Refused {
                status: 400,
                error: OAuthError {
                    error: error.into(),
                    error_description: None,
                    error_codes: Vec::new(),
                    trace_id: None,
                    correlation_id: None,
                },
            }),
        }
    }

    #[test]
    fn an_expired_login_signs_in_again_towards_where_it_was_headed() {
        let href = retry(AppError::State {
            problem: StateProblem::Expired,
            connection: Some("contoso".into()),
            return_to: Some("https://app.example.com/reports?q=1".into()),
        });
        assert_eq!(
            href.as_deref(),
            Some(
                "/login?connection=contoso&return_to=https%3A%2F%2Fapp.example.com%2Freports%3Fq%3D1"
            )
        );
    }

    #[test]
    fn an_unknown_state_signs_in_again_from_the_start_page() {
        let href = retry(AppError::State {
            problem: StateProblem::Unknown,
            connection: None,
            return_to: None,
        });
        assert_eq!(href.as_deref(), Some("/"));
    }

    /// Issue 12.5: what a page or JSON error tells anyone who asks holds no IdP text, URL,
    /// issuer or subject; the AADSTS code and its fix stay.
    #[test]
    fn public_hints_hold_no_idp_text_urls_or_values() {
        const IDP_TEXT: &str = "Call +1-555-0100 to unlock your account";
        const URL: &str = "https://login.example/tenant/v2.0/.well-known/openid-configuration";
        let mut refused_with_text = refused("invalid_request");
        if let AppError::Token { source, .. } = &mut refused_with_text
            && let TokenError::Refused { error, .. } = &mut **source
        {
            error.error_description = Some(IDP_TEXT.into());
        }
        let cases = [
            AppError::IdpError {
                connection: "contoso".into(),
                name: "Contoso".into(),
                error: IDP_TEXT.into(),
                description: IDP_TEXT.into(),
            },
            refused_with_text,
            AppError::Token {
                connection: "contoso".into(),
                name: "Contoso".into(),
                source: Box::new(TokenError::Transport(
                    crate::oidc::http_client::FetchError::Status {
                        status: 500,
                        body: IDP_TEXT.into(),
                    },
                )),
            },
            AppError::not_ready(
                &crate::config::Config::load_str(&format!(
                    "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:3000\"\n[session]\nstore = \"memory\"\n[[connections]]\nid = \"contoso\"\nmetadata_url = \"{URL}\"\nclient_id = \"c\"\nclient_secret = \"s\""
                ))
                .expect("config")
                .connections[0],
                NotReady::Failed(crate::oidc::provider::ProviderError::Metadata {
                    url: URL.into(),
                    source: crate::oidc::http_client::FetchError::Connect(IDP_TEXT.into()),
                }),
            ),
            AppError::IssuerParameterMismatch {
                expected: URL.into(),
                actual: IDP_TEXT.into(),
            },
            AppError::IdToken {
                connection: "contoso".into(),
                rejection: Rejection::IssuerMismatch {
                    expected: URL.into(),
                    actual: IDP_TEXT.into(),
                },
            },
            AppError::Userinfo {
                connection: "contoso".into(),
                name: "Contoso".into(),
                source: UserinfoError::InsecureEndpoint(URL.into()),
            },
        ];
        for err in cases {
            let e = err.explain();
            let shown = format!("{} {} {:?}", e.title, e.user, e.admin);
            assert!(!shown.contains("555"), "{shown}");
            assert!(!shown.contains("login.example"), "{shown}");
            assert!(e.admin.is_some(), "{err}: still a hint for the admin");
        }
        // The AADSTS code and its fix are the hint that stays.
        let entra = AppError::IdpError {
            connection: "contoso".into(),
            name: "Contoso".into(),
            error: "access_denied".into(),
            description:
                "AADSTS50105: Your administrator has configured the application to block users."
                    .into(),
        };
        let admin = entra.explain().admin.expect("admin");
        assert!(
            admin.starts_with("AADSTS50105:") && admin.contains("Fix:"),
            "{admin}"
        );
    }

    #[test]
    fn sign_in_again_is_offered_for_the_connection_that_failed() {
        for error in ["access_denied", "consent_required", "unauthorized_client"] {
            assert_eq!(
                retry(idp_error(error)).as_deref(),
                Some("/login?connection=contoso"),
                "{error}"
            );
        }
        // An expired code, and a refused client after the admin's fix.
        for error in ["invalid_grant", "invalid_client"] {
            assert_eq!(
                retry(refused(error)).as_deref(),
                Some("/login?connection=contoso"),
                "{error}"
            );
        }
        // Nothing to sign in again for: the page links the start page instead.
        assert_eq!(retry(AppError::CrossSiteRequest), None);
    }
}
