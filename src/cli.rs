//! The subcommands that answer a person at a terminal: `entrance check` prints the setup
//! doctor's report; `entrance traces` asks a running entrance for a connection's last failed
//! logins and prints them as a table; `entrance healthcheck` asks a running entrance's
//! `/healthz` (a container's `HEALTHCHECK`, see the Dockerfile); `entrance setup-link` creates,
//! lists and revokes setup links through its admin API (issue 17).

use std::process::ExitCode;

use serde::Deserialize;

use crate::{config::Config, doctor, oidc::http_client::HttpClient, traces::TracesReport};

/// `entrance check`: 0 all pass, 1 a check failed, 2 the check could not run.
pub async fn check(
    path: &std::path::Path,
    only: Option<&str>,
    json: bool,
    verify_secret: bool,
) -> ExitCode {
    let fail = |message: String| {
        eprintln!("entrance: {message}");
        ExitCode::from(2)
    };
    let loaded = match Config::load_lenient(path) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let http = match HttpClient::new(&loaded.config.http) {
        Ok(h) => h,
        Err(e) => return fail(format!("cannot build the HTTP client: {e}")),
    };
    let now = time::OffsetDateTime::now_utc();
    let report = match doctor::check(&loaded, only, verify_secret, &http, now).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    if json {
        match report.to_json() {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(format!("cannot write the report as JSON: {e}")),
        }
    } else {
        print!("{}", report.render());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `entrance traces`: 0 printed, 1 the server refused, 2 it could not be asked.
pub async fn traces(path: &std::path::Path, connection: &str, json: bool) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("entrance: {message}");
        ExitCode::from(code)
    };
    let (addr, key) = match admin_address(path) {
        Ok(found) => found,
        Err(message) => return fail(2, message),
    };
    let url = format!(
        "http://{addr}{}?connection={}",
        crate::http::traces::PATH,
        url::form_urlencoded::byte_serialize(connection.as_bytes()).collect::<String>()
    );
    let client = match loopback_client(std::time::Duration::from_secs(5)) {
        Ok(c) => c,
        Err(message) => return fail(2, message),
    };
    let res = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return fail(
                2,
                format!(
                    "entrance is not running at {addr} (`{key}` in {}): nothing answered. Start it with `entrance serve --config {}`.",
                    path.display(),
                    path.display()
                ),
            );
        }
        Err(e) => return fail(2, format!("asking {url} failed: {e}")),
    };
    let status = res.status();
    let body = match res.text().await {
        Ok(b) => b,
        Err(e) => return fail(2, format!("reading the answer from {url} failed: {e}")),
    };
    match render(status.as_u16(), &body, json, key) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => fail(1, message),
    }
}

/// Where the running entrance answers its operators' commands, as configured in `path`: the
/// admin listener, else (`admin_on_loopback`) `listen` — on loopback either way — and the
/// key that names it. Lenient: the operator's shell need not hold the client secrets.
fn admin_address(path: &std::path::Path) -> Result<(std::net::SocketAddr, &'static str), String> {
    let loaded = Config::load_lenient(path).map_err(|e| e.to_string())?;
    let config = &loaded.config;
    let (addr, key) = match config.admin_listen {
        Some(a) => (a, "admin_listen"),
        None if config.admin_on_loopback => (config.listen, "listen"),
        None => return Err(nowhere_to_ask(path)),
    };
    Ok((loopback(addr), key))
}

/// The client for the operators' commands, which ask entrance on loopback. No proxy: an
/// HTTPS_PROXY meant for the IdPs must not see a loopback request; no redirects: entrance's
/// own answer is the one that counts.
fn loopback_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// What `entrance setup-link` does (issue 17).
#[derive(Debug, Clone)]
pub enum SetupLinkAction {
    /// A new link for a connection not yet in the configuration, or to renew the credential
    /// of one a setup link created (a rotation); prints its URL.
    Create {
        connection: String,
        name: Option<String>,
        /// `7d`, `12h`, `90m`; the server's default (7 days) when `None`.
        expires: Option<String>,
    },
    /// Every link: id, connection, status, expiry (never a token).
    List,
    /// Ends a link before it is used.
    Revoke { id: String },
}

