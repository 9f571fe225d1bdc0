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
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free port, or returns None (after saying so) when it is not installed.
    async fn start() -> Option<RedisServer> {
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
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
    let started = Instant::now();
    let me = app.me().await;
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
    assert_eq!(ready["store"]["ok"], false, "{ready}");

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
