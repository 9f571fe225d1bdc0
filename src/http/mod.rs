//! All web code: the shared state, the router, and the middleware every response passes
//! through (correlation id, error rendering, security headers).

mod auth;
mod bearer;
mod callback;
mod edge;
pub(crate) mod error;
mod extract;
mod health;
mod home;
pub(crate) mod limits;
mod login;
mod logout;
mod me;
pub(crate) mod pages;
mod setup;
mod setup_admin;
pub(crate) mod traces;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequestParts, State},
    http::{header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde::de::DeserializeOwned;
use tower_sessions::{SessionManagerLayer, cookie::SameSite};

use crate::{
    clock::Clock,
    config::{Config, TenantAllowList},
    http::error::AppError,
    metrics::Metrics,
    oidc::http_client::HttpClient,
    oidc::identity::Identity,
    oidc::provider::Connection,
    rotation::LiveConnections,
    session::PENDING_LIFETIME,
    session::store::AnyStore,
};

/// What every handler can reach. Cloned several times per request (each `State` extractor
/// and middleware), so it is one `Arc`: one reference count to touch, not six.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub(crate) struct Shared {
    /// The startup configuration. Its `connections` are not reloaded: use
    /// [`AppState::connections`], which a SIGHUP reload replaces.
    pub config: Arc<Config>,
    pub connections: LiveConnections,
    pub http: HttpClient,
    /// The session store, for `/readyz`'s probe; requests reach it through their `Session`.
    pub store: AnyStore,
    pub metrics: Arc<Metrics>,
    /// The last failed logins per connection, for `/admin/traces`.
    pub traces: Arc<crate::traces::Traces>,
    /// The clock entrance keeps its own times by (absolute lifetime, idle-refresh step,
    /// pending logins' age): the real one, or a test's ([`crate::Application::with_clock`]).
    pub clock: Clock,
    /// App-only Microsoft Graph tokens per tenant, for group overage (`oidc::graph`).
    pub graph_tokens: Arc<crate::oidc::graph::AppTokens>,
    /// Signed-in users parsed lately, by their stored JSON (`session.cache_entries`).
    pub users: Arc<crate::session::ParsedUsers>,
}

impl Shared {
    /// The live connection with this id (after a reload, the reloaded one: a pending login
    /// names its connection by id, so it finishes under the new configuration).
    pub(crate) fn connection(&self, id: &str) -> Result<Arc<Connection>, AppError> {
        self.connections
            .load()
            .iter()
            .find(|c| c.config.id == id)
            .cloned()
            .ok_or_else(|| AppError::UnknownConnection(id.to_owned()))
    }

    /// The live connection a signed-in user came through, if it still admits the user's
    /// tenant. A connection removed by a reload, or a tenant taken out of its
    /// `allowed_tenants` (the rule the verifier applies at sign-in,
    /// `oidc::verifier::check_tenant`), leaves its sessions not signed in: the records stay
    /// until they expire, and count again if the connection comes back.
    pub(crate) fn session_connection(&self, id: &Identity) -> Option<Arc<Connection>> {
        let conn = self.connection(&id.connection).ok()?;
        let tenant_allowed = match &conn.config.allowed_tenants {
            TenantAllowList::Any => true,
            only => id.tid.as_deref().is_some_and(|tid| only.allows(tid)),
        };
        tenant_allowed.then_some(conn)
    }
}

/// The request's correlation id, also in every log line of the request and on error pages.
#[derive(Clone, Debug)]
pub(crate) struct CorrelationId(pub Arc<str>);

/// Where the setup-link admin API is, for `entrance setup-link`.
pub(crate) fn setup_admin_path() -> &'static str {
    setup_admin::PATH
}

