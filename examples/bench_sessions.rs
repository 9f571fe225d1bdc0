//! Benchmark (not a test): memory per stored session.
//!
//! Starts the mock IdP and entrance (memory store) in this process on loopback, performs ONE
//! real login as the mock's default user (Ada Lovelace, `MockUser::default()`, the demo's
//! user) to capture the exact record the store holds, then inserts N copies (default
//! 100 000) under fresh ids and reports this process's resident memory (`VmRSS`) before and
//! after, and the bytes per session. Prints `key=value` lines for `bench/run.sh`.
//!
//! `bench_sessions [N]`

use std::str::FromStr;

use entrance::{Application, Config};
use mock_idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockIdp, MockIdpSettings};
use reqwest::{Client, StatusCode, header};
use tower_sessions::{SessionStore, session::Id};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn set_cookie(res: &reqwest::Response) -> String {
    let v = res
        .headers()
        .get(header::SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .expect("ASCII cookie");
    v.split(';').next().unwrap_or(v).to_owned()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(header::LOCATION)
        .expect("Location")
        .to_str()
        .expect("ASCII Location")
        .to_owned()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(100_000);

    let idp = MockIdp::start(MockIdpSettings::default())
        .await
        .expect("mock IdP starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    // The demo configuration (config/entrance.toml) on free ports.
    let config = Config::load_str(&format!(
        r#"
listen = "127.0.0.1:0"
public_url = "{base}"
[session]
store = "memory"
[[connections]]
id = "demo"
name = "Contoso (mock Entra)"
metadata_url = "{metadata}"
client_id = "{DEFAULT_CLIENT_ID}"
client_secret = "{DEFAULT_CLIENT_SECRET}"
"#,
        metadata = idp.metadata_url(),
    ))
    .expect("bench config is valid");
    idp.set_redirect_uris(vec![config.redirect_uri()]);
    let app = Application::with_listener(config, listener)
        .await
        .expect("app builds");
    let store = app.memory_store().expect("the memory store");
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut res = None;
    for _ in 0..200 {
        match http.get(format!("{base}/login")).send().await {
            Ok(r) if r.status() == StatusCode::SEE_OTHER => {
                res = Some(r);
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let res = res.expect("the connection became ready");
    let pre = set_cookie(&res);
    let res = http.get(location(&res)).send().await.expect("authorize");
    assert_eq!(res.status(), StatusCode::FOUND, "authorize redirects back");
    let res = http
        .get(location(&res))
        .header(header::COOKIE, &pre)
        .send()
        .await
        .expect("callback");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the callback signs in");
    let cookie = set_cookie(&res);
    let id = Id::from_str(cookie.split_once('=').expect("name=value").1).expect("session id");
    let record = store
        .load(&id)
        .await
        .expect("load")
        .expect("the signed-in session is stored");
    drop(http);

    // The signed-in user is kept as one JSON string (an object in older records).
    let user: serde_json::Value = match &record.data["user"] {
        serde_json::Value::String(json) => serde_json::from_str(json.as_str()).expect("user JSON"),
        object => object.clone(),
    };
    // The ID token is kept under its own key, apart from the user, and only when logout needs
    // it (an IdP without Entra's login_hint): the demo's record has none, so 0.
    let id_token_len = record
        .data
        .get("id_token")
        .and_then(|v| v.as_str())
        .map_or(0, str::len);
    let json_len = serde_json::to_vec(&record.data).expect("JSON").len();
    println!("record_keys={:?}", {
        let mut k: Vec<_> = record.data.keys().cloned().collect();
        k.sort();
        k
    });
    println!("claim_set={}", user["identity"]);
    println!("id_token_bytes={id_token_len}");
    println!("record_json_bytes={json_len}");

    // Let start-up allocations settle, then fill the store.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before_len = store.len();
    let before = rss_kib();
    for _ in 0..n {
        let mut copy = record.clone();
        copy.id = Id::default();
        store.create(&mut copy).await.expect("create");
    }
    let after = rss_kib();
    assert_eq!(store.len(), before_len + n);
    println!("sessions={n}");
    println!("rss_before_kib={before}");
    println!("rss_after_kib={after}");
    println!(
        "bytes_per_session={:.0}",
        (after.saturating_sub(before)) as f64 * 1024.0 / n as f64
    );
}
