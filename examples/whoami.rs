//! The demo app of the compose rig (docker-compose.yml): it sits behind nginx, Caddy and
//! Traefik, each asking entrance's `/auth` first, and answers every request with the
//! identity headers it received, as JSON: `{"path": "/app/", "headers": {"x-auth-request-user":
//! "…", …}}`. Every `X-Auth-Request-*` header that reached it is listed, and `Authorization`
//! (where the proxies put the upstream access token, README "Passing tokens to your app"), so
//! the rig's tests
//! (tests/rig/main.rs) can see both what the proxy passed on and that a client-sent one did not
//! get through. A test tool: it trusts whatever headers arrive.
//!
//! `whoami [LISTEN_ADDR]` (default `0.0.0.0:3000`); exits on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;

use axum::{Json, Router, http::HeaderMap, http::Uri, routing::any};

async fn show(uri: Uri, headers: HeaderMap) -> Json<serde_json::Value> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &headers {
        if name.as_str().starts_with("x-auth-request-") || name == "authorization" {
            seen.entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let headers: BTreeMap<String, String> =
        seen.into_iter().map(|(k, v)| (k, v.join(", "))).collect();
    Json(serde_json::json!({ "path": uri.path(), "headers": headers }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:3000".to_owned());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("whoami: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("whoami: listening on {listen}");
    let app = Router::new().fallback(any(show));
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    match axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whoami: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