/// The routes of the setup-link admin API (`setup_admin`), for the listener `on_admin` says.
fn setup_admin_routes(on_admin: bool) -> Router<AppState> {
    Router::new()
        .route(
            setup_admin::PATH,
            get(setup_admin::list).post(setup_admin::create),
        )
        .route(setup_admin::REVOKE_PATH, post(setup_admin::revoke))
        .layer(axum::Extension(setup_admin::OnAdmin(on_admin)))
}

pub(crate) fn router(
    state: AppState,
    limiter: Option<limits::LoginLimiter>,
    setup_limiter: limits::LoginLimiter,
) -> Router {
    let mut sessions = SessionManagerLayer::new(state.store.clone())
        .with_name(state.config.session.cookie_name.clone())
        // Lax, not tower-sessions' default Strict: a Strict cookie is not sent on the
        // top-level navigation back from the IdP, and the callback would find no session.
        .with_same_site(SameSite::Lax)
        .with_http_only(true)
        .with_secure(state.config.session.secure_cookie)
        .with_path("/")
        .with_expiry(tower_sessions::Expiry::OnInactivity(
            time::Duration::seconds(PENDING_LIFETIME.as_secs() as i64),
        ));
    if let Some(domain) = &state.config.session.cookie_domain {
        sessions = sessions.with_domain(domain.clone());
    }

    let mut login_routes = Router::new().route("/login", get(login::login)).route(
        "/login/callback",
        get(callback::callback_get).post(callback::callback_post),
    );
    if let Some(limiter) = limiter {
        login_routes =
            login_routes.route_layer(middleware::from_fn_with_state(limiter, limits::limit));
    }

    // The setup pages (issue 17): rate-limited whatever `[rate_limit]` says.
    let setup_routes = Router::new()
        .route("/setup/{token}", get(setup::page).post(setup::submit))
        .route(setup::TEST_PATH, post(setup::test_sign_in))
        .route(
            "/setup/{token}/certificate",
            post(setup::generate_certificate),
        )
        .route(
            "/setup/{token}/certificate.cer",
            get(setup::certificate_cer),
        )
        .route(
            "/setup/{token}/certificate.pem",
            get(setup::certificate_pem),
        )
        .route_layer(middleware::from_fn_with_state(setup_limiter, limits::limit));

    let mut router = Router::new()
        .merge(login_routes)
        .merge(setup_routes)
        // Bearer access tokens (connections' `api`) are answered before the session is read.
        .route(
            "/me",
            get(me::me).layer(bearer::InterceptLayer(state.clone())),
        )
        .route(
            "/auth",
            any(auth::auth).layer(bearer::InterceptLayer(state.clone())),
        )
        .route("/logout", get(logout::confirm).post(logout::logout))
        .route("/logout/frontchannel", get(logout::front_channel))
        .route("/", get(home::home))
        .route("/healthz", get(health::healthz))
        // Status only: connection names, secret expiry and store errors are for the admin
        // listener (issue 12.5).
        .route("/readyz", get(health::readyz_status));
    // With an admin listener, metrics and traces live only there, off the public address.
    // Without one, metrics stay here, and traces only when the operator said that no proxy
    // on this host relays to entrance (`admin.allow_loopback_without_proxy`): such a proxy's
    // requests come from loopback too (issue 12.4).
    if state.config.admin_listen.is_none() {
        router = router.route("/metrics", get(metrics_endpoint));
        if state.config.admin_on_loopback {
            router = router
                .route(traces::PATH, get(traces::local_only))
                .merge(setup_admin_routes(false));
        }
    }
    let router: Router = router
        // Metrics by route template and the request timeout (`edge::track`).
        .route_layer(edge::RoutedLayer {
            state: state.clone(),
            timeout: state.config.server.request_timeout,
        })
        .with_state(state);
    // The layers every request passes, around the whole router rather than added with
    // `Router::layer`: that wraps each route in each layer, and axum clones a matched route's
    // whole stack of boxed services for every request — 48 allocations and about a seventh
    // of a `GET /auth`'s instructions (callgrind; docs/BENCHMARKS.md). Around the router
    // they are one stack, cloned once per request as one box.
    let layered = tower::ServiceBuilder::new()
        .layer(edge::EdgeLayer { sessions: true })
        // The largest legitimate body is a form_post callback (a code and a state); 64 KiB
        // leaves room for an IdP's long error_description and refuses anything bigger.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(sessions)
        .service(router);
    Router::new().fallback_service(layered)
}

