//! `spawn_app()` and the helpers every test uses: one mock IdP and one entrance per test,
//! a browser-like client (cookie jar, no redirects), and captured logs.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use entrance::{Application, Clock, Config, ReloadHandle, SessionRecords};
use mock_idp::{Behaviour, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockIdp, MockIdpSettings};
use reqwest::{StatusCode, header};
use tokio::{sync::oneshot, task::JoinHandle};
use url::Url;

/// Everything logged by every test, so a test can find the lines of its own correlation id.
/// Set `TEST_LOG=1` to also see them on stderr.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,entrance=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
    .clone()
}

/// The log lines that mention `needle` (e.g. a correlation id).
pub fn log_lines_with(needle: &str) -> Vec<String> {
    let buf = init_logs();
    let text = String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

pub struct TestApp {
    pub base: String,
    pub idp: MockIdp,
    /// A browser: keeps cookies, follows no redirects.
    pub browser: reqwest::Client,
    pub config: Config,
    /// The TOML `config` was loaded from, for a reload with a changed copy.
    pub toml: String,
    /// entrance's own clock (absolute lifetime, idle-refresh step, pending logins' age):
    /// `clock.advance(…)` instead of sleeping. Kept across [`TestApp::restart`].
    pub clock: Clock,
    /// The running service's session store (replaced by a restart).
    pub records: SessionRecords,
    /// Applies a configuration to the running service as a SIGHUP reload does.
    pub reload: ReloadHandle,
    /// `http://127.0.0.1:<port>` of the admin listener, with [`AppOptions::admin_listen`].
    pub admin: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `config` on `listener` in a task; returns the shutdown trigger and the task.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let served = serve_with_clock(config, listener, Clock::new()).await;
    (served.shutdown, served.server)
}

/// A service started by [`serve_with_clock`].
pub struct Served {
    pub shutdown: oneshot::Sender<()>,
    pub server: JoinHandle<std::io::Result<()>>,
    pub records: SessionRecords,
    pub reload: ReloadHandle,
}

/// Serves `config` on `listener` in a task, keeping entrance's own times by `clock`.
pub async fn serve_with_clock(
    config: Config,
    listener: tokio::net::TcpListener,
    clock: Clock,
) -> Served {
    let app = Application::with_clock(config, listener, clock)
        .await
        .expect("app builds");
    let records = app.session_records();
    let reload = app.reload_handle();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    Served {
        shutdown: tx,
        server,
        records,
        reload,
    }
}

/// Options for [`spawn_app_with`].
pub struct AppOptions {
    /// Extra lines appended to the connection's TOML table.
    pub connection_extra: String,
    /// The client secret entrance is configured with.
    pub secret: String,
    /// TOML lines that replace the `client_secret = …` line (a certificate credential).
    pub credential_toml: Option<String>,
    pub public_scheme: &'static str,
    /// The host of `public_url` (entrance still listens on 127.0.0.1). The browser tests use
    /// `localhost`, so that entrance and the mock IdP (on 127.0.0.1) are different sites.
    pub public_host: &'static str,
    /// Top-level keys (before any table), e.g. `allowed_return_hosts = [...]`.
    pub top_toml: String,
    /// Extra tables appended after the connection, e.g. `[keys]\nrefresh_interval_secs = 1`.
    /// `{public_url}` in it becomes entrance's public URL (its port is known only here), and
    /// `{metadata_url}` the mock IdP's tenant metadata URL (a second connection).
    pub tables_toml: String,
    /// Use this metadata URL instead of the mock IdP's (an IdP that is down).
    pub metadata_url: Option<String>,
    /// Wait for the connection to become ready before returning.
    pub wait_ready: bool,
    /// `[rate_limit]` (per minute, burst). Tests drive many logins from 127.0.0.1, so the
    /// default is generous; the rate-limit test sets a small one.
    pub rate_limit: (u32, u32),
    /// Lines of the `[session]` table; the memory store unless a test says otherwise.
    pub session_toml: String,
    /// Use the mock IdP's metadata for this authority (`common`, `organizations`) instead of
    /// its tenant's.
    pub authority: Option<&'static str>,
    /// Appended to the mock IdP's metadata URL, e.g. `?appid=…`.
    pub metadata_query: String,
    /// Serve the admin endpoints on a second loopback port (`admin_listen`): `/admin/traces`,
    /// `/readyz`'s details, `/metrics`. See [`TestApp::admin_url`].
    pub admin_listen: bool,
    /// `ENTRANCE_DATA_KEY` (base64), set on the configuration as the variable would: the
    /// key that seals the secrets of connections created through setup links.
    pub data_key: Option<&'static str>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            connection_extra: String::new(),
            secret: DEFAULT_CLIENT_SECRET.to_owned(),
            credential_toml: None,
            public_scheme: "http",
            public_host: "127.0.0.1",
            top_toml: String::new(),
            tables_toml: String::new(),
            metadata_url: None,
            wait_ready: true,
            rate_limit: (100_000, 10_000),
            session_toml: r#"store = "memory""#.to_owned(),
            authority: None,
            metadata_query: String::new(),
            admin_listen: false,
            data_key: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    init_logs();
    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("mock IdP starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let admin_port = opts.admin_listen.then(free_port);
    let admin_toml = admin_port
        .map(|p| format!("admin_listen = \"127.0.0.1:{p}\""))
        .unwrap_or_default();
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
public_url = "{scheme}://{host}:{port}"
{admin_toml}
{top}
[session]
{session}
[[connections]]
id = "contoso"
name = "Contoso"
metadata_url = "{metadata}"
client_id = "{client_id}"
{credential}
{extra}
[rate_limit]
per_ip_per_minute = {per_minute}
burst = {burst}
{tables}
"#,
        per_minute = opts.rate_limit.0,
        burst = opts.rate_limit.1,
        scheme = opts.public_scheme,
        host = opts.public_host,
        top = opts.top_toml,
        tables = opts.tables_toml,
        metadata = opts.metadata_url.clone().unwrap_or_else(|| {
            let url = match opts.authority {
                Some(authority) => idp.metadata_url_for(authority),
                None => idp.metadata_url(),
            };
            format!("{url}{}", opts.metadata_query)
        }),
        client_id = DEFAULT_CLIENT_ID,
        credential = opts
            .credential_toml
            .clone()
            .unwrap_or_else(|| format!("client_secret = \"{}\"", opts.secret)),
        extra = opts.connection_extra,
        session = opts.session_toml,
    );
    let toml = toml
        .replace(
            "{public_url}",
            &format!("{}://{}:{port}", opts.public_scheme, opts.public_host),
        )
        .replace("{metadata_url}", &idp.metadata_url());
    let mut config = Config::load_str(&toml).expect("test config is valid");
    if let Some(key) = opts.data_key {
        config.data_key = Some(entrance::DataKey::from_base64(key).expect("a test data key"));
    }
    idp.set_redirect_uris(vec![config.redirect_uri()]);
    let clock = Clock::new();
    let served = serve_with_clock(config.clone(), listener, clock.clone()).await;
    let test_app = TestApp {
        base,
        idp,
        browser: browser(),
        config,
        toml,
        clock,
        records: served.records,
        reload: served.reload,
        admin: admin_port.map(|p| format!("http://127.0.0.1:{p}")),
        shutdown: Some(served.shutdown),
        server: Some(served.server),
    };
    if opts.wait_ready {
        test_app.wait_ready().await;
    }
    test_app
}

/// A loopback port that was free a moment ago (for `admin_listen`, which entrance binds
/// itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `entrance_session_cache_requests_total{store, result}` (`result`: `hit` or `miss`) as the
/// service at `base` reports it on `/metrics` (the public listener, without `admin_listen`).
pub async fn cache_requests(base: &str, store: &str, result: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix =
        format!("entrance_session_cache_requests_total{{store=\"{store}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in /metrics:\n{text}"))
}

