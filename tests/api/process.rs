//! The real `entrance` binary: no secret, code, token or cookie value in its logs even at
//! `RUST_LOG=trace`, a graceful SIGTERM in the middle of a login, and a SIGHUP reload that
//! rotates the client secret without dropping sessions or logins in flight.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use mock_idp::{
    Behaviour, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, MockIdp, MockIdpSettings,
};
use reqwest::{StatusCode, header};
use url::Url;

use crate::helpers::{browser, location};

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) output: Arc<Mutex<String>>,
    /// The configuration file the binary was started with.
    config: std::path::PathBuf,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the binary on a config for `idp`, with stdout and stderr captured.
pub(crate) async fn start(idp: &MockIdp, extra_env: &[(&str, &str)], extra_toml: &str) -> Running {
    start_with(idp, extra_env, extra_toml, |_| {
        "client_secret_env = \"ENTRANCE_TEST_SECRET\"".to_owned()
    })
    .await
}

/// [`start`] with the connection's credential lines written by `credential` (given the
/// temporary directory the config lives in).
pub(crate) async fn start_with(
    idp: &MockIdp,
    extra_env: &[(&str, &str)],
    extra_toml: &str,
    credential: impl FnOnce(&std::path::Path) -> String,
) -> Running {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("entrance-proc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("entrance.toml");
    let credential = credential(&dir);
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
public_url = "{base}"
{extra_toml}
[[connections]]
id = "contoso"
name = "Contoso"
metadata_url = "{}"
client_id = "{DEFAULT_CLIENT_ID}"
{credential}
"#,
            idp.metadata_url()
        ),
    )
    .expect("config");
    idp.set_redirect_uris(vec![format!("{base}/login/callback")]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_entrance"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .env("ENTRANCE_TEST_SECRET", DEFAULT_CLIENT_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let output = Arc::new(Mutex::new(String::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let out = output.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let running = Running {
        child,
        base,
        output,
        config,
        _dir: TempDir(dir),
    };
    let probe = browser();
    for _ in 0..200 {
        if let Ok(res) = probe.get(format!("{}/login", running.base)).send().await
            && res.status() == StatusCode::SEE_OTHER
        {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the binary never became ready: {}",
        running.output.lock().unwrap_or_else(|p| p.into_inner())
    );
}

pub(crate) fn sigterm(child: &Child) {
    signal(child, "-TERM");
}

