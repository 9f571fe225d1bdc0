//! OpenTelemetry traces from the real `entrance` binary (the subscriber and the tracer provider
//! are process-global, so it runs as a subprocess): an OTLP/HTTP receiver on loopback collects
//! what a sign-in exports, and the span tree, the trace context passed in and on, the
//! correlation id and the absence of every secret are held to it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use mock_idp::{Behaviour, MockIdp, MockIdpSettings};
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::helpers::browser;
use crate::process::{
    authorize_noting_secrets, encodings, note_issued_secrets, sigterm, start_with,
};

/// An OTLP/HTTP receiver (`POST /v1/traces`, protocol http/json) keeping every body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

async fn receiver() -> Receiver {
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn traces(State(bodies): State<Arc<Mutex<Vec<String>>>>, body: Bytes) -> &'static str {
        bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(String::from_utf8_lossy(&body).into_owned());
        "{}"
    }
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, bodies }
}

/// One exported span, flattened from OTLP/JSON.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i64,
    attributes: HashMap<String, Value>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<String> {
        let v = self.attributes.get(key)?;
        v.get("stringValue")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                v.get("intValue")
                    .map(|i| i.to_string().trim_matches('"').to_owned())
            })
    }
}

fn spans(bodies: &[String]) -> Vec<Span> {
    let mut out = Vec::new();
    for body in bodies {
        let doc: Value = serde_json::from_str(body).expect("OTLP/JSON");
        for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let attributes = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| Some((a["key"].as_str()?.to_owned(), a["value"].clone())))
                        .collect();
                    out.push(Span {
                        trace_id: s["traceId"].as_str().unwrap_or("").to_ascii_lowercase(),
                        span_id: s["spanId"].as_str().unwrap_or("").to_ascii_lowercase(),
                        parent: s["parentSpanId"]
                            .as_str()
                            .unwrap_or("")
                            .to_ascii_lowercase(),
                        name: s["name"].as_str().unwrap_or("").to_owned(),
                        kind: s["kind"].as_i64().unwrap_or(0),
                        attributes,
                    });
                }
            }
        }
    }
    out
}

/// The span of `trace` named `name` (exactly one).
fn one<'a>(spans: &'a [Span], trace: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} span in trace {trace}: {spans:#?}"
    );
    found[0]
}

/// The server span of `trace` (the request's), which must be named `name`.
fn server<'a>(spans: &'a [Span], trace: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.kind == 2)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one server span in trace {trace}: {spans:#?}"
    );
    assert_eq!(found[0].name, name);
    found[0]
}

/// The names of the direct children of `parent` that are entrance's own (at `RUST_LOG=trace`
/// dependencies add spans of theirs).
fn children(spans: &[Span], parent: &Span) -> Vec<String> {
    let mut names: Vec<String> = spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent == parent.span_id)
        .filter(|s| s.attr("target").is_some_and(|t| t.starts_with("entrance")))
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

const LOGIN_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLBACK_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PROXY_SPAN: &str = "b7ad6b7169203331";
const ERROR_TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{PROXY_SPAN}-01")
}