/// `entrance setup-link …`: asks the running entrance's admin listener (or, without one, its
/// `listen` address on loopback, as `entrance traces` does). 0 done, 1 the server refused, 2 it
/// could not be asked.
pub async fn setup_link(path: &std::path::Path, action: SetupLinkAction) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("entrance: {message}");
        ExitCode::from(code)
    };
    let (addr, key) = match admin_address(path) {
        Ok(found) => found,
        Err(message) => return fail(2, message),
    };
    let base = format!("http://{addr}{}", crate::http::setup_admin_path());
    let client = match loopback_client(std::time::Duration::from_secs(10)) {
        Ok(c) => c,
        Err(message) => return fail(2, message),
    };
    let request = match &action {
        SetupLinkAction::Create {
            connection,
            name,
            expires,
        } => {
            let expires_in_secs = match expires.as_deref().map(parse_lifetime).transpose() {
                Ok(e) => e,
                Err(message) => return fail(2, message),
            };
            client.post(&base).json(&serde_json::json!({
                "connection": connection,
                "name": name,
                "created_by": operator(),
                "expires_in_secs": expires_in_secs,
            }))
        }
        SetupLinkAction::List => client.get(&base),
        SetupLinkAction::Revoke { id } => client.post(format!(
            "{base}/{}/revoke",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        )),
    };
    let res = match request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return fail(
                2,
                format!(
                    "entrance is not running at {addr} (`{key}` in {}): nothing answered",
                    path.display()
                ),
            );
        }
        Err(e) => return fail(2, format!("asking {base} failed: {e}")),
    };
    let status = res.status().as_u16();
    let body: serde_json::Value = match res.json().await {
        Ok(b) => b,
        Err(e) => return fail(2, format!("the answer from {base} is not JSON: {e}")),
    };
    match render_setup_links(status, &body, &action) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => fail(1, message),
    }
}

/// `entrance connections`: the running entrance's connections — the file's and those created
/// through setup links — as its admin listener's `/readyz` lists them. 0 printed, 1 the server
/// refused, 2 it could not be asked.
pub async fn connections(path: &std::path::Path, json: bool) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("entrance: {message}");
        ExitCode::from(code)
    };
    let loaded = match Config::load_lenient(path) {
        Ok(l) => l,
        Err(e) => return fail(2, e.to_string()),
    };
    let Some(addr) = loaded.config.admin_listen else {
        return fail(
            2,
            format!(
                "{} sets no admin_listen: the connections' details are served only there. Set admin_listen = \"127.0.0.1:9100\" and restart entrance.",
                path.display()
            ),
        );
    };
    let url = format!("http://{}/readyz", loopback(addr));
    let client = match loopback_client(std::time::Duration::from_secs(5)) {
        Ok(c) => c,
        Err(message) => return fail(2, message),
    };
    let body: serde_json::Value = match client.get(&url).send().await {
        Ok(res) => match res.json().await {
            Ok(b) => b,
            Err(e) => return fail(1, format!("the answer from {url} is not JSON: {e}")),
        },
        Err(e) => return fail(2, format!("asking {url} failed: {e}")),
    };
    if json {
        println!("{}", body["connections"]);
        return ExitCode::SUCCESS;
    }
    let text = |v: &serde_json::Value, k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::from(
        "ID                NAME                      STATE       SECRET EXPIRES IN (DAYS)\n",
    );
    for c in body["connections"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "{:<17} {:<25} {:<11} {}\n",
            text(&c, "id"),
            text(&c, "name"),
            text(&c, "state"),
            text(&c, "secret_expires_in_days")
        ));
    }
    print!("{out}");
    ExitCode::SUCCESS
}

/// `7d`, `12h`, `90m` or `600s` in seconds.
fn parse_lifetime(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("--expires {text:?}: write a number and a unit, e.g. 7d, 12h or 90m");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "d" => 86400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    number.checked_mul(unit).ok_or_else(bad)
}

