//! Session stores end to end: SQLite sessions survive a restart; a failing store answers 503
//! with a page and a reference, `/readyz` says so, and service resumes by itself.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use tower_sessions_sqlx_store::sqlx::{
    self, Connection, SqliteConnection, sqlite::SqliteConnectOptions,
};

use crate::helpers::{
    AppOptions, TestApp, assert_signed_in, cache_requests, log_lines_with, spawn_app_with,
};

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("entrance-test-{}", uuid::Uuid::new_v4()));
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

fn sqlite_toml(db: &Path) -> String {
    format!(
        "store = \"sqlite\"\nsqlite_path = \"{}\"",
        db.display().to_string().replace('\\', "\\\\")
    )
}

async fn spawn_sqlite_app(db: &Path) -> TestApp {
    spawn_app_with(AppOptions {
        session_toml: sqlite_toml(db),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn sqlite_sessions_survive_a_restart() {
    let dir = TempDir::new();
    let db = dir.path().join("sessions.db");
    let mut app = spawn_sqlite_app(&db).await;
    assert!(db.exists(), "the SQLite file is created at startup");
    let res = app.login().await;
    let before = assert_signed_in(&app, res).await;

    // A new Application on the same file: only possible once the old pool is closed.
    app.restart().await;
    let me = app.me().await;
    assert_eq!(me.status(), StatusCode::OK, "signed in after the restart");
    let after: serde_json::Value = me.json().await.expect("me JSON");
    assert_eq!(after["user"], before["user"]);
    assert_eq!(after["issued_at"], before["issued_at"]);
    app.stop().await;
}

#[tokio::test]
async fn with_sqlite_a_sign_out_is_seen_at_once_by_auth_and_me() {
    // Reads take a faster path than writes (docs/BENCHMARKS.md); a sign-out must still be
    // seen by the very next request.
    // Reads are answered from the read cache too (`session.cache_entries`): the sign-out
    // drops the session from it. Checked with a copy of the cookie, which the browser drops.
    let dir = TempDir::new();
    let mut app = spawn_sqlite_app(&dir.path().join("sessions.db")).await;
    let res = app.login().await;
    let (cookie, _) = app
        .session_cookie(&res)
        .expect("the callback sets the cookie");
    assert_signed_in(&app, res).await;
    let hits = cache_requests(&app.base, "sqlite", "hit").await;
    for _ in 0..3 {
        assert_eq!(app.get("/auth").await.status(), StatusCode::OK);
    }
    assert!(
        cache_requests(&app.base, "sqlite", "hit").await >= hits + 3,
        "/auth is answered from the cache"
    );
    let copy = format!("{}={cookie}", app.config.session.cookie_name);
    let auth_with_copy = || {
        reqwest::Client::new()
            .get(app.url("/auth"))
            .header(reqwest::header::COOKIE, copy.clone())
            .send()
    };
    assert_eq!(
        auth_with_copy().await.expect("auth").status(),
        StatusCode::OK
    );
    let res = app
        .browser
        .post(app.url("/logout"))
        .header(reqwest::header::ORIGIN, app.base.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        auth_with_copy().await.expect("auth").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/auth").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Asserts a 503 page for a store failure: HTML, with the correlation id as its reference.
async fn assert_store_unavailable_page(res: reqwest::Response) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let cid = res
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .expect("a correlation id")
        .to_owned();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = res.text().await.expect("body");
    assert!(body.contains(&format!("Reference: {cid}")), "{body}");
    assert!(
        log_lines_with(&cid)
            .iter()
            .any(|l| l.contains("session_store_unavailable")),
        "the log names the store failure for {cid}"
    );
}

/// `/readyz` on the admin listener, with the store's error.
async fn readyz(app: &TestApp) -> (StatusCode, serde_json::Value) {
    let res = app.admin_get("/readyz").await;
    let status = res.status();
    (status, res.json().await.expect("readyz JSON"))
}

#[tokio::test]
async fn a_vanished_sqlite_file_answers_503_and_service_resumes_when_it_is_back() {
    let dir = TempDir::new();
    let db = dir.path().join("sessions.db");
    let moved = dir.path().join("sessions.db.moved");
    let mut app = spawn_app_with(AppOptions {
        session_toml: sqlite_toml(&db),
        admin_listen: true,
        ..AppOptions::default()
    })
    .await;
    let res = app.login().await;
    let before = assert_signed_in(&app, res).await;
    assert_eq!(readyz(&app).await.0, StatusCode::OK);

    // The file disappears under the running service (deleted, or a volume unmounted).
    std::fs::rename(&db, &moved).expect("move the database away");
    // A read the read cache could answer (the session is in it) is refused too, once the
    // last sight of the file is older than the hits' check interval (50 ms, `sqlite.rs`).
    let moved_at = Instant::now();
    let mut refused = false;
    while moved_at.elapsed() < Duration::from_secs(2) {
        if app.get("/auth").await.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "/auth answered from the cache with the file gone");
    eprintln!("/auth refused {:?} after the file went", moved_at.elapsed());
    let started = Instant::now();
    let html = app
        .browser
        .get(app.url("/login?connection=contoso"))
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await
        .expect("login");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_store_unavailable_page(html).await;
    let me = app.me().await;
    assert_eq!(me.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = me.json().await.expect("JSON");
    assert_eq!(body["error"], "session_store_unavailable");
    let (status, ready) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["store"]["ok"], false);
    assert!(ready["store"]["error"].is_string(), "{ready}");
    // The public listener says only that: the store's error text is the admin's.
    let public = app.get("/readyz").await;
    assert_eq!(public.status(), StatusCode::SERVICE_UNAVAILABLE);
    let public: serde_json::Value = public.json().await.expect("JSON");
    assert_eq!(public, serde_json::json!({"status": "not_ready"}));

    // Put back: the same service, not restarted, serves the same session again.
    std::fs::rename(&moved, &db).expect("move the database back");
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    let me = app.me().await;
    assert_eq!(me.status(), StatusCode::OK);
    let after: serde_json::Value = me.json().await.expect("me JSON");
    assert_eq!(after["user"], before["user"]);
    app.stop().await;
}

#[tokio::test]
async fn a_locked_sqlite_file_fails_the_callback_fast_and_leaves_nobody_signed_in() {
    let dir = TempDir::new();
    let db = dir.path().join("sessions.db");
    let mut app = spawn_sqlite_app(&db).await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;

    // Another process holds the write lock (a backup, a stuck admin shell).
    let mut locker = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&db))
        .await
        .expect("open the database");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("take the write lock");

    let started = Instant::now();
    let res = app.callback_with(&app.browser, &callback, false).await;
    let took = started.elapsed();
    assert_store_unavailable_page(res).await;
    assert!(took < Duration::from_millis(1500), "answered in {took:?}");

    sqlx::query("COMMIT")
        .execute(&mut locker)
        .await
        .expect("release the lock");
    locker.close().await.expect("close");
    assert_eq!(
        app.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "a failed callback leaves nobody signed in"
    );
    // Service resumes by itself: a new login works.
    let res = app.login().await;
    assert_signed_in(&app, res).await;
    app.stop().await;
}

/// Issue 16.4: the demo login's session (the mock's default user, as Entra signs one in) is
/// stored in under 2 KiB — it was 2.78 KB, 1.55 KB of it the ID token, which logout no longer
/// needs when Entra gave a `login_hint` — measured as the stores write it (MessagePack, the
/// encoding of the SQLite and Redis stores).
#[tokio::test]
async fn the_demo_session_is_stored_in_under_2_kib_without_the_id_token() {
    let app = spawn_app_with(AppOptions::default()).await;
    let res = app.login().await;
    let (cookie, _) = app
        .session_cookie(&res)
        .expect("the callback sets the cookie");
    assert_signed_in(&app, res).await;
    let record = app
        .records
        .load_cookie(&cookie)
        .await
        .expect("the store answers")
        .expect("the session is stored");
    let bytes = rmp_serde::to_vec(&record).expect("encode").len();
    eprintln!("demo session record: {bytes} bytes (MessagePack)");
    assert!(bytes < 2048, "{bytes} bytes");
    let id_token = app
        .idp
        .issued_tokens()
        .into_iter()
        .find(|t| t.starts_with("eyJ"))
        .expect("an ID token was issued");
    assert!(!format!("{:?}", record.data).contains(&id_token));
}
