//! The compose rig (docker-compose.yml) across real containers: the mock IdP, two entrance
//! replicas sharing Redis, nginx, Caddy and Traefik in front of the `whoami` demo app
//! (examples/whoami.rs). One test builds the images without a registry
//! (deploy/build-local-images.sh, from the binaries this `cargo test` built), brings the rig
//! up under its own project name, runs every scenario, prints one line per scenario, and
//! tears everything down (containers, networks, volumes) even when a scenario fails.
//!
//! It needs Docker and docker-compose. It runs under `CI=true` (where a missing Docker is a
//! failure) or with `ENTRANCE_RIG=1`; elsewhere it is SKIPPED with a loud message. It
//! publishes 127.0.0.1:8080-8082 and 127.0.0.1:9090 (docker-compose.yml), so nothing else
//! may use them meanwhile. `ENTRANCE_RIG_KEEP=1` leaves the rig up afterwards for a look.

#[path = "../api/browser.rs"]
#[allow(dead_code)]
mod browser;

/// What `browser.rs` needs from the API tests' `sessions` module.
mod sessions {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!("entrance-rig-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use reqwest::{Client, StatusCode, header};
use url::Url;

const PROJECT: &str = "entrance-rig-test";
/// entrance's public_url (deploy/entrance.toml): nginx's published port.
const NGINX: &str = "http://localhost:8080";
const CADDY: &str = "http://localhost:8081";
const TRAEFIK: &str = "http://localhost:8082";
/// The mock IdP's defaults (mock-idp/src/lib.rs): the user key is `entra:{tid}:{oid}`.
const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
const USER: &str =
    "entra:aaaabbbb-0000-cccc-1111-dddd2222eeee:00000000-0000-0000-0000-00000000a0a0";
const GROUPS: &str = "11111111-0000-0000-0000-00000000000a,11111111-0000-0000-0000-00000000000b";
const EMAIL: &str = "ada.lovelace@contoso.example";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` in the repository; returns its output (not checked).
fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs it and panics with its output unless it succeeded; returns stdout.
fn must(program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = run(program, args, envs);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn compose_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "-p",
        PROJECT,
        "--env-file",
        "deploy/local-images.env",
        "-f",
        "docker-compose.yml",
    ];
    all.extend_from_slice(args);
    all
}

fn compose(args: &[&str]) -> String {
    must("docker-compose", &compose_args(args), &[])
}

/// The running rig; dropping it tears it down.
struct Rig {
    keep: bool,
}

impl Rig {
    /// Builds the images and brings the rig up, or None (after saying so) when it should not
    /// run here.
    async fn up() -> Option<Rig> {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let asked = std::env::var("ENTRANCE_RIG").as_deref() == Ok("1");
        if !ci && !asked {
            eprintln!(
                "\n!!!!! SKIPPED: the docker-compose rig tests (tests/rig) run only under CI=true \
                 or ENTRANCE_RIG=1 (they need Docker, docker-compose and ports 8080-8082, 9090) !!!!!\n"
            );
            return None;
        }
        let docker = Command::new("docker").arg("info").output();
        let compose_ok = Command::new("docker-compose").arg("version").output();
        if !matches!(&docker, Ok(o) if o.status.success())
            || !matches!(&compose_ok, Ok(o) if o.status.success())
        {
            let msg = "Docker (a running engine) and docker-compose are needed for the rig tests";
            if ci {
                panic!("{msg}; CI=true requires them");
            }
            eprintln!("\n!!!!! SKIPPED: {msg} !!!!!\n");
            return None;
        }
        // The binaries this `cargo test --workspace` built: entrance (this package's), and
        // next to it mock-idp (for mock-idp/tests/cli.rs) and examples/whoami (cargo test
        // builds the examples).
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_entrance"))
            .parent()
            .expect("the binary's folder")
            .to_path_buf();
        for needed in ["mock-idp", "examples/whoami"] {
            assert!(
                bin_dir.join(needed).is_file(),
                "{} is missing: run `cargo test --workspace` (or `cargo build --workspace --bins --examples`) first",
                bin_dir.join(needed).display()
            );
        }
        let started = Instant::now();
        let bin = bin_dir.display().to_string();
        let script = run(
            "deploy/build-local-images.sh",
            &[],
            &[("ENTRANCE_BIN_DIR", bin.as_str())],
        );
        eprint!("{}", String::from_utf8_lossy(&script.stdout));
        assert!(
            script.status.success(),
            "deploy/build-local-images.sh failed:\n{}",
            String::from_utf8_lossy(&script.stderr)
        );
        eprintln!("rig: images ready in {:.0?}", started.elapsed());
        let rig = Rig {
            keep: std::env::var("ENTRANCE_RIG_KEEP").as_deref() == Ok("1"),
        };
        // Leftovers of an interrupted run go first.
        let _ = run(
            "docker-compose",
            &compose_args(&["down", "-v", "--remove-orphans", "-t", "2"]),
            &[],
        );
        let up = Instant::now();
        compose(&["up", "-d"]);
        rig.wait_ready().await;
        eprintln!("rig: up and ready in {:.0?}", up.elapsed());
        Some(rig)
    }

    /// Until every proxy sends an anonymous /app/ request to sign in and entrance's
    /// connection is ready (its /login redirects to the IdP).
    async fn wait_ready(&self) {
        let c = plain();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut ready_since: Option<Instant> = None;
        loop {
            let mut ready = true;
            for base in [NGINX, CADDY, TRAEFIK] {
                let ok = matches!(c.get(format!("{base}/app/")).send().await,
                    Ok(r) if r.status() == StatusCode::FOUND);
                ready &= ok;
            }
            // nginx takes turns between the replicas: several answers in a row, so both have
            // their connection ready (one may still be fetching the metadata on a busy host).
            for _ in 0..4 {
                let login = c.get(format!("{NGINX}/login")).send().await;
                ready &= matches!(login, Ok(r) if r.status() == StatusCode::SEE_OTHER
                    && r.headers().get(header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .is_some_and(|l| l.starts_with("http://127.0.0.1:9090/")));
            }
            // And still so after nginx's fail_timeout (5 s, deploy/nginx/default.conf): a replica
            // that answered 503 while starting is left out by nginx that long, and the first
            // scenarios must not meet that.
            match (ready, ready_since) {
                (true, Some(since)) if since.elapsed() >= Duration::from_secs(6) => return,
                (true, None) => ready_since = Some(Instant::now()),
                (true, Some(_)) => {}
                (false, _) => ready_since = None,
            }
            if Instant::now() > deadline {
                panic!("the rig did not become ready in 120 s:\n{}", logs());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "rig: left up (ENTRANCE_RIG_KEEP=1); `docker-compose -p {PROJECT} down -v` removes it"
            );
            return;
        }
        let out = run(
            "docker-compose",
            &compose_args(&["down", "-v", "--remove-orphans", "-t", "5"]),
            &[],
        );
        if !out.status.success() {
            eprintln!(
                "rig: teardown failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn logs() -> String {
    let out = run(
        "docker-compose",
        &compose_args(&["logs", "--no-color", "--tail", "40"]),
        &[],
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The container id of a service.
fn container(service: &str) -> String {
    let id = compose(&["ps", "-q", service]).trim().to_owned();
    assert!(!id.is_empty(), "no container for {service}");
    id
}

/// A service's address on the `rig` network (the host reaches it directly).
fn address(service: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{PROJECT}_rig\").IPAddress}}}}");
    must(
        "docker",
        &["inspect", "-f", &format, &container(service)],
        &[],
    )
    .trim()
    .to_owned()
}

/// A client that follows no redirects and keeps no cookies.
fn plain() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A browser-like client: a cookie jar (cookies are per host, not per port, so a session
/// made on localhost:8080 is sent to :8081 and :8082 too) and redirects followed.
fn user_agent() -> Client {
    Client::builder()
        .no_proxy()
        .cookie_store(true)
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The first form of a page: its action (None: the page's own address) and hidden fields.
fn form(html: &str) -> (Option<String>, Vec<(String, String)>) {
    fn attr(tag: &str, name: &str) -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + tag[start..].find('"')?;
        Some(
            tag[start..end]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    }
    let start = html.find("<form").expect("a form");
    let tag = &html[start..start + html[start..].find('>').expect("tag end")];
    let mut fields = Vec::new();
    for chunk in html[start..].split("<input").skip(1) {
        let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        if tag.contains("type=\"hidden\"")
            && let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value"))
        {
            fields.push((n, v));
        }
    }
    (attr(tag, "action"), fields)
}

/// Follows a sign-in from `start` as a browser without script would: redirects, the IdP's
/// Continue page, its form_post page and entrance's relay page (each a form, submitted).
/// Returns where it ended, with the status and body.
async fn sign_in(c: &Client, start: &str) -> (StatusCode, Url, String) {
    let mut res = c.get(start).send().await.expect("request");
    for _ in 0..6 {
        let url = res.url().clone();
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let at_idp = url.port() == Some(9090);
        if status == StatusCode::OK
            && body.contains("<form")
            && (at_idp || url.path() == "/login/callback")
        {
            let (action, fields) = form(&body);
            let target = match action {
                Some(a) => url.join(&a).expect("form action"),
                None => url.clone(),
            };
            res = c.post(target).form(&fields).send().await.expect("form");
            continue;
        }
        return (status, url, body);
    }
    panic!("sign-in from {start} did not end in six forms");
}

/// The identity headers the demo app saw, from its JSON answer.
fn app_headers(body: &str) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not the app's JSON ({e}): {body}"));
    v["headers"].as_object().cloned().unwrap_or_default()
}

fn header<'a>(h: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.as_str())
}

/// The upstream API's access token as the app received it (deploy/entrance.toml's
/// `[connections.upstream]`): `Authorization: Bearer` through nginx and Caddy, alone;
/// `X-Auth-Request-Access-Token` through Traefik, which cannot rename it.
fn upstream_token(h: &serde_json::Map<String, serde_json::Value>, base: &str) -> String {
    let token = if base == TRAEFIK {
        header(h, "x-auth-request-access-token").map(str::to_owned)
    } else {
        assert_eq!(header(h, "x-auth-request-access-token"), None, "{h:?}");
        header(h, "authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_owned)
    };
    let token = token.unwrap_or_else(|| panic!("no access token through {base}: {h:?}"));
    let payload = token.split('.').nth(1).unwrap_or_default();
    use base64::Engine as _;
    let claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("not a JWT through {base}: {token}"));
    assert_eq!(
        claims["aud"], "api://11112222-bbbb-3333-cccc-4444dddd5555",
        "{claims}"
    );
    token
}

/// Signs in through the proxy at `base`, from its app, and checks what the app received,
/// also when the client sends its own identity headers.
async fn sign_in_through(base: &str, strips_unknown_names: bool) {
    let c = user_agent();
    let start = format!("{base}/app/hello?x=1&y=2");
    // Anonymous with forged headers: never reaches the app, goes to sign in.
    let res = plain()
        .get(&start)
        .header("X-Auth-Request-User", "entra:evil:evil")
        .header("X-Auth-Request-Groups", "admins")
        .send()
        .await
        .expect("anonymous");
    assert_eq!(res.status(), StatusCode::FOUND, "anonymous through {base}");
    let location = res
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with(&format!("{NGINX}/login?return_to=")),
        "{location}"
    );

    let (status, url, body) = sign_in(&c, &start).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    assert_eq!(url.as_str(), start, "back where the user started: {body}");
    let h = app_headers(&body);
    assert_eq!(header(&h, "x-auth-request-user"), Some(USER), "{body}");
    assert_eq!(header(&h, "x-auth-request-email"), Some(EMAIL), "{body}");
    assert_eq!(header(&h, "x-auth-request-tenant"), Some(TENANT), "{body}");
    assert_eq!(
        header(&h, "x-auth-request-connection"),
        Some("contoso"),
        "{body}"
    );
    assert_eq!(header(&h, "x-auth-request-groups"), Some(GROUPS), "{body}");
    let token = upstream_token(&h, base);

    // Signed in, with forged headers: the app sees entrance's values only.
    let res = c
        .get(&start)
        .header(header::AUTHORIZATION, "Bearer forged")
        .header("X-Auth-Request-Access-Token", "forged")
        .header("X-Auth-Request-Groups", "admins")
        .header("X-Auth-Request-Roles", "Global.Admin")
        .header("X-Auth-Request-User", "entra:evil:evil")
        .header("X-Auth-Request-Forged", "yes")
        .send()
        .await
        .expect("forged");
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap_or_default();
    let h = app_headers(&body);
    assert_eq!(header(&h, "x-auth-request-groups"), Some(GROUPS), "{body}");
    assert_eq!(header(&h, "x-auth-request-user"), Some(USER), "{body}");
    assert_eq!(header(&h, "x-auth-request-roles"), None, "{body}");
    assert_eq!(upstream_token(&h, base), token, "{body}");
    if strips_unknown_names {
        assert_eq!(header(&h, "x-auth-request-forged"), None, "{body}");
    }
}

/// `GET base/app/` with a session cookie, following no redirects: (status, the user the app
/// saw).
async fn app_status(c: &Client, cookie: &str, base: &str) -> (StatusCode, Option<String>) {
    let res = c
        .get(format!("{base}/app/"))
        .header(header::COOKIE, cookie)
        .send()
        .await;
    match res {
        Ok(res) => {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            let user = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v["headers"]["x-auth-request-user"]
                        .as_str()
                        .map(str::to_owned)
                });
            (status, user)
        }
        Err(_) => (StatusCode::BAD_GATEWAY, None),
    }
}

/// Signs in through nginx with no cookie jar; returns the session cookie.
async fn signed_in_cookie() -> String {
    let c = plain();
    let res = c.get(format!("{NGINX}/login")).send().await.expect("login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let mut cookie = set_cookie(&res).expect("a pending-login cookie");
    let authorize = res.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    let (callback, fields) = at_idp(&c, &authorize).await;
    let done = post_callback(&c, &callback, &cookie, &fields).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    cookie = set_cookie(&done).expect("a session cookie");
    cookie
}

/// The `name=value` of a response's Set-Cookie.
fn set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// At the IdP: the Continue page, then its form_post page; returns the callback URL and
/// fields it would post.
async fn at_idp(c: &Client, authorize: &str) -> (String, Vec<(String, String)>) {
    let page = c.get(authorize).send().await.expect("authorize");
    assert_eq!(page.status(), StatusCode::OK);
    let (_, fields) = form(&page.text().await.unwrap_or_default());
    let posted = c
        .post(authorize)
        .form(&fields)
        .send()
        .await
        .expect("continue");
    assert_eq!(posted.status(), StatusCode::OK);
    let (action, fields) = form(&posted.text().await.unwrap_or_default());
    (action.expect("the form_post page's action"), fields)
}

/// Posts the IdP's fields to `callback` with `cookie`, and once more when entrance answers
/// with its relay page; returns the final answer.
async fn post_callback(
    c: &Client,
    callback: &str,
    cookie: &str,
    fields: &[(String, String)],
) -> reqwest::Response {
    let res = c
        .post(callback)
        .header(header::COOKIE, cookie)
        .form(fields)
        .send()
        .await
        .expect("callback");
    if res.status() != StatusCode::OK {
        return res;
    }
    let (_, fields) = form(&res.text().await.unwrap_or_default());
    c.post(callback)
        .header(header::COOKIE, cookie)
        .form(&fields)
        .send()
        .await
        .expect("relayed callback")
}

/// Sign-in begun on replica A completes on replica B; B's sign-out is seen by A at once.
async fn across_replicas() {
    let (a, b) = (
        format!("http://{}:8080", address("entrance-a")),
        format!("http://{}:8080", address("entrance-b")),
    );
    let c = plain();
    let res = c
        .get(format!("{a}/login"))
        .send()
        .await
        .expect("login on A");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let pending = set_cookie(&res).expect("a pending-login cookie from A");
    let authorize = res.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    let (_, fields) = at_idp(&c, &authorize).await;
    let done = post_callback(&c, &format!("{b}/login/callback"), &pending, &fields).await;
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "B completes A's sign-in"
    );
    let session = set_cookie(&done).expect("a session cookie from B");
    let me = |base: String| {
        let c = c.clone();
        let session = session.clone();
        async move {
            c.get(format!("{base}/me"))
                .header(header::COOKIE, session)
                .send()
                .await
                .expect("me")
                .status()
        }
    };
    assert_eq!(me(a.clone()).await, StatusCode::OK, "A knows B's session");
    let out = c
        .post(format!("{b}/logout"))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, NGINX)
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .expect("logout on B");
    assert!(out.status().is_redirection(), "{}", out.status());
    assert_eq!(
        me(a).await,
        StatusCode::UNAUTHORIZED,
        "A sees B's sign-out at once"
    );
}

/// Before a fault: both replicas ready (their /readyz on the admin port), then nginx's
/// fail_timeout (5 s, deploy/nginx/default.conf) past, so an earlier fault's 503s no longer
/// keep a replica out of its rotation.
async fn settle() {
    let c = plain();
    let deadline = Instant::now() + Duration::from_secs(60);
    for service in ["entrance-a", "entrance-b"] {
        let readyz = format!("http://{}:9100/readyz", address(service));
        while !matches!(
            c.get(&readyz).send().await.map(|r| r.status()),
            Ok(StatusCode::OK)
        ) {
            assert!(
                Instant::now() < deadline,
                "{service} not ready:\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
}

/// Redis stopped and started: requests meanwhile get a 503 (not a sign-out), and the same
/// session works again afterwards without restarting entrance.
async fn redis_restart() {
    settle().await;
    let cookie = signed_in_cookie().await;
    let c = plain();
    let (status, user) = app_status(&c, &cookie, NGINX).await;
    assert_eq!((status, user.as_deref()), (StatusCode::OK, Some(USER)));
    compose(&["stop", "-t", "5", "redis"]);
    for _ in 0..3 {
        let (status, _) = app_status(&c, &cookie, NGINX).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis down: a 503, not a sign-out"
        );
    }
    compose(&["start", "redis"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, user) = app_status(&c, &cookie, NGINX).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "while Redis comes back: {status} (a 302/401 would be a sign-out)"
        );
        if status == StatusCode::OK {
            assert_eq!(user.as_deref(), Some(USER));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "entrance did not recover in 60 s:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Replica B cut off from Redis: its /readyz fails, users keep being served by A through
/// every proxy, and B is ready again once reconnected.
async fn replica_cut_off_from_redis() {
    settle().await;
    let cookie = signed_in_cookie().await;
    let c = plain();
    let b = address("entrance-b");
    let readyz = format!("http://{b}:9100/readyz");
    let network = format!("{PROJECT}_store");
    let id = container("entrance-b");
    must("docker", &["network", "disconnect", &network, &id], &[]);
    let result = AssertUnwindSafe(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = c.get(&readyz).send().await.map(|r| r.status());
            if matches!(s, Ok(StatusCode::SERVICE_UNAVAILABLE)) {
                break;
            }
            assert!(Instant::now() < deadline, "B's /readyz still says {s:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for _ in 0..20 {
            let (status, user) = app_status(&c, &cookie, NGINX).await;
            assert_eq!(
                (status, user.as_deref()),
                (StatusCode::OK, Some(USER)),
                "nginx"
            );
        }
        // Caddy and Traefik leave B out after their next health check (every 2 s).
        tokio::time::sleep(Duration::from_secs(6)).await;
        for base in [CADDY, TRAEFIK] {
            for _ in 0..10 {
                let (status, user) = app_status(&c, &cookie, base).await;
                assert_eq!(
                    (status, user.as_deref()),
                    (StatusCode::OK, Some(USER)),
                    "{base}"
                );
            }
        }
    })
    .catch_unwind()
    .await;
    must("docker", &["network", "connect", &network, &id], &[]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        c.get(&readyz).send().await.map(|r| r.status()),
        Ok(StatusCode::OK)
    ) {
        assert!(
            Instant::now() < deadline,
            "B not ready again after reconnecting"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Replica A killed while a signed-in user keeps asking through nginx: every request is
/// answered by B, none signs the user out; Caddy and Traefik pass A over too.
async fn replica_killed_under_traffic() {
    settle().await;
    let cookie = signed_in_cookie().await;
    let traffic = {
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let c = plain();
            let mut seen = Vec::new();
            let until = Instant::now() + Duration::from_secs(12);
            while Instant::now() < until {
                seen.push(app_status(&c, &cookie, NGINX).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    must("docker", &["kill", &container("entrance-a")], &[]);
    let seen = traffic.await.expect("traffic task");
    let bad: Vec<_> = seen
        .iter()
        .filter(|(s, u)| *s != StatusCode::OK || u.as_deref() != Some(USER))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests through nginx were not served as the user: {bad:?}",
        bad.len(),
        seen.len()
    );
    assert!(seen.len() > 20, "only {} requests", seen.len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = plain();
    for base in [CADDY, TRAEFIK] {
        for _ in 0..10 {
            let (status, user) = app_status(&c, &cookie, base).await;
            assert_eq!(
                (status, user.as_deref()),
                (StatusCode::OK, Some(USER)),
                "{base}"
            );
        }
    }
}

/// A real browser through nginx, with form_post and the IdP on another site (127.0.0.1),
/// lingering 125 s on the IdP's page (past Chromium's two-minute Lax+POST allowance), then
/// signing out.
async fn browser_through_nginx() {
    browser::run("rig_nginx_form_post", async |b| {
        let app = format!("{NGINX}/app/browser");
        b.goto(&app).await;
        b.wait_until("the IdP's Continue page", |url, text| {
            url.host_str() == Some("127.0.0.1") && text.contains("Sign in to Contoso")
        })
        .await;
        // Deliberate: the user's pause.
        tokio::time::sleep(Duration::from_secs(125)).await;
        b.click("Continue").await;
        let text = b
            .wait_until("the app through nginx", |url, text| {
                url.as_str() == app && text.contains("x-auth-request-user")
            })
            .await;
        assert!(text.contains(USER) && text.contains(GROUPS), "{text}");
        b.goto(&format!("{NGINX}/logout")).await;
        b.click("Sign out").await;
        b.wait_until("signed out", |url, _| {
            url.host_str() == Some("127.0.0.1") || url.path() == "/"
        })
        .await;
        b.goto(&app).await;
        b.wait_until("sent to sign in again", |url, text| {
            url.host_str() == Some("127.0.0.1") && text.contains("Sign in to Contoso")
        })
        .await;
    })
    .await;
}

/// Runs one scenario, catching its panic; prints and returns (name, passed, seconds).
async fn scenario(
    name: &'static str,
    f: impl std::future::Future<Output = ()>,
) -> (&'static str, bool, u64) {
    let started = Instant::now();
    let outcome = AssertUnwindSafe(f).catch_unwind().await;
    let secs = started.elapsed().as_secs();
    let passed = outcome.is_ok();
    eprintln!(
        "rig: {} {name} ({secs} s)",
        if passed { "PASS" } else { "FAIL" }
    );
    (name, passed, secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compose_rig() {
    let started = Instant::now();
    let Some(rig) = Rig::up().await else {
        return;
    };
    // The browser lingers 125 s; the scenarios that leave the rig whole run meanwhile.
    let (browser, mut results) = tokio::join!(
        scenario(
            "browser through nginx, form_post, IdP on another site, 125 s at the IdP, sign-out",
            browser_through_nginx()
        ),
        async {
            vec![
                scenario("sign-in through nginx: right headers, client-sent ones stripped", sign_in_through(NGINX, false)).await,
                scenario("sign-in through Caddy: right headers, every client-sent X-Auth-Request-* stripped", sign_in_through(CADDY, true)).await,
                scenario("sign-in through Traefik: right headers, every client-sent X-Auth-Request-* stripped", sign_in_through(TRAEFIK, true)).await,
                scenario("sign-in begun on replica A completes on B; B's sign-out seen by A", across_replicas()).await,
            ]
        }
    );
    results.push(browser);
    results.push(
        scenario(
            "Redis restarted: 503 meanwhile, sessions survive, entrance recovers",
            redis_restart(),
        )
        .await,
    );
    results.push(
        scenario(
            "replica cut off from Redis: its /readyz fails, users served by the other",
            replica_cut_off_from_redis(),
        )
        .await,
    );
    results.push(
        scenario(
            "replica killed under traffic: passed over, nobody signed out",
            replica_killed_under_traffic(),
        )
        .await,
    );
    let failed: Vec<_> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if !failed.is_empty() {
        eprintln!("rig: logs of the failing run:\n{}", logs());
    }
    drop(rig);
    eprintln!(
        "rig: {} scenarios, {} failed, {:.0?} in all (images, up, tests, teardown)",
        results.len(),
        failed.len(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
}
