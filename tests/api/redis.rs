//! Sessions in Redis: a real `redis-server` per test on a free loopback port, stopped and
//! restarted under the running service. Without `redis-server` on PATH the tests are skipped
//! loudly — except under `CI=true`, where that is a failure.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use crate::helpers::{AppOptions, TestApp, assert_signed_in, spawn_app_with};

/// A `redis-server` on loopback without persistence; killed when dropped.
pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free port, or returns None (after saying so) when it is not installed.
    pub(crate) async fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            let msg = "redis-server is not on PATH: the Redis session tests are SKIPPED \
                       (install it: apt-get install -y redis-server)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}; CI=true requires them");
            }
            eprintln!("\n!!!!! {msg} !!!!!\n");
            return None;
        }
        // Redis cannot pick port 0 itself: take a free port from the OS and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer { port, child: None };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        self.spawn_with(&["--save", "", "--appendonly", "no"]).await;
    }

    async fn spawn_with(&mut self, persistence: &[&str]) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The time to live of `key` in milliseconds, as Redis itself keeps it (`PTTL`: -2 for no
    /// such key, -1 for no expiry).
    pub(crate) fn pttl_ms(&self, key: &str) -> i64 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PTTL", key])
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PTTL {key}: {out:?}"))
    }

    /// `redis-cli` with these commands, one a line, sent over one connection in order.
    pub(crate) fn cli(&self, commands: &str) -> String {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(commands.as_bytes())
            .expect("commands sent");
        let out = child.wait_with_output().expect("redis-cli ends");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ids of the connections with key tracking on (`CLIENT LIST` flag `t`): each
    /// entrance's tracking connection.
    pub(crate) fn tracking_clients(&self) -> Vec<String> {
        self.cli("CLIENT LIST\n")
            .lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.strip_prefix("flags=").is_some_and(|v| v.contains('t')))
            })
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_owned)
            .collect()
    }

    /// The keys under `prefix`, read with `redis-cli`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--scan", "--pattern"])
            .arg(format!("{prefix}*"))
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn spawn_redis_app(redis: &RedisServer, prefix: &str) -> TestApp {
    spawn_app_with(AppOptions {
        session_toml: format!(
            "store = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"{prefix}\"\nredis_pool_size = 2",
            redis.url()
        ),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn sessions_live_in_redis_under_the_key_prefix() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut app = spawn_redis_app(&redis, "test:entrance:").await;
    let res = app.login().await;
    let me = assert_signed_in(&app, res).await;
    assert!(me["user"].as_str().is_some_and(|u| u.starts_with("entra:")));
    // The signed-in session and the readiness probe's pending login, all under the prefix.
    let keys = redis.keys("");
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.starts_with("test:entrance:")),
        "nothing outside the prefix: {keys:?}"
    );
    // And it survives an entrance restart.
    app.restart().await;
    assert_eq!(app.me().await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn redis_down_answers_503_fast_and_service_resumes_when_it_is_back() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let mut app = spawn_redis_app(&redis, "entrance:session:").await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;

    redis.stop();
    // The first command after the loss is what discovers it: bounded by the store timeout.
    // The session is in entrance's read cache, which stops answering once the tracking
    // connection's loss is seen — microseconds after the kill, but not before it: a request
    // in that instant is answered like one a moment before the kill.
    let started = Instant::now();
    let me = loop {
        let me = app.me().await;
        if me.status() != StatusCode::OK || started.elapsed() > Duration::from_millis(1500) {
            break me;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = started.elapsed();
    assert_eq!(me.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = me.json().await.expect("JSON");
    assert_eq!(body["error"], "session_store_unavailable", "{body}");
    assert!(took <= Duration::from_millis(1500), "/me took {took:?}");
    eprintln!("/me with Redis down answered 503 in {took:?}");
    // From then on fred knows it is disconnected and requests fail at once.
    let again = Instant::now();
    assert_eq!(app.me().await.status(), StatusCode::SERVICE_UNAVAILABLE);
    let took = again.elapsed();
    assert!(
        took <= Duration::from_millis(500),
        "second /me took {took:?}"
    );
    eprintln!("and again in {took:?}");
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(ready, serde_json::json!({"status": "not_ready"}));

    // Back on the same port (empty: no persistence). entrance reconnects by itself.
    redis.spawn().await;
    let back = Instant::now();
    loop {
        if app.get("/readyz").await.status() == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready again {:?} after Redis restarted", back.elapsed());
    assert_eq!(
        app.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "the restarted Redis kept nothing"
    );
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    app.stop().await;
}

// ----- replicas: two entrance instances on one Redis, no stickiness ---------------------

/// An entrance instance serving `public_url` (shared by all replicas, as behind a load
/// balancer) on its own port.
struct Replica {
    base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A replica whose connection has these extra lines.
async fn replica_with(
    redis: &RedisServer,
    idp: &mock_idp::MockIdp,
    public_url: &str,
    listener: tokio::net::TcpListener,
    connection_extra: &str,
) -> Replica {
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let toml = format!(
        r#"listen = "127.0.0.1:0"
public_url = "{public_url}"
[session]
store = "redis"
redis_url = "{}"
redis_key_prefix = "replicas:"
[[connections]]
id = "contoso"
name = "Contoso"
metadata_url = "{}"
client_id = "{}"
client_secret = "{}"
{connection_extra}
[keys]
refetch_cooldown_secs = 0
"#,
        redis.url(),
        idp.metadata_url(),
        mock_idp::DEFAULT_CLIENT_ID,
        mock_idp::DEFAULT_CLIENT_SECRET,
    );
    let config = entrance::Config::load_str(&toml).expect("config");
    let (tx, _server) = crate::helpers::serve(config, listener).await;
    let r = Replica {
        base,
        shutdown: Some(tx),
    };
    let probe = crate::helpers::browser();
    for _ in 0..200 {
        if let Ok(res) = probe.get(format!("{}/login", r.base)).send().await
            && res.status() == StatusCode::SEE_OTHER
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica at {} never became ready", r.base);
}

/// A callback URL from the IdP (naming the shared public URL) sent to `replica` instead.
fn to_replica(callback: &str, public_url: &str, replica: &Replica) -> String {
    callback.replacen(public_url, &replica.base, 1)
}

async fn login_on(
    browser: &reqwest::Client,
    start: &Replica,
    finish: &Replica,
    public_url: &str,
) -> reqwest::Response {
    let res = browser
        .get(format!("{}/login", start.base))
        .send()
        .await
        .expect("login");
    let authorize = crate::helpers::location(&res);
    let callback = crate::helpers::browser()
        .get(&authorize)
        .send()
        .await
        .map(|r| crate::helpers::location(&r))
        .expect("authorize");
    browser
        .get(to_replica(&callback, public_url, finish))
        .send()
        .await
        .expect("callback")
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_logins_sessions_and_logouts() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let idp = mock_idp::MockIdp::start(Default::default())
        .await
        .expect("IdP");
    let (a, b, public_url) = two_replicas(&redis, &idp).await;

    // A login begun on A completes on B.
    let browser = crate::helpers::browser();
    let res = login_on(&browser, &a, &b, &public_url).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the callback on B signs in"
    );

    // /me and /auth agree on both.
    let me = |r: &Replica| {
        let browser = browser.clone();
        let url = format!("{}/me", r.base);
        async move { browser.get(url).send().await.expect("me") }
    };
    let me_a: serde_json::Value = me(&a).await.json().await.expect("json");
    let me_b: serde_json::Value = me(&b).await.json().await.expect("json");
    assert_eq!(me_a["user"], me_b["user"]);
    assert!(
        me_a["user"]
            .as_str()
            .is_some_and(|u| u.starts_with("entra:"))
    );
    for r in [&a, &b] {
        let auth = browser
            .get(format!("{}/auth", r.base))
            .send()
            .await
            .expect("auth");
        assert_eq!(auth.status(), StatusCode::OK);
        assert_eq!(
            auth.headers()["x-auth-request-user"],
            me_a["user"].as_str().unwrap_or("")
        );
    }

    // A key rotation seen by A does not break B: each refetches on the new kid.
    idp.rotate_signing_key(true);
    let other = crate::helpers::browser();
    let res = login_on(&other, &b, &a, &public_url).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "A refetched and signed in"
    );
    let third = crate::helpers::browser();
    let res = login_on(&third, &a, &b, &public_url).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "B refetched and signed in too"
    );

    // Logout on B is seen by A at once.
    let res = browser
        .post(format!("{}/logout", b.base))
        .header(reqwest::header::ORIGIN, public_url.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(me(&a).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(me(&b).await.status(), StatusCode::UNAUTHORIZED);
    // The other users are unaffected.
    assert_eq!(
        other
            .get(format!("{}/me", a.base))
            .send()
            .await
            .expect("me")
            .status(),
        StatusCode::OK
    );
}

/// Two replicas on one Redis behind one public URL (A's address), registered at the IdP.
async fn two_replicas(redis: &RedisServer, idp: &mock_idp::MockIdp) -> (Replica, Replica, String) {
    two_replicas_with(redis, idp, "").await
}

/// [`two_replicas`], each with `extra` TOML in its configuration.
async fn two_replicas_with(
    redis: &RedisServer,
    idp: &mock_idp::MockIdp,
    extra: &str,
) -> (Replica, Replica, String) {
    let la = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let public_url = format!("http://{}", la.local_addr().expect("addr"));
    idp.set_redirect_uris(vec![format!("{public_url}/login/callback")]);
    let a = replica_with(redis, idp, &public_url, la, extra).await;
    let b = replica_with(redis, idp, &public_url, lb, extra).await;
    (a, b, public_url)
}

/// The browser's session, as a copy of its cookie: sent as is, it stays after a sign-out
/// clears the browser's (a stolen cookie, a request already on its way).
#[derive(Clone)]
struct Copied(String);

/// Two replicas on one Redis, signed in; `/auth` answered by B from its read cache.
async fn two_replicas_with_b_caching(
    redis: &RedisServer,
) -> (
    mock_idp::MockIdp,
    Replica,
    Replica,
    String,
    reqwest::Client,
    Copied,
) {
    let idp = mock_idp::MockIdp::start(Default::default())
        .await
        .expect("IdP");
    let (a, b, public_url) = two_replicas(redis, &idp).await;
    let browser = crate::helpers::browser();
    let res = login_on(&browser, &a, &b, &public_url).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed in");
    let cookie = res
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("entrance="))
        .and_then(|v| v.split(';').next())
        .map(|v| Copied(v.to_owned()))
        .expect("the callback sets the session cookie");
    // Both tracking connections are up (the cache answers nothing before).
    let started = Instant::now();
    while redis.tracking_clients().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "no tracking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = crate::helpers::cache_requests(&b.base, "redis", "hit").await;
    for _ in 0..3 {
        assert_eq!(auth_status(&cookie, &b).await, StatusCode::OK);
    }
    assert!(
        crate::helpers::cache_requests(&b.base, "redis", "hit").await >= hits + 2,
        "B answers /auth from its cache"
    );
    (idp, a, b, public_url, browser, cookie)
}

/// `/auth` on `r` with exactly this cookie.
async fn auth_status(cookie: &Copied, r: &Replica) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/auth", r.base))
        .header(reqwest::header::COOKIE, &cookie.0)
        .send()
        .await
        .expect("auth")
        .status()
}

/// Issue 16.1, done-when: a sign-out on replica A reaches replica B's read cache. B answered
/// `/auth` from its cache; after A's sign-out Redis's invalidation message drops the session
/// from it, and B's `/auth` turns 401 (asserted with a generous timeout; the latency is
/// printed).
#[tokio::test]
async fn a_sign_out_on_one_replica_reaches_the_others_cache() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (_idp, a, b, public_url, browser, cookie) = two_replicas_with_b_caching(&redis).await;
    let res = browser
        .post(format!("{}/logout", a.base))
        .header(reqwest::header::ORIGIN, public_url)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let signed_out = Instant::now();
    while auth_status(&cookie, &b).await != StatusCode::UNAUTHORIZED {
        assert!(
            signed_out.elapsed() < Duration::from_secs(5),
            "B's cache still answers for the session A signed out"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "B answered 401 {:?} after A's sign-out answered",
        signed_out.elapsed()
    );
}

/// Issue 16.1: after a lost tracking connection the cache is emptied before it is trusted
/// again. Both tracking connections are killed, and the session deleted in the same breath
/// (no invalidation can reach B: its connection is gone); once B tracks again it must not
/// answer from what it cached before.
#[tokio::test]
async fn a_lost_tracking_connection_empties_the_cache() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (_idp, _a, b, _public_url, _browser, cookie) = two_replicas_with_b_caching(&redis).await;
    let keys = redis.keys("replicas:");
    let before = redis.tracking_clients();
    assert_eq!(before.len(), 2, "{before:?}");
    // Kill, then delete every session, in one pipeline: the DEL runs microseconds after
    // the kills, long before a replica reconnects (500 ms).
    let mut commands: String = before
        .iter()
        .map(|id| format!("CLIENT KILL ID {id}\n"))
        .collect();
    for key in &keys {
        commands.push_str(&format!("DEL {key}\n"));
    }
    let out = redis.cli(&commands);
    // Each kill and each DEL of an existing key answers 1: both kills and the session.
    assert!(
        out.lines().filter(|l| l.trim() == "1").count() > before.len(),
        "killed and deleted: {out}"
    );
    // Both track again, with new connections.
    let started = Instant::now();
    loop {
        let now = redis.tracking_clients();
        if now.len() == 2 && now.iter().all(|id| !before.contains(id)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no tracking: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B may take a moment to see the answer to its CLIENT TRACKING; until then it reads
    // Redis anyway. From then on, its cache must not have kept the deleted session.
    for _ in 0..20 {
        assert_eq!(
            auth_status(&cookie, &b).await,
            StatusCode::UNAUTHORIZED,
            "B answered from a cache kept across the lost connection"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hits = crate::helpers::cache_requests(&b.base, "redis", "hit").await;
    let misses = crate::helpers::cache_requests(&b.base, "redis", "miss").await;
    eprintln!("B's cache: {hits} hits, {misses} misses");
}

/// Issue 14, done-when: two replicas on one Redis, many `/auth` requests of one session at
/// once on both, its upstream access token due for a refresh: exactly one refresh reaches the
/// IdP (the mock spends a refresh token when it is redeemed, so a second one would also have
/// ended the session), and every request gets a valid token — the old one while the refresh
/// is underway, or the new one.
#[tokio::test]
async fn two_replicas_refresh_one_session_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let idp = mock_idp::MockIdp::start(Default::default())
        .await
        .expect("IdP");
    let upstream = crate::upstream::upstream_toml("");
    let (a, b, public_url) = two_replicas_with(&redis, &idp, &upstream).await;

    // Signed in with a token that has less than five minutes left: the first /auth refreshes.
    idp.set_behaviour(mock_idp::Behaviour {
        access_token_lifetime_secs: Some(200),
        ..Default::default()
    });
    let browser = crate::helpers::browser();
    let res = login_on(&browser, &a, &b, &public_url).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let refreshed_lifetime = mock_idp::Behaviour {
        access_token_lifetime_secs: Some(3600),
        ..Default::default()
    };
    idp.set_behaviour(refreshed_lifetime);

    let requests = (0..16).map(|i| {
        let browser = browser.clone();
        let url = format!("{}/auth", if i % 2 == 0 { &a.base } else { &b.base });
        async move {
            let res = browser.get(url).send().await.expect("auth");
            let token = res
                .headers()
                .get("x-auth-request-access-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (res.status(), token)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert_eq!(idp.counters().refresh, 1, "{answers:?}");
    let mut tokens = Vec::new();
    for (status, token) in answers {
        assert_eq!(status, StatusCode::OK);
        tokens.push(crate::upstream::api_token(token));
    }
    tokens.sort();
    tokens.dedup();
    assert!(tokens.len() <= 2, "the old token or the new one");
    // Afterwards both replicas pass the new token and nobody refreshes again.
    let mut after = Vec::new();
    for r in [&a, &b] {
        let res = browser
            .get(format!("{}/auth", r.base))
            .send()
            .await
            .expect("auth");
        assert_eq!(res.status(), StatusCode::OK);
        after.push(crate::upstream::api_token(
            res.headers()
                .get("x-auth-request-access-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ));
    }
    assert_eq!(after[0], after[1]);
    assert!(
        crate::upstream::claims(&after[0])["exp"]
            .as_i64()
            .unwrap_or(0)
            > 3000
                + crate::upstream::claims(&after[0])["iat"]
                    .as_i64()
                    .unwrap_or(0)
    );
    assert_eq!(idp.counters().refresh, 1);
}

#[tokio::test]
async fn a_persistent_redis_restart_keeps_users_signed_in() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    // Restart this server with persistence on (append-only file in a temp dir).
    redis.stop();
    let dir = std::env::temp_dir().join(format!("entrance-redis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let dir_s = dir.display().to_string();
    let persistent = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir_s.as_str(),
        "--save",
        "",
    ];
    redis.spawn_with(&persistent).await;

    let app = spawn_redis_app(&redis, "persist:").await;
    let res = app.login().await;
    assert_signed_in(&app, res).await;

    redis.stop();
    redis.spawn_with(&persistent).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.me().await.status();
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #11, item 8: right after startup fred was still connecting, and every request that
/// touched the store — `/login`, `/readyz`, a `/me` with a cookie — answered 503 ("Redis is
/// not connected") for a few hundred milliseconds. entrance starts serving once the store
/// answers (within a bounded wait).
#[tokio::test]
async fn a_fresh_start_answers_from_redis_at_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let app = spawn_app_with(AppOptions {
        session_toml: format!(
            "store = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"fresh:\"",
            redis.url()
        ),
        wait_ready: false,
        ..AppOptions::default()
    })
    .await;
    // The very first request reads the store: a cookie naming no session.
    let me = reqwest::Client::new()
        .get(app.url("/me"))
        .header(
            reqwest::header::COOKIE,
            format!(
                "{}={}",
                app.config.session.cookie_name,
                tower_sessions::session::Id::default()
            ),
        )
        .send()
        .await
        .expect("me");
    let status = me.status();
    let body = me.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let res = app.get("/readyz").await;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The wait for the store at startup is bounded: with Redis down, entrance still starts (and
/// `/readyz` says what is wrong), as before.
#[tokio::test]
async fn a_redis_down_at_startup_delays_serving_only_a_bounded_time() {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let (nobody, idp_down) = (free_port(), free_port());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let config = entrance::Config::load_str(&format!(
        r#"listen = "127.0.0.1:0"
public_url = "{base}"
[session]
store = "redis"
redis_url = "redis://127.0.0.1:{nobody}"
[[connections]]
id = "contoso"
metadata_url = "http://127.0.0.1:{idp_down}/tenant/v2.0/.well-known/openid-configuration"
client_id = "entrance"
client_secret = "a-secret-only-for-this-test"
"#
    ))
    .expect("config");
    // Only the service's own startup is timed (the wait is 5 s).
    let started = Instant::now();
    let app = entrance::Application::with_listener(config, listener)
        .await
        .expect("starts with Redis down");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "startup took {took:?}");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let client = crate::helpers::client();
    let healthz = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), StatusCode::OK);
    let res = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(ready["status"], "not_ready", "{ready}");
    let _ = tx.send(());
    let _ = server.await;
}