/// The admin listener's router: metrics, readiness details and traces, nothing a browser
/// uses. Its errors are rendered, and its answers carry `Cache-Control: no-store` and the
/// other headers, as the public router's do: they hold failed logins and readiness details.
pub(crate) fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route("/readyz", get(health::readyz))
        .route("/healthz", get(health::healthz))
        .route(traces::PATH, get(traces::admin))
        .merge(setup_admin_routes(true))
        .layer(edge::EdgeLayer { sessions: false })
        .with_state(state)
}

async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Query parameters, with a malformed query (bad percent-encoding, a duplicated field, a
/// wrong type) answered through [`AppError`] like every other error instead of axum's bare
/// text rejection.
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(Params)
            .map_err(|e| AppError::BadRequest(format!("query string: {e}")))
    }
}

/// A POSTed `application/x-www-form-urlencoded` body as `T`: another media type is 415, a
/// body over the layer's limit 413, a body that does not parse 400 (the callback's
/// `form_post` and the setup form).
pub(super) fn form_body<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, AppError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(AppError::UnsupportedMediaType);
    }
    let body = body.map_err(|e| match e {
        axum::extract::rejection::BytesRejection::FailedToBufferBody(_) => {
            AppError::PayloadTooLarge
        }
        other => AppError::BadRequest(other.body_text()),
    })?;
    serde_urlencoded::from_bytes(&body).map_err(|e| AppError::BadRequest(format!("form body: {e}")))
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use axum::{body::Body, extract::Request, http::StatusCode};
    use tower::ServiceExt;
    use tower_sessions::{
        Session, SessionStore,
        session::{Id, Record},
        session_store,
    };

    use super::*;

    /// A store that is down for writes.
    #[derive(Debug)]
    struct WritesFail;

    #[async_trait]
    impl SessionStore for WritesFail {
        async fn save(&self, _: &Record) -> session_store::Result<()> {
            Err(session_store::Error::Backend("read-only".into()))
        }
        async fn load(&self, _: &Id) -> session_store::Result<Option<Record>> {
            Ok(None)
        }
        async fn delete(&self, _: &Id) -> session_store::Result<()> {
            Ok(())
        }
    }

    #[async_trait]
    impl crate::session::store::RecordStore for WritesFail {
        async fn put(&self, _: &Record) -> session_store::Result<()> {
            Err(session_store::Error::Backend("read-only".into()))
        }
        async fn insert_new(&self, _: &Record) -> session_store::Result<bool> {
            Err(session_store::Error::Backend("read-only".into()))
        }
    }

    /// Issue 12.10: every type that holds a PKCE verifier, a nonce, a state, a code, an ID or
    /// access token or a client secret prints none of them under `{:?}`.
    #[tokio::test]
    async fn debug_never_prints_a_secret() {
        use figment::providers::Format;

        const SECRET: &str = "s3cr3t-7f2a9c";
        let mut printed = Vec::new();

        let pending = crate::session::PendingLogin {
            state: SECRET.into(),
            connection: "contoso".into(),
            nonce: SECRET.into(),
            pkce_verifier: SECRET.into(),
            return_to: "/".into(),
            response_mode: "query".into(),
            created_at: 0,
            test_of_link: None,
        };
        printed.push(format!("{pending:?}"));

        let claims: crate::oidc::verifier::IdTokenClaims =
            serde_json::from_value(serde_json::json!({
                "iss": "https://idp.example", "sub": "alice", "aud": ["entrance"],
                "exp": 2, "iat": 1, "nonce": SECRET, "groups": [], "roles": [],
                "groups_claim_source": false,
            }))
            .expect("claims");
        printed.push(format!("{claims:?}"));

        let signed_in = crate::session::SignedIn {
            identity: Identity {
                user: "oidc:https%3A%2F%2Fidp.example:alice".into(),
                connection: "contoso".into(),
                iss: "https://idp.example".into(),
                sub: "alice".into(),
                oid: None,
                tid: None,
                name: None,
                email: None,
                email_verified: false,
                preferred_username: None,
                login_hint: None,
                sid: None,
                groups: Vec::new(),
                roles: Vec::new(),
                groups_overage: false,
            },
            issued_at: 1,
            expires_at: 2,
            id_token: SECRET.into(),
        };
        printed.push(format!("{signed_in:?}"));

        let params: callback::CallbackParams =
            serde_urlencoded::from_str(&format!("state={SECRET}&code={SECRET}")).expect("params");
        printed.push(format!("{params:?}"));

        let tokens = crate::oidc::token::TokenResponse {
            id_token: SECRET.into(),
            access_token: Some(SECRET.into()),
            refresh_token: Some(SECRET.into()),
            expires_in: Some(1),
        };
        printed.push(format!("{tokens:?}"));
        let kept = crate::session::upstream::UpstreamTokens {
            access_token: SECRET.into(),
            refresh_token: Some(SECRET.into()),
            expires_at: 1,
        };
        printed.push(format!("{kept:?}"));

        let toml = format!(
            r#"
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:3000"
[session]
store = "redis"
redis_url = "redis://:{SECRET}@127.0.0.1:6379"
[[connections]]
id = "contoso"
metadata_url = "http://127.0.0.1:9/tenant/v2.0/.well-known/openid-configuration"
client_id = "entrance"
client_secret = "{SECRET}"
"#
        );
        let raw: crate::config::RawConfig = figment::Figment::new()
            .merge(figment::providers::Toml::string(&toml))
            .extract()
            .expect("raw config");
        printed.push(format!("{raw:?}"));
        let config = Config::from_raw(raw, &|_| None).expect("config");
        printed.push(format!("{config:?}"));
        let lenient = Config::load_str_lenient(&toml).expect("lenient config");
        printed.push(format!("{lenient:?}"));
        let credentials = crate::oidc::token::attempts(&config.connections[0]);
        printed.push(format!("{credentials:?}"));

        // A memory store holding a session with a pending login in it.
        let store = crate::session::store::MemoryStore::default();
        let mut record = tower_sessions::session::Record {
            id: Default::default(),
            data: [("pending".to_owned(), serde_json::json!([pending]))]
                .into_iter()
                .collect(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        store.create(&mut record).await.expect("stored");
        printed.push(format!("{store:?}"));

        for text in &printed {
            assert!(!text.contains(SECRET), "{text}");
        }
        // Printed at all, and the redaction is visible.
        assert!(
            printed[0].contains("pkce_verifier: <redacted>"),
            "{}",
            printed[0]
        );
        assert!(
            printed[2].contains("id_token: <redacted>"),
            "{}",
            printed[2]
        );
    }

    #[tokio::test]
    async fn a_failed_save_by_the_session_layer_becomes_a_rendered_503() {
        // A handler that changes the session and leaves saving to the layer.
        async fn handler(session: Session) -> &'static str {
            let _ = session.insert("k", 1).await;
            "ok"
        }
        let store = AnyStore::new(Arc::new(WritesFail), Duration::from_secs(1));
        let app = Router::new()
            .route("/x", get(handler))
            .layer(SessionManagerLayer::new(store))
            .layer(edge::EdgeLayer { sessions: true });
        let res = app
            .oneshot(
                Request::builder()
                    .uri("/x")
                    .header(header::ACCEPT, "text/html")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("Reference: "), "{body}");
    }
}
