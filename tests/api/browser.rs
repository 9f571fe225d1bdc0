//! A real browser for the tests: headless Chromium driven over WebDriver (fantoccini) by a
//! `chromedriver` on a free loopback port, one of each per test, both killed when the test
//! ends. Debian's `chromium` and `chromium-driver` packages provide them; without them the
//! tests are skipped loudly — except under `CI=true`, where that is a failure (as for
//! `redis-server` in `redis.rs`). A failing test leaves a screenshot of the page it was on in
//! `target/browser-screenshots/<test>.png`.
//!
//! ```ignore
//! browser::run("my_test", async |b| {
//!     let app = spawn_app().await;
//!     b.goto(&app.url("/")).await;
//!     b.click("Sign in with Contoso").await;
//!     b.wait_for_text("Signed in").await;
//! })
//! .await;
//! ```

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, cookies::Cookie};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{StatusCode, header};
use url::Url;

use crate::sessions::TempDir;

/// How long a condition may take to come true: generous, since the whole suite shares two
/// cores with the browser.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `body` with a fresh browser; on a panic inside it, saves a screenshot of the page
/// first. Returns without running `body` when the browser is not installed (see the module
/// docs).
pub async fn run(test: &str, body: impl AsyncFnOnce(&Browser)) {
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let outcome = AssertUnwindSafe(body(&browser)).catch_unwind().await;
    if outcome.is_err() {
        browser.save_screenshot().await;
    }
    browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The first of `names` found on PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The installed Chromium and chromedriver, or None (after saying so) when either is missing.
fn installed() -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = on_path(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (chromium, driver) => {
            let missing = [
                chromium.is_none().then_some("chromium"),
                driver.is_none().then_some("chromedriver"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            let msg = format!(
                "{missing} not on PATH: the real-browser tests are SKIPPED \
                 (install them: apt-get install -y chromium chromium-driver)"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}; CI=true requires them");
            }
            eprintln!("\n!!!!! SKIPPED: {msg} !!!!!\n");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One headless Chromium with a profile of its own, and the chromedriver that drives it.
pub struct Browser {
    client: Client,
    driver: Child,
    /// The Chromium profile (and chromedriver's log); removed when dropped.
    profile: TempDir,
    test: String,
    closed: bool,
}

impl Browser {
    /// Starts chromedriver and a browser session, or returns None when they are not installed.
    pub async fn start(test: &str) -> Option<Browser> {
        let (chromium, chromedriver) = installed()?;
        let profile = TempDir::new();
        // The port is free when chosen; if another process takes it before chromedriver
        // binds, chromedriver exits and the next attempt picks another.
        for attempt in 1..=3 {
            let port = free_port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    profile.path().join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            if !wait_for_driver(port, &mut driver).await {
                let _ = driver.kill();
                let _ = driver.wait();
                eprintln!("chromedriver on port {port} did not come up (attempt {attempt})");
                continue;
            }
            let client = match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities(&chromium, &profile.path().join("chromium")))
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => client,
                Err(e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    kill_chromium_of(&profile.path().join("chromium"));
                    let log = std::fs::read_to_string(profile.path().join("chromedriver.log"))
                        .unwrap_or_default();
                    panic!("no browser session from chromedriver: {e}\n{log}");
                }
            };
            let browser = Browser {
                client,
                driver,
                profile,
                test: test.to_owned(),
                closed: false,
            };
            // Page loads wait for the load event; a loaded machine gets a minute for each.
            browser
                .client
                .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                    Some(Duration::from_secs(30)),
                    Some(PATIENCE),
                    Some(Duration::ZERO),
                ))
                .await
                .expect("set WebDriver timeouts");
            return Some(browser);
        }
        panic!("chromedriver did not start in three attempts");
    }

    /// Ends the browser session (chromedriver quits Chromium) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(30), self.client.clone().close()).await;
        self.closed = true;
        // Drop kills chromedriver and anything left of Chromium.
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The address of the page the browser is on.
    pub async fn url(&self) -> Url {
        self.client.current_url().await.expect("current URL")
    }

    /// The visible text of the page (empty while a navigation replaces it).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The cookies the browser would send to the page it is on.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client.get_all_cookies().await.expect("cookies")
    }

    /// Presses the button (a `<button>`, a submit input, or a link styled as one) whose text
    /// is `text`, waiting for it to appear.
    pub async fn click(&self, text: &str) {
        assert!(
            !text.contains('\''),
            "button texts with ' are not supported"
        );
        let xpath = format!(
            "//button[normalize-space(.)='{text}'] | //a[normalize-space(.)='{text}'] \
             | //input[(@type='submit' or @type='button') and @value='{text}']"
        );
        let found = self
            .client
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(100))
            .for_element(Locator::XPath(&xpath))
            .await;
        let element = match found {
            Ok(element) => element,
            Err(e) => panic!(
                "no button {text:?} on {} within {PATIENCE:?}: {e}\n{}",
                self.url().await,
                self.text().await
            ),
        };
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("press {text:?}: {e}"));
    }

    /// The form field with this `id`, waiting for it to appear.
    async fn field(&self, id: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(100))
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no field #{id} within {PATIENCE:?}: {e}"))
    }

    /// Types `value` into the form field with this `id`, after clearing what it holds (the
    /// setup form keeps the values after a failed check). A date field is set through its
    /// value instead: typing a date depends on the browser's locale.
    pub async fn fill(&self, id: &str, value: &str) {
        let field = self.field(id).await;
        if field.attr("type").await.ok().flatten().as_deref() == Some("date") {
            self.client
                .execute(
                    "document.getElementById(arguments[0]).value = arguments[1];",
                    vec![id.into(), value.into()],
                )
                .await
                .unwrap_or_else(|e| panic!("fill #{id}: {e}"));
            return;
        }
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear #{id}: {e}"));
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into #{id}: {e}"));
    }

    /// The value of the script expression `js` on the current page (`return` is added).
    pub async fn eval(&self, js: &str) -> serde_json::Value {
        self.client
            .execute(&format!("return {js};"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
    }

    /// Clicks the radio button or checkbox with this `id`.
    pub async fn check(&self, id: &str) {
        self.field(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    /// With `ENTRANCE_SCREENSHOTS=<dir>` set, saves the whole page as `<dir>/<name>.png` (the
    /// window made as tall as the page first), for the docs; without it, does nothing, so CI
    /// writes nothing into the repository.
    pub async fn document_page(&self, name: &str) {
        let Some(dir) = std::env::var_os("ENTRANCE_SCREENSHOTS") else {
            return;
        };
        // Measured at a small window, so a short page is not padded to the last one's height.
        let _ = self.client.set_window_size(900, 600).await;
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(1000)
            .clamp(600, 4000);
        let _ = self.client.set_window_size(900, height as u32 + 40).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    /// Waits until `done` holds for the page's URL and text; returns the text.
    pub async fn wait_until(&self, what: &str, mut done: impl FnMut(&Url, &str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let (url, text) = (self.client.current_url().await, self.text().await);
            if let Ok(url) = &url
                && done(url, &text)
            {
                return text;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "waited {PATIENCE:?} for {what}; the browser is on {} showing:\n{text}",
                    url.map(|u| u.to_string()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page shows `needle`; returns the page's text.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        self.wait_until(&format!("a page showing {needle:?}"), |_, text| {
            text.contains(needle)
        })
        .await
    }

    /// `GET url` outside the browser with the browser's cookies for that page, e.g. to see a
    /// status code (WebDriver does not tell it). Opens `url` in the browser first, so the
    /// cookies are the ones it would send there.
    pub async fn fetch_with_cookies(&self, url: &str) -> (StatusCode, String) {
        self.goto(url).await;
        let cookie = self
            .cookies()
            .await
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ");
        fetch_with_cookie(url, &cookie).await
    }

    /// Saves a screenshot of the page to `target/browser-screenshots/<test>.png`.
    pub async fn save_screenshot(&self) {
        let dir = screenshot_dir();
        let path = dir.join(format!("{}.png", self.test));
        let saved = async {
            let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(&path, png).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(30), saved).await {
            Ok(Ok(())) => eprintln!("screenshot of the failing page: {}", path.display()),
            Ok(Err(e)) => eprintln!("no screenshot ({e})"),
            Err(_) => eprintln!("no screenshot (the browser did not answer)"),
        }
    }
}

/// `GET url` with a `Cookie` header, following no redirects.
pub async fn fetch_with_cookie(url: &str, cookie: &str) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    let mut req = client.get(url);
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, cookie);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    (status, res.text().await.unwrap_or_default())
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if !self.closed {
            // The session was not ended (a panic outside `run`): chromedriver is gone, so end
            // the Chromium processes of this test's profile, found by their command line.
            kill_chromium_of(&self.profile.path().join("chromium"));
        }
    }
}

/// Kills the processes whose command line names `profile` (this test's Chromium only).
fn kill_chromium_of(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == needle.as_bytes())
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// chromedriver answers `/status` once it listens; false if it exited or took over 30 s.
async fn wait_for_driver(port: u16, driver: &mut Child) -> bool {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = driver.try_wait() {
            return false;
        }
        if let Ok(res) = client
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && res.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn capabilities(chromium: &Path, profile: &Path) -> serde_json::Map<String, serde_json::Value> {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Straight to loopback, whatever proxy the environment names.
                "--no-proxy-server",
                "--window-size=1024,768",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    match caps {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// `target/browser-screenshots`, next to the test binary's `target/<profile>/deps`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-screenshots")
}
