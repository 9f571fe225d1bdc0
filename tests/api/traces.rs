//! Failed-login traces: `/admin/traces` (public listener on loopback, or the admin listener),
//! the `entrance traces` command run as the real binary, and client IPs in the audit log.

use mock_idp::{AuthorizeError, Behaviour, DEFAULT_CLIENT_SECRET, TokenError};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{
    AppOptions, TestApp, assert_signed_in, log_lines_with, spawn_app, spawn_app_with,
};

const ENTRA_TRACE_ID: &str = "0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f";
const ENTRA_CORRELATION_ID: &str = "7d1c2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";

fn blocked_user() -> Behaviour {
    Behaviour {
        authorize_error: Some(AuthorizeError {
            error: "access_denied".into(),
            error_description: format!(
                "AADSTS50105: Your administrator has configured the application to block users unless they are specifically granted access. Trace ID: {ENTRA_TRACE_ID} Correlation ID: {ENTRA_CORRELATION_ID} Timestamp: 2026-11-26 07:31:04Z"
            ),
        }),
        ..Default::default()
    }
}

/// One login with `behaviour` that fails; returns the callback URL (it holds the code, if
/// any) and the JSON error body.
async fn failed_login(app: &TestApp, behaviour: Behaviour) -> (String, Value) {
    app.idp.set_behaviour(behaviour);
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    assert!(res.status().is_client_error() || res.status().is_server_error());
    let body: Value = res.json().await.expect("JSON error");
    (callback, body)
}

async fn traces_of(url: &str) -> Value {
    let res = reqwest::get(url).await.expect("traces");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"))
    );
    res.json().await.expect("traces JSON")
}