/// How long test clients keep an idle connection. entrance closes a keep-alive connection
/// idle for `server.header_read_timeout_secs` (10 s by default, src/app/serve.rs); a client
/// reusing it at that moment gets `IncompleteMessage` — the otel test did on a loaded CI
/// machine, where a debug mock IdP took seconds to make a signing key between two requests.
/// Browsers retry such a request; test clients, like a proxy should, drop it sooner.
pub const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(4);

/// A client without cookies that reuses connections for at most [`POOL_IDLE`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE)
        .build()
        .expect("client")
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location header on a {} response", res.status()))
        .to_owned()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A URL on the admin listener; the app must have been spawned with
    /// [`AppOptions::admin_listen`].
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self
            .admin
            .as_deref()
            .expect("spawned with AppOptions { admin_listen: true, .. }");
        format!("{admin}{path}")
    }

    /// `GET` on the admin listener (no cookies: the operator's tools send none).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.admin_url(path))
            .send()
            .await
            .expect("admin request")
    }

    /// Stops the service and waits until it has closed its session store.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task did not panic")
                .expect("the server stopped cleanly");
        }
    }

    /// Stops the service and starts a new `Application` with the same configuration on the
    /// same port, so the browser's cookies still apply.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .expect("base has a port");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind the same port");
        let served = serve_with_clock(self.config.clone(), listener, self.clock.clone()).await;
        self.shutdown = Some(served.shutdown);
        self.server = Some(served.server);
        self.records = served.records;
        self.reload = served.reload;
        self.wait_ready().await;
    }

    /// Applies this app's TOML with `from` replaced by `to` (which must occur), as a reload.
    pub fn reload_with(&self, from: &str, to: &str) {
        assert!(self.toml.contains(from), "{from:?} is not in the config");
        let toml = self.toml.replace(from, to);
        self.reload
            .apply(Config::load_str(&toml).expect("the reloaded config is valid"));
    }

    /// The session cookie a response sets: its value and `Max-Age`.
    pub fn session_cookie(
        &self,
        res: &reqwest::Response,
    ) -> Option<(String, Option<std::time::Duration>)> {
        res.cookies()
            .find(|c| c.name() == self.config.session.cookie_name)
            .map(|c| (c.value().to_owned(), c.max_age()))
    }

    /// Waits until the connection has fetched its metadata (a /login that redirects).
    pub async fn wait_ready(&self) {
        let probe = browser();
        for _ in 0..200 {
            if let Ok(res) = probe
                .get(self.url("/login?connection=contoso"))
                .send()
                .await
                && res.status() == StatusCode::SEE_OTHER
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the connection never became ready");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.browser
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// `GET /login?…` → the authorize URL it redirects to.
    pub async fn begin_login_with(&self, client: &reqwest::Client, query: &str) -> Url {
        let res = client
            .get(self.url(&format!("/login{query}")))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "/login redirects");
        Url::parse(&location(&res)).expect("authorize URL")
    }

    pub async fn begin_login(&self) -> Url {
        self.begin_login_with(&self.browser, "?connection=contoso")
            .await
    }

    /// The mock IdP signs the user in and redirects back: returns the callback URL.
    pub async fn authorize(&self, authorize: &Url) -> String {
        let res = browser()
            .get(authorize.as_str())
            .send()
            .await
            .expect("authorize");
        assert!(
            res.status().is_redirection(),
            "authorize redirects back, got {}",
            res.status()
        );
        location(&res)
    }

    /// Follows the callback with the given client; `json` asks for JSON errors.
    pub async fn callback_with(
        &self,
        client: &reqwest::Client,
        callback: &str,
        json: bool,
    ) -> reqwest::Response {
        let mut req = client.get(callback);
        if json {
            req = req.header(header::ACCEPT, "application/json");
        }
        req.send().await.expect("callback")
    }

    /// A whole login in this test's browser; returns the callback's response.
    pub async fn login(&self) -> reqwest::Response {
        let authorize = self.begin_login().await;
        let callback = self.authorize(&authorize).await;
        self.callback_with(&self.browser, &callback, true).await
    }

    pub async fn login_with_behaviour(&self, b: Behaviour) -> reqwest::Response {
        self.idp.set_behaviour(b);
        self.login().await
    }

    pub async fn me(&self) -> reqwest::Response {
        self.get("/me").await
    }
}

