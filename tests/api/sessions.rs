//! Session stores end to end: SQLite sessions survive a restart; a failing store answers 503
//! with a page and a reference, `/readyz` says so, and service resumes by itself.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;

use crate::helpers::{AppOptions, TestApp, assert_signed_in, spawn_app_with};

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