#[tokio::test]
async fn failed_logins_are_listed_newest_first_with_step_reason_and_entra_ids() {
    let app = spawn_app_with(AppOptions {
        admin_listen: true,
        ..Default::default()
    })
    .await;

    let (_, idp_body) = failed_login(&app, blocked_user()).await;
    let token_refusal = Behaviour {
        token_error: Some(TokenError::entra(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        )),
        ..Default::default()
    };
    let token_body_sent = token_refusal
        .token_error
        .as_ref()
        .map(|t| t.body.clone())
        .expect("body");
    let (token_callback, token_body) = failed_login(&app, token_refusal).await;
    let (id_token_callback, id_token_body) = failed_login(
        &app,
        Behaviour {
            claims_set: [("nonce".to_owned(), json!("other"))].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;

    let report = traces_of(&app.admin_url("/admin/traces?connection=contoso")).await;
    assert_eq!(report["connection"], "contoso");
    assert_eq!(report["capacity"], 50);
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 3, "{report:#}");

    // Newest first.
    let id_token = &failures[0];
    assert_eq!(id_token["step"], "id_token");
    assert_eq!(id_token["error"], "id_token_rejected");
    assert_eq!(id_token["reason"], "nonce_mismatch");
    assert_eq!(id_token["correlation_id"], id_token_body["correlation_id"]);
    assert!(id_token.get("aadsts").is_none());

    let token = &failures[1];
    assert_eq!(token["step"], "token");
    assert_eq!(token["error"], "token_refused");
    assert_eq!(token["reason"], "invalid_client");
    assert_eq!(token["aadsts"], 7000215);
    assert_eq!(token["entra_trace_id"], token_body_sent["trace_id"]);
    assert_eq!(
        token["entra_correlation_id"],
        token_body_sent["correlation_id"]
    );
    assert_eq!(token["correlation_id"], token_body["correlation_id"]);

    let idp = &failures[2];
    assert_eq!(idp["step"], "idp_error");
    assert_eq!(idp["reason"], "access_denied");
    assert_eq!(idp["aadsts"], 50105);
    assert_eq!(idp["entra_trace_id"], ENTRA_TRACE_ID);
    assert_eq!(idp["entra_correlation_id"], ENTRA_CORRELATION_ID);
    assert_eq!(idp["correlation_id"], idp_body["correlation_id"]);
    let description = idp["description"].as_str().expect("description");
    assert!(description.starts_with("AADSTS50105: Your administrator"));
    assert!(!description.contains("Trace ID"), "{description}");
    for f in failures {
        assert!(f["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{f}");
    }

    // Nothing secret: not the codes that were sent back, no token, no client secret.
    let text = report.to_string();
    for callback in [&token_callback, &id_token_callback] {
        let url = url::Url::parse(callback).expect("callback URL");
        let code = url
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        assert!(!text.contains(&code), "a code leaked: {text}");
    }
    assert!(!text.contains(DEFAULT_CLIENT_SECRET), "{text}");
    assert!(!text.contains("eyJ"), "something JWT-shaped: {text}");

    // A connection that does not exist is named as such, with the ones that do.
    let res = reqwest::get(app.admin_url("/admin/traces?connection=nope"))
        .await
        .expect("traces");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["connections"], json!(["contoso", "unknown"]));
}

#[tokio::test]
async fn the_ring_is_bounded_and_unknown_states_have_their_own() {
    let app = spawn_app_with(AppOptions {
        tables_toml: "[traces]\nper_connection = 3".into(),
        admin_listen: true,
        ..Default::default()
    })
    .await;
    let mut cids = Vec::new();
    for _ in 0..3 + 5 {
        let (_, body) = failed_login(&app, blocked_user()).await;
        cids.push(body["correlation_id"].as_str().expect("cid").to_owned());
    }
    let report = traces_of(&app.admin_url("/admin/traces?connection=contoso")).await;
    let kept: Vec<&str> = report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["correlation_id"].as_str().expect("cid"))
        .collect();
    let newest: Vec<&str> = cids.iter().rev().take(3).map(String::as_str).collect();
    assert_eq!(kept, newest);

    let _ = crate::helpers::browser()
        .get(app.url("/login/callback?state=nope&code=secret-code"))
        .send()
        .await;
    let unknown = traces_of(&app.admin_url("/admin/traces?connection=unknown")).await;
    let failures = unknown["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["step"], "state");
    assert_eq!(failures[0]["error"], "state_unknown");
    assert!(!unknown.to_string().contains("secret-code"));
}

#[tokio::test]
async fn with_an_admin_listener_traces_are_served_only_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let app = spawn_app_with(AppOptions {
        top_toml: format!("admin_listen = \"127.0.0.1:{port}\""),
        ..Default::default()
    })
    .await;
    failed_login(&app, blocked_user()).await;
    assert_eq!(
        app.get("/admin/traces?connection=contoso").await.status(),
        StatusCode::NOT_FOUND
    );
    let report = traces_of(&format!(
        "http://127.0.0.1:{port}/admin/traces?connection=contoso"
    ))
    .await;
    assert_eq!(report["failures"][0]["aadsts"], 50105);
}

/// `[admin] allow_loopback_without_proxy = true`: traces on the public listener, to loopback
/// clients that send no proxy header.
const ALLOW_LOOPBACK: &str = "[admin]\nallow_loopback_without_proxy = true";