fn signal(child: &Child, which: &str) {
    let status = Command::new("kill")
        .arg(which)
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Each way a value could end up in a log line.
pub(crate) fn encodings(value: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let json = serde_json::to_string(value).unwrap_or_default();
    vec![
        value.to_owned(),
        form.clone(),
        form.replace('+', "%20"),
        json.trim_matches('"').to_owned(),
        base64::engine::general_purpose::STANDARD.encode(value),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
    ]
}

#[tokio::test]
async fn no_secret_code_token_or_cookie_reaches_the_logs_even_at_trace() {
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("IdP");
    let app = start(
        &idp,
        &[("RUST_LOG", "trace,hyper=trace,reqwest=trace,sqlx=trace,tower_sessions=trace,tower_sessions_core=trace")],
        "",
    )
    .await;

    let client = browser();
    let res = client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .expect("login");
    let mut secrets: Vec<(String, String)> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| {
            c.split(';')
                .next()?
                .split_once('=')
                .map(|(_, v)| v.to_owned())
        })
        .map(|v| ("pre-login cookie".to_owned(), v))
        .collect();
    let callback = authorize_noting_secrets(&res, &mut secrets).await;
    let res = client.get(&callback).send().await.expect("callback");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed in");
    for c in res.headers().get_all(header::SET_COOKIE).iter() {
        if let Some((_, v)) = c
            .to_str()
            .ok()
            .and_then(|c| c.split(';').next())
            .and_then(|c| c.split_once('='))
            && !v.is_empty()
        {
            secrets.push(("session cookie".into(), v.to_owned()));
        }
    }
    let me = client
        .get(format!("{}/me", app.base))
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);
    let _ = client.get(format!("{}/auth", app.base)).send().await;
    note_issued_secrets(&idp, &mut secrets);

    sigterm(&app.child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = app.output.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(logs.contains("signed in"), "the login was logged");
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is long enough to search for");
        for encoded in encodings(value) {
            assert!(
                !logs.contains(&encoded),
                "the {what} appears in the logs (as {encoded:?})"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_during_a_login_lets_it_finish_then_stops() {
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("IdP");
    let mut app = start(&idp, &[], "shutdown_grace_secs = 5").await;
    idp.set_behaviour(Behaviour {
        token_fault: Fault::Delay(1500),
        ..Default::default()
    });
    let client = browser();
    let res = client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .expect("login");
    let callback = browser()
        .get(location(&res))
        .send()
        .await
        .map(|r| location(&r))
        .expect("authorize");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(&callback).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped_at = Instant::now();
    sigterm(&app.child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        reqwest::Client::new()
            .get(format!("{}/healthz", app.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_err(),
        "no new connections after SIGTERM"
    );
    let status = in_flight
        .await
        .expect("task")
        .expect("the in-flight login gets an answer");
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the in-flight login completed"
    );
    let exit = loop {
        if let Some(s) = app.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(6),
            "stopped within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "clean exit: {exit:?}");
}

impl Running {
    fn logs(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the log has one more line containing `needle` than `before`.
    async fn wait_for_log(&self, needle: &str, before: usize) {
        for _ in 0..100 {
            if self.logs().matches(needle).count() > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no new log line with {needle:?}: {}", self.logs());
    }

    /// `/login` → authorize at the IdP → the callback URL, not yet followed.
    async fn begin(&self, client: &reqwest::Client) -> String {
        let res = client
            .get(format!("{}/login", self.base))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        browser()
            .get(location(&res))
            .send()
            .await
            .map(|r| location(&r))
            .expect("authorize")
    }

    async fn me(&self, client: &reqwest::Client) -> StatusCode {
        client
            .get(format!("{}/me", self.base))
            .send()
            .await
            .expect("me")
            .status()
    }
}

#[tokio::test]
async fn sighup_rotates_the_secret_without_dropping_sessions_or_logins_in_flight() {
    const NEW_SECRET: &str = "newQ~rotated-secret-value-0000000000000";
    let idp = MockIdp::start(MockIdpSettings {
        // Entra holds both secrets during the rotation.
        client_secrets: vec![DEFAULT_CLIENT_SECRET.to_owned(), NEW_SECRET.to_owned()],
        ..Default::default()
    })
    .await
    .expect("IdP");
    let mut secret_file = std::path::PathBuf::new();
    let mut app = start_with(&idp, &[], "[session]\nstore = \"memory\"", |dir| {
        secret_file = dir.join("client-secret");
        std::fs::write(&secret_file, DEFAULT_CLIENT_SECRET).expect("secret file");
        format!(
            "client_secret_file = {:?}",
            secret_file.display().to_string()
        )
    })
    .await;

    // Signed in before the reload, and a login started before it.
    let signed_in = browser();
    let callback = app.begin(&signed_in).await;
    let res = signed_in.get(&callback).send().await.expect("callback");
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "signed in with the old secret"
    );
    let in_flight = browser();
    let pending_callback = app.begin(&in_flight).await;

    // The new secret goes into the file; the old one stops working at the IdP, so every
    // exchange from here on proves the new secret is used.
    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).expect("rotate");
    idp.set_behaviour(Behaviour {
        expired_client_secrets: vec![DEFAULT_CLIENT_SECRET.to_owned()],
        ..Default::default()
    });
    let reloaded = app.logs().matches("configuration reloaded").count();
    signal(&app.child, "-HUP");
    app.wait_for_log("configuration reloaded", reloaded).await;
    assert!(
        app.child.try_wait().expect("wait").is_none(),
        "still running"
    );

    assert_eq!(
        app.me(&signed_in).await,
        StatusCode::OK,
        "the session survived"
    );
    let res = in_flight
        .get(&pending_callback)
        .send()
        .await
        .expect("callback");
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the login started before the reload finished after it, with the new secret"
    );
    assert_eq!(app.me(&in_flight).await, StatusCode::OK);
    let fresh = browser();
    let callback = app.begin(&fresh).await;
    let res = fresh.get(&callback).send().await.expect("callback");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "a new login signs in");

    // An invalid configuration is refused, with the reason, and the running one kept.
    let good = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(&app.config, good.replace("client_id =", "client_idd =")).expect("break");
    let refused = app.logs().matches("configuration reload refused").count();
    signal(&app.child, "-HUP");
    app.wait_for_log("configuration reload refused", refused)
        .await;
    assert!(
        app.logs().contains("client_idd"),
        "the log says why: {}",
        app.logs()
    );
    let later = browser();
    let callback = app.begin(&later).await;
    let res = later.get(&callback).send().await.expect("callback");
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "still serving the old configuration"
    );
    assert_eq!(app.me(&signed_in).await, StatusCode::OK);

    let logs = app.logs();
    for secret in [DEFAULT_CLIENT_SECRET, NEW_SECRET] {
        assert!(!logs.contains(secret), "a secret value reached the logs");
    }
}

/// `entrance healthcheck` (the Dockerfile's HEALTHCHECK): exit 0 while the configured listener
/// answers `/healthz`, 1 once nothing does — read from the same file as `serve`.
#[tokio::test]
async fn healthcheck_exits_0_while_serving_and_1_when_not() {
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("IdP");
    let mut app = start(&idp, &[], "[session]\nstore = \"memory\"\n").await;
    let probe = |config: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_entrance"))
            .arg("healthcheck")
            .arg("--config")
            .arg(config)
            .output()
            .expect("the binary runs")
    };
    let up = probe(&app.config);
    assert!(
        up.status.success(),
        "{:?} {}",
        up.status,
        String::from_utf8_lossy(&up.stderr)
    );
    let _ = app.child.kill();
    let _ = app.child.wait();
    let down = probe(&app.config);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("/healthz"), "{stderr}");
}

