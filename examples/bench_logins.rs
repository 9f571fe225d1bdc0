//! Benchmark driver (not a test): complete logins against a running entrance and mock IdP.
//!
//! `bench_logins cookie BASE` performs one login and prints the session cookie (`name=value`).
//! `bench_logins run BASE CONCURRENCY SECONDS [ENTRANCE_PID] [IDP_PID]` runs CONCURRENCY
//! login loops (`/login` → mock authorize → `/login/callback` → `/me`) for SECONDS and prints
//! `key=value` lines: logins, logins/s, and each process's CPU milliseconds per login from
//! `/proc/<pid>/stat` (utime + stime, in `CLK_TCK` ticks from the environment, default 100).
//! Used by `bench/run.sh`; only ever talks to the URLs it is given.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, header};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client")
}

fn location(res: &reqwest::Response) -> Result<String, Error> {
    Ok(res
        .headers()
        .get(header::LOCATION)
        .ok_or_else(|| format!("no Location on a {}", res.status()))?
        .to_str()?
        .to_owned())
}

/// The `name=value` part of the response's session cookie.
fn cookie(res: &reqwest::Response) -> Result<String, Error> {
    let v = res
        .headers()
        .get(header::SET_COOKIE)
        .ok_or_else(|| format!("no Set-Cookie on a {}", res.status()))?
        .to_str()?;
    Ok(v.split(';').next().unwrap_or(v).to_owned())
}

fn expect(res: &reqwest::Response, status: StatusCode, step: &str) -> Result<(), Error> {
    if res.status() == status {
        Ok(())
    } else {
        Err(format!("{step}: expected {status}, got {}", res.status()).into())
    }
}

/// One complete login in a fresh browser session; returns the signed-in session cookie.
async fn login(http: &Client, base: &str) -> Result<String, Error> {
    let res = http.get(format!("{base}/login")).send().await?;
    expect(&res, StatusCode::SEE_OTHER, "/login")?;
    let pre = cookie(&res)?;
    let authorize = location(&res)?;
    let res = http.get(&authorize).send().await?;
    expect(&res, StatusCode::FOUND, "authorize")?;
    let callback = location(&res)?;
    let res = http
        .get(&callback)
        .header(header::COOKIE, &pre)
        .header(header::ACCEPT, "application/json")
        .send()
        .await?;
    if res.status() != StatusCode::SEE_OTHER {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return Err(format!("callback: {status}: {body}").into());
    }
    let signed_in = cookie(&res)?;
    let res = http
        .get(format!("{base}/me"))
        .header(header::COOKIE, &signed_in)
        .send()
        .await?;
    expect(&res, StatusCode::OK, "/me")?;
    res.bytes().await?;
    Ok(signed_in)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_logins cookie BASE | bench_logins run BASE CONCURRENCY SECONDS [ENTRANCE_PID] [IDP_PID]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let http = client();
    match args.first().map(String::as_str) {
        Some("cookie") => {
            let base = args.get(1).unwrap_or_else(|| usage());
            match login(&http, base).await {
                Ok(c) => println!("{c}"),
                Err(e) => {
                    eprintln!("bench_logins: login failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("run") => {
            let (Some(base), Some(conc), Some(secs)) = (args.get(1), args.get(2), args.get(3))
            else {
                usage()
            };
            let concurrency: usize = conc.parse().unwrap_or_else(|_| usage());
            let secs: f64 = secs.parse().unwrap_or_else(|_| usage());
            let pid = |i: usize| args.get(i).and_then(|p| p.parse::<u32>().ok());
            let (entrance, idp) = (pid(4), pid(5));
            let tck: f64 = std::env::var("CLK_TCK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100.0);
            run(&http, base, concurrency, secs, entrance, idp, tck).await;
        }
        _ => usage(),
    }
}

async fn run(
    http: &Client,
    base: &str,
    concurrency: usize,
    secs: f64,
    entrance: Option<u32>,
    idp: Option<u32>,
    tck: f64,
) {
    // Warm the connection pool and both services.
    for _ in 0..concurrency {
        if let Err(e) = login(http, base).await {
            eprintln!("bench_logins: warm-up login failed: {e}");
            std::process::exit(1);
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (e0, i0) = (cpu_ticks(entrance), cpu_ticks(idp));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, base) = (http.clone(), base.to_owned());
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match login(&http, &base).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("bench_logins: {e}");
                        }
                        if errors.load(Ordering::Relaxed) > 100 {
                            stop.store(true, Ordering::Relaxed);
                        }
                        0
                    }
                };
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (e1, i1) = (cpu_ticks(entrance), cpu_ticks(idp));
    let n = done.load(Ordering::Relaxed);
    let per_login = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if n > 0 => format!("{:.3}", (b - a) as f64 * 1000.0 / tck / n as f64),
        _ => "n/a".to_owned(),
    };
    println!("logins={n}");
    println!("errors={}", errors.load(Ordering::Relaxed));
    println!("seconds={elapsed:.2}");
    println!("logins_per_s={:.1}", n as f64 / elapsed);
    println!("entrance_cpu_ms_per_login={}", per_login(e0, e1));
    println!("idp_cpu_ms_per_login={}", per_login(i0, i1));
    if errors.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