#[tokio::test]
async fn a_proxied_request_cannot_read_traces_on_the_public_listener() {
    let app = spawn_app_with(AppOptions {
        top_toml: ALLOW_LOOPBACK.into(),
        ..Default::default()
    })
    .await;
    let url = app.url("/admin/traces?connection=contoso");
    assert_eq!(traces_of(&url).await["connection"], "contoso");
    // Tests run on loopback; a reverse proxy on the same host would too, and adds this.
    let res = reqwest::Client::new()
        .get(&url)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("traces");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// Issue 12.4: a reverse proxy on the same host with a plain `proxy_pass` sends no proxy
/// header, so by default the public listener must not answer traces even to loopback.
#[tokio::test]
async fn by_default_the_public_listener_serves_no_traces() {
    let app = spawn_app().await;
    failed_login(&app, blocked_user()).await;
    let res = reqwest::get(app.url("/admin/traces?connection=contoso"))
        .await
        .expect("traces");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body = res.text().await.unwrap_or_default();
    assert!(!body.contains("AADSTS"), "{body}");
}

/// A directory removed on drop.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test app's configuration as a file for the CLI, pointing at its real port, with
/// `[admin] allow_loopback_without_proxy = true` as the app was started.
fn config_file(app: &TestApp) -> (std::path::PathBuf, Dir) {
    config_file_with(app, ALLOW_LOOPBACK)
}

fn config_file_with(app: &TestApp, extra: &str) -> (std::path::PathBuf, Dir) {
    let dir = std::env::temp_dir().join(format!("entrance-traces-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("entrance.toml");
    let port = app.base.rsplit(':').next().expect("port");
    std::fs::write(
        &path,
        format!(
            r#"listen = "0.0.0.0:{port}"
public_url = "{base}"
{extra}
[[connections]]
id = "contoso"
metadata_url = "{metadata}"
client_id = "{client_id}"
client_secret_env = "ENTRANCE_TEST_UNSET_SECRET"
"#,
            base = app.base,
            metadata = app.idp.metadata_url(),
            client_id = mock_idp::DEFAULT_CLIENT_ID,
        ),
    )
    .expect("write config");
    (path, Dir(dir))
}

async fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_entrance"))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .await
        .expect("run entrance");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_traces_command_prints_one_line_per_failure_newest_first() {
    let app = spawn_app_with(AppOptions {
        top_toml: ALLOW_LOOPBACK.into(),
        ..Default::default()
    })
    .await;
    let (_, first) = failed_login(&app, blocked_user()).await;
    let (_, second) = failed_login(
        &app,
        Behaviour {
            claims_set: [("nonce".to_owned(), json!("other"))].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    let (path, _dir) = config_file(&app);
    let path = path.display().to_string();

    let (code, stdout, stderr) =
        run_cli(&["traces", "--config", &path, "--connection", "contoso"]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two failures: {stdout}");
    assert!(lines[0].starts_with("TIME"), "{stdout}");
    let cid = |b: &Value| b["correlation_id"].as_str().expect("cid").to_owned();
    assert!(
        lines[1].contains("id_token")
            && lines[1].contains("nonce_mismatch")
            && lines[1].contains(&cid(&second)),
        "{stdout}"
    );
    assert!(
        lines[2].contains("idp_error")
            && lines[2].contains("access_denied")
            && lines[2].contains("AADSTS50105")
            && lines[2].contains(ENTRA_TRACE_ID)
            && lines[2].contains(ENTRA_CORRELATION_ID)
            && lines[2].contains(&cid(&first)),
        "{stdout}"
    );

    let (code, stdout, _) = run_cli(&[
        "traces",
        "--config",
        &path,
        "--connection",
        "contoso",
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(2));

    let (code, _, stderr) = run_cli(&["traces", "--config", &path, "--connection", "nope"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no connection \"nope\""), "{stderr}");
}

/// Issue 12.4: with neither `admin_listen` nor the loopback setting, the command says what to
/// set instead of asking an address that cannot answer.
#[tokio::test]
async fn the_traces_command_says_what_to_set_when_nothing_serves_traces() {
    let app = spawn_app().await;
    let (path, _dir) = config_file_with(&app, "");
    let (code, stdout, stderr) = run_cli(&[
        "traces",
        "--config",
        &path.display().to_string(),
        "--connection",
        "contoso",
    ])
    .await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("sets neither admin_listen nor admin.allow_loopback_without_proxy"),
        "{stderr}"
    );
    assert!(
        stderr.contains("admin_listen = \"127.0.0.1:9100\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("[admin]") && stderr.contains("allow_loopback_without_proxy = true"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_traces_command_says_when_entrance_is_not_running() {
    let mut app = spawn_app_with(AppOptions::default()).await;
    let (path, _dir) = config_file(&app);
    app.stop().await;
    let (code, _, stderr) = run_cli(&[
        "traces",
        "--config",
        &path.display().to_string(),
        "--connection",
        "contoso",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("entrance is not running at 127.0.0.1:"),
        "{stderr}"
    );
}

#[tokio::test]
async fn audit_lines_carry_the_client_ip() {
    // The trusted proxy's header, when configured, is the client IP (as for rate limiting).
    let app = spawn_app_with(AppOptions {
        // Lands in the [rate_limit] table the helper writes last.
        tables_toml: "client_ip_header = \"X-Real-IP\"\ntrusted_proxies = [\"127.0.0.1\"]".into(),
        ..Default::default()
    })
    .await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let res = app
        .browser
        .get(&callback)
        .header("x-real-ip", "203.0.113.7")
        .send()
        .await
        .expect("callback");
    let cid = res
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .expect("correlation id")
        .to_owned();
    assert_signed_in(&app, res).await;
    let lines = log_lines_with(&cid);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("signed in") && l.contains("client_ip=203.0.113.7")),
        "{lines:#?}"
    );

    let res = app
        .browser
        .post(app.url("/logout"))
        .header(header::ORIGIN, app.base.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cid = res
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .expect("correlation id")
        .to_owned();
    let lines = log_lines_with(&cid);
    assert!(
        lines.iter().any(|l| l.contains("signed out")
            && l.contains("client_ip=127.0.0.1")
            && l.contains("tid=")),
        "{lines:#?}"
    );
}

/// Issue 12.11: a connection a reload added has its own ring: its failures are not filed under
/// `unknown`, and `/admin/traces` knows it before it has failed.
#[tokio::test]
async fn a_connection_added_by_a_reload_has_its_own_traces() {
    let app = spawn_app_with(AppOptions {
        admin_listen: true,
        ..Default::default()
    })
    .await;
    app.reload_with(
        "[rate_limit]",
        &format!(
            r#"[[connections]]
id = "fabrikam"
name = "Fabrikam"
metadata_url = "{}"
client_id = "{}"
client_secret = "{}"
[rate_limit]"#,
            app.idp.metadata_url(),
            mock_idp::DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET
        ),
    );
    let empty = traces_of(&app.admin_url("/admin/traces?connection=fabrikam")).await;
    assert_eq!(empty["failures"], json!([]), "{empty}");

    // Wait for the new connection's metadata, then fail a login through it.
    let mut ready = false;
    for _ in 0..200 {
        let res = crate::helpers::browser()
            .get(app.url("/login?connection=fabrikam"))
            .send()
            .await
            .expect("login");
        if res.status() == StatusCode::SEE_OTHER {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "fabrikam never became ready");
    app.idp.set_behaviour(blocked_user());
    let authorize = app
        .begin_login_with(&app.browser, "?connection=fabrikam")
        .await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&app.browser, &callback, true).await;
    let body: Value = res.json().await.expect("JSON error");

    let report = traces_of(&app.admin_url("/admin/traces?connection=fabrikam")).await;
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["correlation_id"], body["correlation_id"]);
    let unknown = traces_of(&app.admin_url("/admin/traces?connection=unknown")).await;
    assert_eq!(unknown["failures"], json!([]), "{unknown}");
}

/// Issue 12.11: the admin listener renders its errors like the public one (JSON with a
/// reference id, not a bare status) and marks every answer `no-store`.
#[tokio::test]
async fn the_admin_listener_renders_errors_and_is_not_cached() {
    let app = spawn_app_with(AppOptions {
        admin_listen: true,
        connection_extra: format!(
            r#"
[[connections]]
id = "fabrikam"
metadata_url = "{}"
client_id = "{}"
client_secret = "{}"
"#,
            "http://127.0.0.1:9/tenant/v2.0/.well-known/openid-configuration",
            mock_idp::DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET
        ),
        ..Default::default()
    })
    .await;
    // Two connections and none named: a missing parameter.
    let res = app.admin_get("/admin/traces").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let no_store = |res: &reqwest::Response| {
        res.headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(no_store(&res).as_deref(), Some("no-store"));
    let body: Value = res.json().await.expect("a JSON error");
    assert_eq!(body["error"], "missing_parameter", "{body}");
    assert!(body["correlation_id"].is_string(), "{body}");
    for path in [
        "/metrics",
        "/readyz",
        "/healthz",
        "/admin/traces?connection=contoso",
    ] {
        let res = app.admin_get(path).await;
        assert_eq!(no_store(&res).as_deref(), Some("no-store"), "{path}");
    }
}