/// Asserts a login ended signed in: a 303 from the callback and a 200 `/me`.
pub async fn assert_signed_in(app: &TestApp, res: reqwest::Response) -> serde_json::Value {
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "callback should sign in: {body}"
    );
    let me = app.me().await;
    assert_eq!(me.status(), StatusCode::OK);
    me.json().await.expect("me JSON")
}

/// Asserts a login was refused with `error`/`reason` in the JSON body and in the log, and
/// that nobody is signed in. Returns the body.
pub async fn assert_refused(
    app: &TestApp,
    res: reqwest::Response,
    status: StatusCode,
    error: &str,
    reason: Option<&str>,
) -> serde_json::Value {
    assert_eq!(res.status(), status);
    let body: serde_json::Value = res.json().await.expect("JSON error body");
    assert_eq!(body["error"], error, "{body}");
    if let Some(reason) = reason {
        assert_eq!(body["reason"], reason, "{body}");
    }
    let cid = body["correlation_id"].as_str().expect("correlation id");
    let lines = log_lines_with(cid);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(error) && reason.is_none_or(|r| l.contains(r))),
        "the log names {error}/{reason:?} for {cid}: {lines:#?}"
    );
    assert_eq!(
        app.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "a refused login leaves nobody signed in"
    );
    body
}

/// The action and hidden fields of the first form in an HTML page (the mock IdP's form_post
/// page, entrance's relay page).
pub fn parse_form(html: &str) -> (String, Vec<(String, String)>) {
    fn attr(tag: &str, name: &str) -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + tag[start..].find('"')?;
        Some(unescape(&tag[start..end]))
    }
    fn unescape(s: &str) -> String {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }
    let form_start = html.find("<form").expect("a form");
    let form_tag = &html[form_start..form_start + html[form_start..].find('>').expect("tag end")];
    let action = attr(form_tag, "action").expect("form action");
    let mut fields = Vec::new();
    for chunk in html[form_start..].split("<input").skip(1) {
        let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        if tag.contains("type=\"hidden\"")
            && let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value"))
        {
            fields.push((n, v));
        }
    }
    (action, fields)
}

/// An ID-token rule: the bad token is refused for `reason` (in the JSON error and the log),
/// and its twin, differing only in that claim or header, signs in.
pub async fn rule(app: &TestApp, bad: Behaviour, reason: &str, twin: Behaviour) {
    let res = app.login_with_behaviour(bad).await;
    assert_refused(
        app,
        res,
        StatusCode::UNAUTHORIZED,
        "id_token_rejected",
        Some(reason),
    )
    .await;
    let res = app.login_with_behaviour(twin).await;
    assert_signed_in(app, res).await;
}
