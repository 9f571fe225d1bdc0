//! The `mock-idp` binary as the compose rig runs it (docker-compose.yml): `--public-url` puts
//! the issuer and endpoints on the published origin while it listens elsewhere, and SIGTERM
//! (what `docker stop` sends) stops it cleanly. This test also makes `cargo test --workspace`
//! build the binary, which the rig's image takes (tests/rig/main.rs in entrance).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mock_idp::DEFAULT_TENANT_ID;

#[tokio::test]
async fn public_url_names_the_issuer_and_sigterm_stops_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-idp"))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--public-url=http://127.0.0.1:9999/")
        .arg("--continue-page")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock-idp starts");
    let metadata = format!(
        "http://127.0.0.1:{port}/{DEFAULT_TENANT_ID}/v2.0/.well-known/openid-configuration"
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let started = Instant::now();
    let doc: serde_json::Value = loop {
        if let Ok(res) = client.get(&metadata).send().await
            && res.status().is_success()
        {
            break res.json().await.expect("metadata JSON");
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("mock-idp did not answer {metadata}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        doc["issuer"],
        format!("http://127.0.0.1:9999/{DEFAULT_TENANT_ID}/v2.0")
    );
    assert!(
        doc["authorization_endpoint"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:9999/")),
        "{doc}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mock-idp did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