/// Follows a `/login` answer through the mock's authorize endpoint, noting in `secrets` the
/// state and nonce the authorize URL carried and the code the mock issued (values that must
/// never appear in a log line or a span); returns the callback URL.
pub(crate) async fn authorize_noting_secrets(
    login: &reqwest::Response,
    secrets: &mut Vec<(String, String)>,
) -> String {
    let authorize = Url::parse(&location(login)).expect("authorize URL");
    for (k, v) in authorize.query_pairs() {
        if k == "state" || k == "nonce" {
            secrets.push((k.into_owned(), v.into_owned()));
        }
    }
    let callback = browser()
        .get(authorize.as_str())
        .send()
        .await
        .map(|r| location(&r))
        .expect("authorize");
    let code = Url::parse(&callback)
        .expect("callback URL")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    secrets.push(("code".into(), code));
    callback
}

/// Notes in `secrets` every token the mock issued (and its signature alone) and the client's
/// credentials, as sent in a secret post and in Basic authentication.
pub(crate) fn note_issued_secrets(idp: &MockIdp, secrets: &mut Vec<(String, String)>) {
    for t in idp.issued_tokens() {
        if let Some(sig) = t.rsplit('.').next() {
            secrets.push(("token signature".into(), sig.to_owned()));
        }
        secrets.push(("token".into(), t));
    }
    secrets.push(("client secret".into(), DEFAULT_CLIENT_SECRET.into()));
    secrets.push((
        "client id:secret (Basic)".into(),
        format!("{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}"),
    ));
}