/// Who runs the command, for the audit lines of the link (the login name, as `logname` and
/// `who` know it, through the variables a shell sets; sudo's caller first).
fn operator() -> Option<String> {
    ["SUDO_USER", "LOGNAME", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
}

/// What `entrance setup-link` prints for the server's answer, or the refusal.
fn render_setup_links(
    status: u16,
    body: &serde_json::Value,
    action: &SetupLinkAction,
) -> Result<String, String> {
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("-").to_owned();
    if !(200..300).contains(&status) {
        return Err(format!(
            "the server refused (HTTP {status}): {}",
            body["message"].as_str().unwrap_or("no reason given")
        ));
    }
    Ok(match action {
        SetupLinkAction::Create { .. } => format!(
            "{}\n(link {} {} connection {}, expires {}; send it to the customer's Entra admin, it is shown only now)\n",
            text(body, "url"),
            text(body, "id"),
            if body["rotation"].as_bool() == Some(true) {
                "to renew the credential of"
            } else {
                "for"
            },
            text(body, "connection"),
            text(body, "expires_at"),
        ),
        SetupLinkAction::Revoke { .. } => format!("revoked link {}\n", text(body, "id")),
        SetupLinkAction::List => {
            let links = body["links"].as_array().cloned().unwrap_or_default();
            if links.is_empty() {
                return Ok("no setup links\n".to_owned());
            }
            let mut out = String::from(
                "ID                CONNECTION        KIND      STATUS    EXPIRES               BY\n",
            );
            for l in &links {
                out.push_str(&format!(
                    "{:<17} {:<17} {:<9} {:<9} {:<21} {}\n",
                    text(l, "id"),
                    text(l, "connection"),
                    if l["rotation"].as_bool() == Some(true) {
                        "renewal"
                    } else {
                        "new"
                    },
                    text(l, "status"),
                    text(l, "expires_at"),
                    text(l, "created_by"),
                ));
            }
            out
        }
    })
}

/// What `entrance traces` says when the configuration serves `/admin/traces` nowhere
/// (issue 12.4): the two settings that would, and which to prefer.
fn nowhere_to_ask(path: &std::path::Path) -> String {
    format!(
        "{} sets neither admin_listen nor admin.allow_loopback_without_proxy, so entrance serves /admin/traces nowhere.\n\
         Set one of them in that file and restart entrance:\n\
         \x20 admin_listen = \"127.0.0.1:9100\"        # recommended: a loopback-only port for /admin/traces, /metrics and /readyz's details\n\
         or, only if no reverse proxy on this host forwards requests to entrance:\n\
         \x20 [admin]\n\
         \x20 allow_loopback_without_proxy = true",
        path.display()
    )
}

/// `entrance healthcheck`: 0 when `/healthz` on the configured listener (`admin_listen`, or
/// without one `listen`; unspecified addresses reached on loopback) answers 200 within 3 s, 1
/// otherwise, with the reason on stderr. It reads the same file as `serve`, leniently: a
/// container's health probe need not hold the client secrets' values to ask.
pub async fn healthcheck(path: &std::path::Path) -> ExitCode {
    let fail = |message: String| {
        eprintln!("entrance healthcheck: {message}");
        ExitCode::FAILURE
    };
    let loaded = match Config::load_lenient(path) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let addr = loopback(loaded.config.admin_listen.unwrap_or(loaded.config.listen));
    let url = format!("http://{addr}/healthz");
    let client = match loopback_client(std::time::Duration::from_secs(3)) {
        Ok(c) => c,
        Err(message) => return fail(message),
    };
    match client.get(&url).send().await {
        Ok(res) if res.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(res) => fail(format!("{url} answered HTTP {}", res.status().as_u16())),
        Err(e) => fail(format!("{url}: {e}")),
    }
}

/// Where `entrance traces` connects for a listen address: an unspecified address (`0.0.0.0`,
/// `::`) is reached on loopback.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// What `entrance traces` prints for the server's answer: the JSON as is, or a table, newest
/// first; `Err` with the message when the server refused. `key` is the config key the address
/// came from, for the advice.
fn render(status: u16, body: &str, json: bool, key: &str) -> Result<String, String> {
    if status == 200 && json {
        return Ok(format!("{}\n", body.trim_end()));
    }
    if status == 404 {
        #[derive(Deserialize)]
        struct Unknown {
            connection: String,
            connections: Vec<String>,
        }
        return Err(match serde_json::from_str::<Unknown>(body) {
            Ok(u) => format!(
                "the running entrance has no connection {:?}; it has: {}",
                u.connection,
                u.connections.join(", ")
            ),
            Err(_) if key == "listen" => "this address does not serve /admin/traces: without \
                 admin_listen it is answered only to loopback clients (with \
                 admin.allow_loopback_without_proxy = true), and `listen` is not a loopback or \
                 unspecified address, or the running entrance was started without that setting; \
                 set admin_listen (e.g. \"127.0.0.1:9100\") and restart entrance"
                .to_owned(),
            Err(_) => "this address does not serve /admin/traces (is it entrance?)".to_owned(),
        });
    }
    if status != 200 {
        return Err(format!("the server answered HTTP {status}"));
    }
    let report: TracesReport = serde_json::from_str(body)
        .map_err(|e| format!("the server's answer is not a traces report: {e}"))?;
    if report.failures.is_empty() {
        return Ok(format!(
            "no failed logins for {} since entrance started (it keeps the last {})\n",
            report.connection, report.capacity
        ));
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let mut rows = vec![[
        "TIME".to_owned(),
        "STEP".to_owned(),
        "REASON".to_owned(),
        "AADSTS".to_owned(),
        "ENTRA TRACE ID".to_owned(),
        "ENTRA CORRELATION ID".to_owned(),
        "REFERENCE".to_owned(),
    ]];
    for f in &report.failures {
        let reason = if f.reason == f.error {
            f.error.clone()
        } else {
            format!("{}: {}", f.error, f.reason)
        };
        rows.push([
            f.time.clone(),
            f.step.clone(),
            reason,
            f.aadsts
                .map_or_else(|| "-".to_owned(), |c| format!("AADSTS{c}")),
            dash(f.entra_trace_id.as_deref()),
            dash(f.entra_correlation_id.as_deref()),
            f.correlation_id.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::{FailedLogin, Traces};

    const ENTRA_TEXT: &str = "AADSTS50105: Your administrator has configured the application to block users unless they are specifically granted access. Trace ID: 0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f Correlation ID: 7d1c2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f Timestamp: 2026-11-26 07:31:04Z";

    #[test]
    fn the_cli_table_has_one_line_per_failure_newest_first() {
        let traces = Traces::new(5, ["contoso"]);
        traces.record(
            FailedLogin {
                connection: Some("contoso"),
                step: "idp_error",
                error: "idp_error",
                reason: "access_denied".into(),
                aadsts: Some(50105),
                description: Some(ENTRA_TEXT),
                entra_ids: None,
            },
            "first",
        );
        traces.record(
            FailedLogin {
                connection: Some("contoso"),
                step: "id_token",
                error: "id_token_rejected",
                reason: "bad_signature".into(),
                aadsts: None,
                description: None,
                entra_ids: None,
            },
            "second",
        );
        let body =
            serde_json::to_string(&traces.report("contoso", true).expect("ring")).expect("json");
        let text = render(200, &body, false, "listen").expect("rendered");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(
            lines[1].contains("id_token") && lines[1].contains("second"),
            "{text}"
        );
        assert!(
            lines[2].contains("AADSTS50105")
                && lines[2].contains("0c6f8b1e-2b4f-4d35-9a5e-0a1b2c3d4e5f")
                && lines[2].contains("first"),
            "{text}"
        );

        let unknown = r#"{"error":"unknown_connection","connection":"x","connections":["contoso","unknown"]}"#;
        let err = render(404, unknown, false, "listen").expect_err("refused");
        assert!(err.contains("contoso, unknown"), "{err}");
        assert!(
            render(404, "", false, "listen")
                .expect_err("refused")
                .contains("admin_listen")
        );
        let empty = serde_json::to_string(&Traces::new(5, ["c"]).report("c", true).expect("ring"))
            .expect("json");
        assert!(
            render(200, &empty, false, "listen")
                .expect("ok")
                .contains("no failed logins")
        );
    }

    #[test]
    fn without_an_admin_address_the_advice_names_both_settings() {
        let text = nowhere_to_ask(std::path::Path::new("/etc/entrance.toml"));
        assert!(
            text.starts_with("/etc/entrance.toml sets neither"),
            "{text}"
        );
        assert!(text.contains("admin_listen = \"127.0.0.1:9100\""), "{text}");
        assert!(
            text.contains("[admin]\n  allow_loopback_without_proxy = true"),
            "{text}"
        );
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        let a: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(loopback(a).to_string(), "127.0.0.1:8080");
        let b: std::net::SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(loopback(b).to_string(), "[::1]:8080");
        let c: std::net::SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        assert_eq!(loopback(c), c);
    }
}
