//! Benchmark driver (not a test): complete logins against a running entrance (or the peer,
//! Apache with mod_auth_openidc) and mock IdP.
//!
//! `bench_logins cookie BASE` performs one login and prints the session cookie (`name=value`).
//! `bench_logins run BASE CONCURRENCY SECONDS [SERVER_PID] [IDP_PID]` runs CONCURRENCY
//! login loops (`/login` → mock authorize → `/login/callback` → `/me`) for SECONDS and prints
//! `key=value` lines: logins, logins/s, and each process's CPU milliseconds per login from
//! `/proc/<pid>/stat` (utime + stime, in `CLK_TCK` ticks from the environment, default 100;
//! a process's children count too — their utime + stime while alive, the parent's cutime +
//! cstime once reaped — so an Apache parent's PID covers its worker processes).
//!
//! `bench_logins peer-cookie URL` and `bench_logins peer-run URL CONCURRENCY SECONDS
//! [SERVER_PID] [IDP_PID]` do the same for a page protected by Apache's mod_auth_openidc (the
//! peer): `GET URL` → 302 to the mock's authorize (state cookie set) → 302 to the module's
//! redirect URI → 302 back to URL with the `mod_auth_openidc_session` cookie → `GET URL` 200.
//!
//! `bench_logins signout BASE_A BASE_B ROUNDS` measures how long a sign-out on one replica
//! takes to reach another's session cache (two entrance replicas on one Redis): per round, a
//! login on A, `/auth` on B (200, now cached there), `POST /logout` on A, then `/auth` on B
//! polled back to back until it answers 401; prints the median and the largest time from A's
//! logout response to B's first 401, in milliseconds (one `/auth` round trip at least), and
//! how many of B's answers after the logout still said 200 (stale) over all rounds.
//!
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

/// The name of mod_auth_openidc's session cookie (its `OIDCCookie` default).
const PEER_SESSION_COOKIE: &str = "mod_auth_openidc_session";

/// Every `name=value` the response sets (non-empty values only), joined for a `Cookie` header.
fn all_cookies(res: &reqwest::Response) -> String {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|nv| nv.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One complete login at a page protected by mod_auth_openidc, in a fresh browser session;
/// returns the module's session cookie.
async fn login_peer(http: &Client, url: &str) -> Result<String, Error> {
    let html = "text/html,application/xhtml+xml";
    let res = http.get(url).header(header::ACCEPT, html).send().await?;
    expect(&res, StatusCode::FOUND, "protected page (signed out)")?;
    let state = all_cookies(&res);
    let authorize = location(&res)?;
    let res = http.get(&authorize).send().await?;
    expect(&res, StatusCode::FOUND, "authorize")?;
    let callback = location(&res)?;
    let res = http
        .get(&callback)
        .header(header::COOKIE, &state)
        .header(header::ACCEPT, html)
        .send()
        .await?;
    if res.status() != StatusCode::FOUND {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return Err(format!("redirect URI: {status}: {body}").into());
    }
    let session = all_cookies(&res)
        .split("; ")
        .find(|nv| nv.starts_with(&format!("{PEER_SESSION_COOKIE}=")))
        .ok_or("redirect URI: no session cookie")?
        .to_owned();
    let res = http
        .get(url)
        .header(header::COOKIE, &session)
        .header(header::ACCEPT, html)
        .send()
        .await?;
    expect(&res, StatusCode::OK, "protected page (signed in)")?;
    res.bytes().await?;
    Ok(session)
}

/// Which login the driver performs.
#[derive(Clone, Copy)]
enum Flow {
    Entrance,
    Peer,
}

async fn login_with(flow: Flow, http: &Client, base: &str) -> Result<String, Error> {
    match flow {
        Flow::Entrance => login(http, base).await,
        Flow::Peer => login_peer(http, base).await,
    }
}

/// (utime + stime, cutime + cstime, parent pid) of one process, in clock ticks.
fn stat_ticks(pid: u32) -> Option<(u64, u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3 (skipped), ppid 4,
    // utime 14, stime 15, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .take(14)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    Some((
        f.get(10)? + f.get(11)?,
        f.get(12)? + f.get(13)?,
        u32::try_from(*f.first()?).ok()?,
    ))
}

/// CPU of a process and its descendants, in clock ticks: utime + stime of each live one, plus
/// the root's cutime + cstime (children it has reaped), so the count never goes back.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let root = pid?;
    let (own, reaped, _) = stat_ticks(root)?;
    let mut parents: Vec<(u32, u32, u64)> = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
            && let Some((t, _, ppid)) = stat_ticks(p)
        {
            parents.push((p, ppid, t));
        }
    }
    let (mut total, mut frontier) = (own + reaped, vec![root]);
    while let Some(parent) = frontier.pop() {
        for &(p, ppid, t) in &parents {
            if ppid == parent {
                total += t;
                frontier.push(p);
            }
        }
    }
    Some(total)
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_logins cookie BASE | bench_logins run BASE CONCURRENCY SECONDS [SERVER_PID] [IDP_PID]\n       bench_logins peer-cookie URL | bench_logins peer-run URL CONCURRENCY SECONDS [SERVER_PID] [IDP_PID]\n       bench_logins signout BASE_A BASE_B ROUNDS"
    );
    std::process::exit(2)
}

