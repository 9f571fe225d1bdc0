//! All web code: the shared state, the router, and the middleware every response passes
//! through (correlation id, error rendering, security headers).

mod auth;
mod bearer;
mod callback;
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
    Json, Router,
    extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{any, get, post},
};
use serde::de::DeserializeOwned;
use tower_sessions::{SessionManagerLayer, cookie::SameSite};
use tracing::Instrument;

use crate::{
    clock::Clock,
    config::{Config, TenantAllowList},
    http::error::AppError,
    metrics::{FailureLabels, Metrics, RouteLabels},
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
            get(me::me).layer(middleware::from_fn_with_state(
                state.clone(),
                bearer::intercept,
            )),
        )
        .route(
            "/auth",
            any(auth::auth).layer(middleware::from_fn_with_state(
                state.clone(),
                bearer::intercept,
            )),
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
        // Inside `track_metrics`, so a request stopped by the timeout is counted (and a
        // callback's recorded as a failed login) like any other error.
        .route_layer(middleware::from_fn_with_state(
            state.config.server.request_timeout,
            request_timeout,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .with_state(state);
    // The layers every request passes, around the whole router rather than added with
    // `Router::layer`: that wraps each route in each layer, and axum clones a matched route's
    // whole stack of boxed services for every request — 48 allocations and about a seventh
    // of a `GET /auth`'s instructions (callgrind; docs/BENCHMARKS.md). Around the router
    // they are one stack, cloned once per request as one box.
    let layered = tower::ServiceBuilder::new()
        .layer(middleware::from_fn(render_errors))
        // The largest legitimate body is a form_post callback (a code and a state); 64 KiB
        // leaves room for an IdP's long error_description and refuses anything bigger.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn(session_layer_failures))
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
        .layer(middleware::from_fn(render_errors))
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
/// The `method` label: a fixed set, because `/auth` answers any method and a label per
/// method token a client invents would grow `/metrics` without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        _ => "OTHER",
    }
}

/// Counts every routed request by its route template, and failed login callbacks by
/// connection and reason. Runs inside the routing, where the error a handler returned is
/// still on the response.
async fn track_metrics(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let correlation_id = req.extensions().get::<CorrelationId>().map(|c| c.0.clone());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let m = &state.metrics;
    let labels = RouteLabels {
        route,
        method,
        status: res.status().as_u16(),
    };
    m.requests.get_or_create(&labels).inc();
    m.request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if let Some(err) = res.extensions().get::<Arc<AppError>>() {
        if matches!(**err, AppError::Session(_)) {
            m.session_store_errors.inc();
        }
        if labels.route == "/login/callback" {
            // Only bounded values become labels: the rule that rejected an ID token is one
            // of a fixed set, an IdP's `error` string is not.
            let reason = match &**err {
                AppError::IdToken { rejection, .. } => rejection.code(),
                other => other.code(),
            };
            m.logins_failed
                .get_or_create(&FailureLabels {
                    connection: err.connection().unwrap_or("unknown").to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
            // Rate-limited requests are counted above but not kept: a flood of them would
            // push the failures an operator is looking for out of the ring.
            if !matches!(**err, AppError::RateLimited { .. }) {
                traces::record(&state, err, correlation_id.as_deref().unwrap_or(""));
            }
        }
    }
    res
}

/// Stops a routed request that takes longer than `server.request_timeout_secs`, reading the
/// body included, and answers [`AppError::RequestTimeout`]. Dropping the handler's future
/// cancels its outbound calls. The headers' own deadline is the listener's
/// (`server.header_read_timeout_secs`, in `app/serve.rs`).
async fn request_timeout(
    State(limit): State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_elapsed) => AppError::RequestTimeout(limit).into_response(),
    }
}

/// tower-sessions answers a store failure in its own after-response save with a bare, empty
/// 500. Handlers save explicitly (so that failure is theirs to report), but a session still
/// marked modified is saved once more by the layer, and the store can fail in between. Every
/// error a handler produces carries an [`AppError`]; a 500 without one can only come from the
/// session layer, so it becomes [`AppError::Session`] (503) and is rendered like any other.
/// The layer sets no cookie on that path, so the browser is not handed a session id whose
/// record may be half-written.
async fn session_layer_failures(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if res.status() == StatusCode::INTERNAL_SERVER_ERROR
        && res.extensions().get::<Arc<AppError>>().is_none()
    {
        return AppError::Session(tower_sessions::session::Error::Store(
            tower_sessions::session_store::Error::Backend(
                "saving the session after the response failed".into(),
            ),
        ))
        .into_response();
    }
    res
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

const CALLBACK_PATH: &str = "/login/callback";

const JSON_PATHS: &[&str] = &[
    "/me",
    "/auth",
    "/healthz",
    "/readyz",
    traces::PATH,
    setup_admin::PATH,
];

/// The path as logs and traces show it: a setup page's path holds its link's token, which
/// is a credential (issue 17) and is kept out of every log line.
fn loggable_path(path: &str) -> &str {
    if path.starts_with(setup::PREFIX) {
        "/setup/{token}"
    } else {
        path
    }
}

/// Paths that run without a request span unless they fail (see `render_errors`).
const HOT_PATHS: &[&str] = &["/auth", "/healthz"];

/// Gives each request a correlation id and a span, renders an [`AppError`] carried by the
/// response as HTML or JSON, logs it once, and sets the security headers. With OpenTelemetry
/// traces on (`crate::telemetry`), the span continues the trace of the request's W3C
/// `traceparent` and the correlation id is the trace id, so the reference on an error page
/// finds the trace.
async fn render_errors(mut req: Request, next: Next) -> Response {
    let wants_json = JSON_PATHS.contains(&req.uri().path())
        || req.uri().path().starts_with(setup_admin::PATH)
        || prefers_json(&req);
    let request_span = |method: &axum::http::Method, path: &str| tracing::info_span!("request", %method, path, correlation_id = tracing::field::Empty);
    // The forward-auth check runs before every request to every protected app and logs
    // nothing when it succeeds, so it gets no span of its own (a span is ~10 % of its CPU);
    // a failure is still logged below inside one, with the correlation id. With traces on,
    // `/auth` gets its span anyway: the proxy's trace of a request to a protected app holds
    // the check, and whoever turned traces on chose to pay for spans (a sampler,
    // `OTEL_TRACES_SAMPLER`, is the knob). `/healthz` never does: probes are not traces.
    let exporting = crate::telemetry::exporting();
    let hot = HOT_PATHS.contains(&req.uri().path()) && !(exporting && req.uri().path() == "/auth");
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let span = if hot {
        tracing::Span::none()
    } else if exporting {
        tracing::info_span!(
            "request",
            %method,
            path = loggable_path(uri.path()),
            correlation_id = tracing::field::Empty,
            otel.kind = "server",
            otel.name = %format_args!("{method} {}", loggable_path(uri.path())),
            otel.status_code = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        request_span(&method, loggable_path(uri.path()))
    };
    let correlation_id: Arc<str> = match crate::telemetry::continue_trace(&span, req.headers()) {
        Some(trace_id) => trace_id.into(),
        None => uuid::Uuid::new_v4().simple().to_string().into(),
    };
    span.record("correlation_id", &*correlation_id);
    req.extensions_mut()
        .insert(CorrelationId(correlation_id.clone()));
    let mut res = next.run(req).instrument(span.clone()).await;
    if exporting {
        let status = res.status();
        span.record("http.response.status_code", i64::from(status.as_u16()));
        // OpenTelemetry HTTP semantic conventions: a server span is an error for a 5xx only,
        // and a 404 is named by its method alone (no unbounded span names from scanners).
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        if status == StatusCode::NOT_FOUND {
            span.record("otel.name", method.as_str());
        }
    }

    if let Some(err) = res.extensions_mut().remove::<Arc<AppError>>() {
        let span = if hot {
            let span = request_span(&method, loggable_path(uri.path()));
            span.record("correlation_id", &*correlation_id);
            span
        } else {
            span
        };
        let _enter = span.enter();
        let status = res.status();
        let detail = err.detail();
        // The full story stays here, with the reference id: the error with its URLs and
        // values, and the IdP's own description. The page gets only `explain`'s hint.
        // Escaped: a token endpoint's text reaches here as sent (issue 12.6).
        let idp_description = err.idp_description().map(|d| d.escape_debug().to_string());
        let idp_description = idp_description.as_deref();
        if status.is_server_error() {
            tracing::error!(error = %err, code = err.code(), detail, idp_description, "request failed");
        } else {
            tracing::warn!(error = %err, code = err.code(), detail, idp_description, "request refused");
        }
        let explanation = err.explain();
        let retry_href = explanation.retry.as_ref().map(|r| r.href());
        let mut body = if wants_json {
            Json(serde_json::json!({
                "error": err.code(),
                "reason": detail,
                "message": explanation.user,
                "admin": explanation.admin,
                "aadsts": err.aadsts(),
                "correlation_id": &*correlation_id,
            }))
            .into_response()
        } else {
            Html(pages::error_page(&pages::ErrorPage {
                title: &explanation.title,
                user_message: &explanation.user,
                admin_message: explanation.admin.as_deref(),
                retry_href: retry_href.as_deref(),
                correlation_id: &correlation_id,
            }))
            .into_response()
        };
        *body.status_mut() = status;
        // The error's own headers (a Location, Set-Cookie, Retry-After), not its length:
        // the router has already set the Content-Length of the body this one replaces.
        // Every value of each (two Set-Cookie headers stay two).
        for name in res.headers().keys() {
            if name == header::CONTENT_LENGTH {
                continue;
            }
            body.headers_mut().remove(name);
            for value in res.headers().get_all(name) {
                body.headers_mut().append(name.clone(), value.clone());
            }
        }
        res = body;
    }

    let h = res.headers_mut();
    // A page with its own policy (the form_post relay allows its one script) keeps it.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(pages::content_security_policy()),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`: no Referer ever leaves for another origin, and a same-origin POST keeps
    // its real Origin (under `no-referrer` it becomes `null`, Fetch standard "append a
    // request `Origin` header", which is what browsers without Sec-Fetch-Site would send for
    // our own Sign out button; see `logout::from_our_own_page`). The callback's URL carries
    // the authorization code, so its pages send no Referer at all, not even to us.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static(if uri.path() == CALLBACK_PATH {
            "no-referrer"
        } else {
            "same-origin"
        }),
    );
    // Every response here is per-user or per-login; none may be cached by a browser or proxy.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        h.insert(X_CORRELATION_ID, v);
    }
    res
}

const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

fn prefers_json(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("json") && !a.contains("text/html"))
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use axum::body::Body;
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
        let credentials = crate::oidc::token::attempts(&config.connections[0].credential);
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
            .layer(middleware::from_fn(session_layer_failures))
            .layer(middleware::from_fn(render_errors));
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
