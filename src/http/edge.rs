//! The two hand-written layers every request passes: [`Edge`] around the whole router
//! (correlation id and request span, errors rendered as HTML or JSON and logged once, the
//! session layer's bare 500, the security headers) and [`Routed`] around each route (metrics
//! by route template, failed logins, the request timeout).
//!
//! They are `tower::Service`s rather than `axum::middleware::from_fn` functions: each
//! `from_fn` boxes the rest of the stack into a `Next` and its own future for every request,
//! and `/auth`'s four of them moved its futures around (memcpy) for about a tenth of its
//! instructions (callgrind; docs/BENCHMARKS.md). Here each layer costs one boxed future.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Json,
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{AppState, CorrelationId, error::AppError, pages, setup, setup_admin, traces};
use crate::metrics::{FailureLabels, RouteLabels};

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Puts [`Edge`] around a service: the public router, whose session layer's bare 500s it
/// turns into rendered errors (`sessions`), and the admin router, which has no sessions.
#[derive(Clone, Copy, Debug)]
pub(super) struct EdgeLayer {
    pub(super) sessions: bool,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            sessions: self.sessions,
        }
    }
}

/// See [`render`].
#[derive(Clone, Debug)]
pub(super) struct Edge<S> {
    inner: S,
    sessions: bool,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was made ready is the one called (tower's `Service` contract).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let sessions = self.sessions;
        Box::pin(async move { Ok(render(req, inner, sessions).await) })
    }
}

/// Puts [`Routed`] around each route: `state` for the metrics and traces, `timeout` the
/// `server.request_timeout_secs`.
#[derive(Clone)]
pub(super) struct RoutedLayer {
    pub(super) state: AppState,
    pub(super) timeout: Duration,
}

impl<S> Layer<S> for RoutedLayer {
    type Service = Routed<S>;

    fn layer(&self, inner: S) -> Routed<S> {
        Routed {
            inner,
            state: self.state.clone(),
            timeout: self.timeout,
        }
    }
}

/// See [`track`].
#[derive(Clone)]
pub(super) struct Routed<S> {
    inner: S,
    state: AppState,
    timeout: Duration,
}

impl<S> Service<Request> for Routed<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let (state, timeout) = (self.state.clone(), self.timeout);
        Box::pin(async move { Ok(track(req, inner, state, timeout).await) })
    }
}

/// Runs a routed request under `server.request_timeout_secs` (reading the body included;
/// dropping the handler's future cancels its outbound calls; a request stopped this way
/// answers [`AppError::RequestTimeout`]; the headers' own deadline is the listener's,
/// `server.header_read_timeout_secs` in `app/serve.rs`), then counts it by its route
/// template, and failed login callbacks by connection and reason. Runs inside the routing,
/// where the error a handler returned is still on the response, and outside the timeout, so
/// a request stopped by it is counted (and a callback's recorded as a failed login) like any
/// other error.
async fn track<S>(req: Request, mut inner: S, state: AppState, timeout: Duration) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let matched = req.extensions().get::<MatchedPath>();
    let is_callback = matched.is_some_and(|m| m.as_str() == CALLBACK_PATH);
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method());
    let correlation_id = req.extensions().get::<CorrelationId>().map(|c| c.0.clone());
    let started = std::time::Instant::now();
    let res = match tokio::time::timeout(timeout, inner.call(req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(never)) => match never {},
        Err(_elapsed) => AppError::RequestTimeout(timeout).into_response(),
    };
    let m = &state.metrics;
    let labels = RouteLabels {
        route,
        method: method.to_owned(),
        status: res.status().as_u16(),
    };
    m.request(labels, started.elapsed().as_secs_f64());
    if let Some(err) = res.extensions().get::<Arc<AppError>>() {
        if matches!(**err, AppError::Session(_)) {
            m.session_store_errors.inc();
        }
        if is_callback {
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

/// tower-sessions answers a store failure in its own after-response save with a bare, empty
/// 500. Handlers save explicitly (so that failure is theirs to report), but a session still
/// marked modified is saved once more by the layer, and the store can fail in between. Every
/// error a handler produces carries an [`AppError`]; a 500 without one can only come from the
/// session layer, so it becomes [`AppError::Session`] (503) and is rendered like any other.
/// The layer sets no cookie on that path, so the browser is not handed a session id whose
/// record may be half-written.
fn session_layer_failure(res: Response) -> Response {
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
pub(super) fn loggable_path(path: &str) -> &str {
    if path.starts_with(setup::PREFIX) {
        "/setup/{token}"
    } else {
        path
    }
}

/// Paths that run without a request span unless they fail (see [`render`]).
const HOT_PATHS: &[&str] = &["/auth", "/healthz"];

/// Gives each request a correlation id and a span, renders an [`AppError`] carried by the
/// response as HTML or JSON, logs it once, and sets the security headers. With OpenTelemetry
/// traces on (`crate::telemetry`), the span continues the trace of the request's W3C
/// `traceparent` and the correlation id is the trace id, so the reference on an error page
/// finds the trace.
async fn render<S>(mut req: Request, mut inner: S, sessions: bool) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
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
    let res = match inner.call(req).instrument(span.clone()).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let mut res = if sessions {
        session_layer_failure(res)
    } else {
        res
    };
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
        // Every value of each (two Set-Cookie headers stay two). A callback refused for its
        // state (already used: a double submit, a second tab) sets no cookie at all: when it
        // read the session after the winning callback had moved it to a new id, the session
        // layer answers the old id's cookie with a removal, and that removal, arriving after
        // the winner's cookie, would delete the new one and sign the browser out.
        let refused_state = uri.path() == CALLBACK_PATH && matches!(*err, AppError::State { .. });
        for name in res.headers().keys() {
            if name == header::CONTENT_LENGTH || (refused_state && name == header::SET_COOKIE) {
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
