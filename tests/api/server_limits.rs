//! `[server]` (issue #12 item 2): a client that sends its headers slowly is cut off, a request
//! that outlasts `request_timeout_secs` is answered 503 `request_timeout`, and at
//! `max_connections` a further connection waits until one closes. Raw TCP where a client
//! library would hide the connection.

use std::time::{Duration, Instant};

use mock_idp::{Behaviour, Fault};
use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{AppOptions, TestApp, assert_refused, spawn_app_with};

async fn app_with(server_toml: &str) -> TestApp {
    spawn_app_with(AppOptions {
        tables_toml: format!("[server]\n{server_toml}"),
        ..Default::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: raw\r\n\r\n";

/// Reads until the end of a response head and returns it.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "the connection ended mid-head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn a_client_sending_its_headers_slowly_is_cut_off_after_the_header_read_timeout() {
    let app = app_with("header_read_timeout_secs = 2").await;
    let (mut read, mut write) = connect(&app).await.into_split();
    let started = Instant::now();
    // One byte a second: the whole head would take about a minute.
    let writer = tokio::spawn(async move {
        for byte in HEALTHZ {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    let outcome =
        tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    writer.abort();
    // Closed (end of stream or a reset), not still open after 10 s.
    assert!(
        outcome.is_ok(),
        "the connection was still open after 10 s of a slow header"
    );
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, not about the 2 s header-read timeout"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the slow request was served"
    );
}

#[tokio::test]
async fn a_request_longer_than_the_request_timeout_is_answered_503() {
    let app = app_with("request_timeout_secs = 1").await;
    app.idp.set_behaviour(Behaviour {
        token_fault: Fault::Delay(3000),
        ..Default::default()
    });
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let started = Instant::now();
    let res = app.callback_with(&app.browser, &callback, true).await;
    let elapsed = started.elapsed();
    let body = assert_refused(
        &app,
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "request_timeout",
        None,
    )
    .await;
    assert!(
        elapsed < Duration::from_millis(2500),
        "answered after {elapsed:?}, not at the 1 s request timeout"
    );
    assert!(
        body["admin"]
            .as_str()
            .is_some_and(|a| a.contains("server.request_timeout_secs")),
        "{body}"
    );
}

#[tokio::test]
async fn at_max_connections_a_further_connection_waits_until_one_closes() {
    let app = app_with("max_connections = 2").await;
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    for stream in [&mut first, &mut second] {
        stream.write_all(HEALTHZ).await.expect("send");
        let head = tokio::time::timeout(Duration::from_secs(5), read_head(stream))
            .await
            .expect("the first two connections are served");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // Both stay open (keep-alive). The third connects (the kernel's backlog takes it) but is
    // not served.
    let mut third = connect(&app).await;
    third.write_all(HEALTHZ).await.expect("send");
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), read_head(&mut third))
            .await
            .is_err(),
        "a third connection was served at max_connections = 2"
    );
    drop(first);
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut third))
        .await
        .expect("the third connection is served once the first closes");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
