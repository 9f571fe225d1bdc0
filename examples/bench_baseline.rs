//! Benchmark baseline (not a test): a bare axum endpoint on the same runtime as entrance
//! (`#[tokio::main]`, multi-threaded), answering `/auth` with 200 and exactly the header
//! lines in HEADERS_FILE (entrance's own `/auth` 200 response, captured by `bench/run.sh`;
//! `date` and `content-length` are left to hyper, as in entrance), so the response has the
//! same size and header count.
//!
//! `bench_baseline LISTEN_ADDR HEADERS_FILE`

use axum::{
    Router,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    routing::any,
};

/// The same allocator as the `entrance` binary, so the baseline differs from it only by the
/// work entrance does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_baseline LISTEN_ADDR HEADERS_FILE");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&file).expect("headers file");
    let mut headers = HeaderMap::new();
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "date" || name == "content-length" {
            continue;
        }
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    let app = Router::new().route(
        "/auth",
        any(move || {
            let headers = headers.clone();
            async move { (StatusCode::OK, headers) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("bind the baseline's address");
    axum::serve(listener, app).await.expect("serve");
}