/// `GET {base}/auth` with `cookie`: its status.
async fn auth_status(http: &Client, base: &str, cookie: &str) -> Result<StatusCode, Error> {
    let res = http
        .get(format!("{base}/auth"))
        .header(header::COOKIE, cookie)
        .send()
        .await?;
    let status = res.status();
    res.bytes().await?;
    Ok(status)
}

/// One round of `signout`: milliseconds from A's logout response to B's first 401, and how
/// many 200s B answered before it.
async fn signout_round(http: &Client, a: &str, b: &str) -> Result<(f64, u64), Error> {
    let cookie = login(http, a).await?;
    let status = auth_status(http, b, &cookie).await?;
    if status != StatusCode::OK {
        return Err(format!("/auth on B before the sign-out: {status}").into());
    }
    // The sign-out button's POST, from A's own page (the Origin rule).
    let res = http
        .post(format!("{a}/logout"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, a)
        .send()
        .await?;
    if !res.status().is_redirection() && !res.status().is_success() {
        return Err(format!("/logout on A: {}", res.status()).into());
    }
    let signed_out = Instant::now();
    let deadline = signed_out + Duration::from_secs(5);
    let mut stale = 0;
    while Instant::now() < deadline {
        if auth_status(http, b, &cookie).await? == StatusCode::UNAUTHORIZED {
            return Ok((signed_out.elapsed().as_secs_f64() * 1000.0, stale));
        }
        stale += 1;
    }
    Err("B still accepted the session 5 s after the sign-out on A".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let http = client();
    let flow = match args.first().map(String::as_str) {
        Some("peer-cookie" | "peer-run") => Flow::Peer,
        _ => Flow::Entrance,
    };
    match args.first().map(String::as_str) {
        Some("cookie" | "peer-cookie") => {
            let base = args.get(1).unwrap_or_else(|| usage());
            match login_with(flow, &http, base).await {
                Ok(c) => println!("{c}"),
                Err(e) => {
                    eprintln!("bench_logins: login failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("run" | "peer-run") => {
            let (Some(base), Some(conc), Some(secs)) = (args.get(1), args.get(2), args.get(3))
            else {
                usage()
            };
            let concurrency: usize = conc.parse().unwrap_or_else(|_| usage());
            let secs: f64 = secs.parse().unwrap_or_else(|_| usage());
            let pid = |i: usize| args.get(i).and_then(|p| p.parse::<u32>().ok());
            let (server, idp) = (pid(4), pid(5));
            let tck: f64 = std::env::var("CLK_TCK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100.0);
            run(flow, &http, base, concurrency, secs, server, idp, tck).await;
        }
        Some("signout") => {
            let (Some(a), Some(b), Some(rounds)) = (args.get(1), args.get(2), args.get(3)) else {
                usage()
            };
            let rounds: usize = rounds.parse().unwrap_or_else(|_| usage());
            let mut times = Vec::with_capacity(rounds);
            let mut stale = 0;
            for _ in 0..rounds {
                match signout_round(&http, a, b).await {
                    Ok((ms, n)) => {
                        times.push(ms);
                        stale += n;
                    }
                    Err(e) => {
                        eprintln!("bench_logins: sign-out round failed: {e}");
                        std::process::exit(1);
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            println!("rounds={}", times.len());
            println!("signout_ms_median={:.2}", times[times.len() / 2]);
            println!(
                "signout_ms_max={:.2}",
                times.last().copied().unwrap_or_default()
            );
            println!("signout_stale_answers={stale}");
        }
        _ => usage(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    flow: Flow,
    http: &Client,
    base: &str,
    concurrency: usize,
    secs: f64,
    server: Option<u32>,
    idp: Option<u32>,
    tck: f64,
) {
    // Warm the connection pool and both services.
    for _ in 0..concurrency {
        if let Err(e) = login_with(flow, http, base).await {
            eprintln!("bench_logins: warm-up login failed: {e}");
            std::process::exit(1);
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (e0, i0) = (cpu_ticks(server), cpu_ticks(idp));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, base) = (http.clone(), base.to_owned());
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match login_with(flow, &http, &base).await {
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
    let (e1, i1) = (cpu_ticks(server), cpu_ticks(idp));
    let n = done.load(Ordering::Relaxed);
    let per_login = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if n > 0 => format!("{:.3}", (b - a) as f64 * 1000.0 / tck / n as f64),
        _ => "n/a".to_owned(),
    };
    println!("logins={n}");
    println!("errors={}", errors.load(Ordering::Relaxed));
    println!("seconds={elapsed:.2}");
    println!("logins_per_s={:.1}", n as f64 / elapsed);
    println!("server_cpu_ms_per_login={}", per_login(e0, e1));
    println!("idp_cpu_ms_per_login={}", per_login(i0, i1));
    if errors.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