#[tokio::test]
async fn a_sign_in_exports_its_span_tree_continues_the_proxy_trace_and_no_secret() {
    let collector = receiver().await;
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("IdP");
    // Every step of a sign-in: userinfo, and a group overage read from Microsoft Graph.
    let app = start_with(
        &idp,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            // Every span and event there is, dependencies' too: none may carry a secret.
            ("RUST_LOG", "trace"),
            // Only the shutdown flush can deliver within the test: entrance must flush.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
        &format!("[telemetry]\notlp_endpoint = \"{}\"\n", collector.url),
        |_| {
            "client_secret_env = \"ENTRANCE_TEST_SECRET\"\nuserinfo = true\n\
             groups = { resolve_overage = true }"
                .to_owned()
        },
    )
    .await;
    idp.set_behaviour(Behaviour {
        group_count: Some(250),
        ..Default::default()
    });

    let client = browser();
    let mut secrets: Vec<(String, String)> = Vec::new();
    let res = client
        .get(format!("{}/login", app.base))
        .header("traceparent", traceparent(LOGIN_TRACE))
        .send()
        .await
        .expect("login");
    let callback = authorize_noting_secrets(&res, &mut secrets).await;
    // A new signing key: the ID token names a kid entrance has not seen, so it refetches keys.
    idp.rotate_signing_key(true);
    let res = client
        .get(&callback)
        .header("traceparent", traceparent(CALLBACK_TRACE))
        .send()
        .await
        .expect("callback");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed in");
    // With traces on, /auth has a span (the proxy's trace holds the check); /healthz not.
    let auth = client
        .get(format!("{}/auth", app.base))
        .send()
        .await
        .expect("auth");
    assert_eq!(auth.status(), StatusCode::OK);
    let _ = client.get(format!("{}/healthz", app.base)).send().await;

    // An error page's reference is the trace id: the proxy's when it sent one, and entrance's
    // own otherwise. (A fresh browser: a signed-in one is sent on instead.)
    let res = browser()
        .get(format!("{}/login/callback?state=forged&code=x", app.base))
        .header(header::ACCEPT, "text/html")
        .header("traceparent", traceparent(ERROR_TRACE))
        .send()
        .await
        .expect("bad callback");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some(ERROR_TRACE)
    );
    let page = res.text().await.expect("page");
    assert!(page.contains(ERROR_TRACE), "{page}");
    let res = browser()
        .get(format!("{}/login/callback?state=forged&code=x", app.base))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("bad callback");
    let own_trace = res
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .expect("correlation id")
        .to_owned();
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["correlation_id"], own_trace.as_str());

    // The token call carried the token span's context on to the IdP.
    let calls = idp.token_calls();
    let exchange = calls
        .iter()
        .find(|c| c.grant_type.as_deref() == Some("authorization_code"))
        .expect("a code exchange");
    let sent = exchange
        .traceparent
        .clone()
        .expect("traceparent on the token call");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        parts[1], CALLBACK_TRACE,
        "the IdP call is in the proxy's trace"
    );
    assert_ne!(
        parts[2], PROXY_SPAN,
        "its parent is entrance's span, not the proxy's"
    );
    secrets.push((
        "PKCE verifier".into(),
        exchange.code_verifier.clone().expect("verifier"),
    ));
    note_issued_secrets(&idp, &mut secrets);

    // Graceful shutdown sends what is queued. Generous: a debug build on a loaded CI machine
    // (this test once read the receiver after 10 s, before entrance had exited).
    let mut app = app;
    sigterm(&app.child);
    let mut exited = false;
    for _ in 0..600 {
        if app.child.try_wait().expect("wait").is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bodies = collector
        .bodies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let logs = app.output.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let spans = spans(&bodies);
    // At RUST_LOG=trace the whole output is megabytes: its end says how the shutdown went.
    let mut start = logs.len().saturating_sub(4000);
    while !logs.is_char_boundary(start) {
        start += 1;
    }
    let tail = &logs[start..];
    assert!(exited, "entrance exited within 60 s of SIGTERM: …{tail}");
    assert!(
        !spans.is_empty(),
        "spans were exported at shutdown: …{tail}"
    );

    // The sign-in's span tree. The login: the request, continuing the proxy's span.
    let request = server(&spans, LOGIN_TRACE, "GET /login");
    assert_eq!(request.parent, PROXY_SPAN);
    assert_eq!(request.attr("correlation_id").as_deref(), Some(LOGIN_TRACE));
    assert_eq!(children(&spans, request), ["authorize"]);
    let authorize = one(&spans, LOGIN_TRACE, "authorize");
    assert_eq!(authorize.attr("connection").as_deref(), Some("contoso"));
    assert_eq!(children(&spans, authorize), ["session.save"]);
    // The callback: single-use state, the token call, the ID token, the session write.
    let request = server(&spans, CALLBACK_TRACE, "GET /login/callback");
    assert_eq!(request.parent, PROXY_SPAN);
    assert_eq!(
        request.attr("http.response.status_code").as_deref(),
        Some("303")
    );
    assert_eq!(children(&spans, request), ["callback"]);
    let callback = one(&spans, CALLBACK_TRACE, "callback");
    assert_eq!(callback.attr("connection").as_deref(), Some("contoso"));
    assert_eq!(
        children(&spans, callback),
        [
            "groups",
            "id_token",
            "session.sign_in",
            "session.take_pending",
            "token",
            "userinfo"
        ]
    );
    let token = one(&spans, CALLBACK_TRACE, "token");
    assert_eq!(parts[2], token.span_id, "the IdP saw the token span");
    // The unknown kid's key refetch, and the overage's three Graph pages.
    let id_token = one(&spans, CALLBACK_TRACE, "id_token");
    assert_eq!(children(&spans, id_token), ["jwks"]);
    let groups = one(&spans, CALLBACK_TRACE, "groups");
    assert_eq!(groups.attr("via").as_deref(), Some("delegated"));
    assert_eq!(children(&spans, groups), ["graph.groups"]);
    let graph = one(&spans, CALLBACK_TRACE, "graph.groups");
    assert_eq!(graph.attr("pages").as_deref(), Some("3"));
    assert_eq!(
        children(&spans, graph),
        ["graph.page", "graph.page", "graph.page"]
    );
    // Discovery at startup (a trace of its own) fetched the keys.
    let discovery = spans
        .iter()
        .find(|s| s.name == "discovery")
        .expect("a discovery span");
    assert_eq!(children(&spans, discovery), ["jwks"]);
    // /auth has a span; /healthz none.
    let auth: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "GET /auth" && s.kind == 2)
        .collect();
    assert_eq!(auth.len(), 1, "{spans:#?}");
    assert!(
        !spans
            .iter()
            .any(|s| s.attr("path").as_deref() == Some("/healthz")),
        "no span for /healthz"
    );
    // The error without a traceparent: its correlation id is its own trace's id.
    let failed = server(&spans, &own_trace, "GET /login/callback");
    assert_eq!(failed.attr("correlation_id").as_deref(), Some(&*own_trace));
    assert_eq!(
        failed.attr("http.response.status_code").as_deref(),
        Some("400")
    );
    server(&spans, ERROR_TRACE, "GET /login/callback");

    // No secret anywhere in what was exported: span names, attributes, events, resource.
    let exported = bodies.join("\n");
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is long enough to search for");
        for encoded in encodings(value) {
            assert!(
                !exported.contains(&encoded),
                "the {what} appears in the exported spans (as {encoded:?})"
            );
        }
    }
}
