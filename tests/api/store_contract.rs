//! The session-store contract: one suite, run against memory, SQLite and Redis alike (as
//! tower-sessions runs its `route_tests!` once per store). Every test drives the real service
//! and the mock IdP over HTTP, with the store picked by configuration.
//!
//! Time: what entrance keeps itself (the absolute lifetime, the idle-refresh step) moves with
//! its test clock (`TestApp::clock`); what the store keeps (a record's idle expiry, a Redis
//! key's TTL) is read from the store, or waited out with short real timeouts.
//!
//! Without `redis-server` the Redis half is skipped loudly — a failure under `CI=true`
//! (`tests/api/redis.rs`).

use std::{sync::Arc, time::Duration};

use mock_idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockIdp, MockUser};
use reqwest::{StatusCode, header};
use time::OffsetDateTime;
use tower_sessions::{Expiry, Session, session::Id};

use crate::{
    helpers::{AppOptions, TestApp, assert_signed_in, browser, location, spawn_app_with},
    redis::RedisServer,
    sessions::TempDir,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Sqlite,
    Redis,
}

/// Redis keys of the contract's services.
const PREFIX: &str = "contract:";

/// One test's store: its `[session]` lines and what keeps it alive.
struct Store {
    kind: Kind,
    toml: String,
    _dir: Option<TempDir>,
    redis: Option<RedisServer>,
}

impl Store {
    /// The store of `kind`; `None` (after saying so) for Redis without `redis-server`.
    async fn start(kind: Kind) -> Option<Store> {
        Some(match kind {
            Kind::Memory => Store {
                kind,
                toml: r#"store = "memory""#.into(),
                _dir: None,
                redis: None,
            },
            Kind::Sqlite => {
                let dir = TempDir::new();
                let path = dir.path().join("sessions.db");
                Store {
                    kind,
                    toml: format!(
                        "store = \"sqlite\"\nsqlite_path = \"{}\"",
                        path.display().to_string().replace('\\', "\\\\")
                    ),
                    _dir: Some(dir),
                    redis: None,
                }
            }
            Kind::Redis => {
                let redis = RedisServer::start().await?;
                Store {
                    kind,
                    toml: format!(
                        "store = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"{PREFIX}\"\nredis_pool_size = 2",
                        redis.url()
                    ),
                    _dir: None,
                    redis: Some(redis),
                }
            }
        })
    }

    /// entrance on this store, with these extra `[session]` lines.
    async fn app(&self, session: &str) -> TestApp {
        self.app_with(session, AppOptions::default()).await
    }

    async fn app_with(&self, session: &str, opts: AppOptions) -> TestApp {
        spawn_app_with(AppOptions {
            session_toml: format!("{}\n{session}", self.toml),
            ..opts
        })
        .await
    }

    fn persists(&self) -> bool {
        self.kind != Kind::Memory
    }
}

/// The idle timeout of most tests: longer than the pending lifetime (600 s), as by default.
const IDLE: u64 = 7200;
const LONG: &str = "idle_timeout_secs = 7200\nabsolute_lifetime_secs = 86400";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Asserts the session's record lives about `secs` more by the real clock (which the stores
/// expire by) — and, on Redis, that the key's own TTL says the same.
async fn assert_record_lives(store: &Store, app: &TestApp, cookie: &str, secs: u64) {
    let record = app
        .records
        .load_cookie(cookie)
        .await
        .expect("the store answers")
        .expect("the session's record is live");
    let left = (record.expiry_date - OffsetDateTime::now_utc()).whole_seconds();
    let expected = secs as i64 - 5..=secs as i64;
    assert!(
        expected.contains(&left),
        "{:?}: the record expires in {left} s, expected {secs} s",
        store.kind
    );
    if let Some(redis) = &store.redis {
        let ttl = redis.pttl_ms(&format!("{PREFIX}{cookie}")) / 1000;
        assert!(
            expected.contains(&ttl),
            "the Redis key's TTL is {ttl} s, expected {secs} s"
        );
    }
}

async fn assert_record_gone(app: &TestApp, cookie: &str) {
    assert!(
        app.records
            .load_cookie(cookie)
            .await
            .expect("the store answers")
            .is_none(),
        "the session's record is gone"
    );
}

/// A sign-in in the test's browser; returns the session cookie's value.
async fn sign_in(app: &TestApp) -> String {
    let res = app.login().await;
    let (cookie, _) = app
        .session_cookie(&res)
        .expect("the callback sets the cookie");
    assert_signed_in(app, res).await;
    cookie
}

/// `/me` with exactly this session cookie (a copy of it kept by someone, or a request sent
/// before the browser dropped it).
async fn me_with(app: &TestApp, cookie: &str) -> StatusCode {
    reqwest::Client::new()
        .get(app.url("/me"))
        .header(
            header::COOKIE,
            format!("{}={cookie}", app.config.session.cookie_name),
        )
        .send()
        .await
        .expect("me")
        .status()
}

/// The IdP's hidden iframe: no cookie, only the query.
async fn front_channel(app: &TestApp, query: &str) {
    let res = reqwest::Client::new()
        .get(app.url(&format!("/logout/frontchannel?{query}")))
        .send()
        .await
        .expect("frontchannel");
    assert_eq!(res.status(), StatusCode::OK);
}

fn sid() -> String {
    MockUser::default().sid
}

// ----- the contract ---------------------------------------------------------------------

/// Signing in stores the session with the idle timeout: the record, Redis's TTL and the
/// cookie's `Max-Age`.
async fn sign_in_gives_the_session_the_idle_timeout(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let res = app.login().await;
    let (cookie, max_age) = app
        .session_cookie(&res)
        .expect("the callback sets the cookie");
    assert_eq!(max_age, Some(secs(IDLE)));
    assert_signed_in(&app, res).await;
    assert_record_lives(&store, &app, &cookie, IDLE).await;
}

/// Issue #11, item 2: the idle refresh saved a signed-in session with the pending lifetime
/// (10 minutes: record, Redis TTL and cookie), so an active user was signed out about an hour
/// after signing in. Within the refresh step requests only read; past it the session is
/// saved with the idle timeout again.
async fn the_idle_refresh_keeps_the_idle_timeout(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let cookie = sign_in(&app).await;

    app.clock.advance(secs(IDLE / 10 - 20));
    let res = app.me().await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        app.session_cookie(&res).is_none(),
        "within the refresh step a request only reads"
    );

    app.clock.advance(secs(40));
    let res = app.me().await;
    assert_eq!(res.status(), StatusCode::OK);
    let (same, max_age) = app
        .session_cookie(&res)
        .expect("the refresh sends the cookie again");
    assert_eq!(same, cookie, "a refresh keeps the session id");
    assert_eq!(
        max_age,
        Some(secs(IDLE)),
        "the cookie keeps the idle timeout"
    );
    assert_record_lives(&store, &app, &cookie, IDLE).await;

    // And again a step later, through /auth.
    app.clock.advance(secs(IDLE / 10 + 1));
    let res = app.get("/auth").await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, max_age) = app.session_cookie(&res).expect("refreshed");
    assert_eq!(max_age, Some(secs(IDLE)));
    assert_record_lives(&store, &app, &cookie, IDLE).await;
}

/// Issue #11, item 2: a `/login` started in a signed-in browser (an app's sign-in link)
/// saved the session with the pending lifetime too.
async fn a_login_started_while_signed_in_keeps_the_idle_timeout(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let cookie = sign_in(&app).await;
    let res = app
        .browser
        .get(app.url("/login?connection=contoso"))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (same, max_age) = app.session_cookie(&res).expect("the login saves");
    assert_eq!(same, cookie);
    assert_eq!(max_age, Some(secs(IDLE)));
    assert_record_lives(&store, &app, &cookie, IDLE).await;
    assert_eq!(app.me().await.status(), StatusCode::OK);
}

/// The store ends a session left alone for the idle timeout (real time: the store keeps it).
async fn an_idle_session_ends_after_the_idle_timeout(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app("idle_timeout_secs = 2").await;
    sign_in(&app).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/auth").await.status(), StatusCode::UNAUTHORIZED);
}

/// entrance's absolute lifetime ends even an active session, and no idle expiry reaches past
/// it (record and cookie).
async fn the_absolute_lifetime_ends_an_active_session(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store
        .app("idle_timeout_secs = 7200\nabsolute_lifetime_secs = 10800")
        .await;
    let cookie = sign_in(&app).await;
    app.clock.advance(secs(7200));
    let res = app.me().await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, max_age) = app.session_cookie(&res).expect("refreshed");
    let max_age = max_age.expect("a Max-Age").as_secs();
    assert!((3595..=3600).contains(&max_age), "Max-Age {max_age}");
    assert_record_lives(&store, &app, &cookie, 3600).await;

    app.clock.advance(secs(3600));
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/auth").await.status(), StatusCode::UNAUTHORIZED);
}

/// `POST /logout` deletes the session from the store.
async fn logout_ends_the_session(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let cookie = sign_in(&app).await;
    let res = app
        .browser
        .post(app.url("/logout"))
        .header(header::ORIGIN, app.base.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(me_with(&app, &cookie).await, StatusCode::UNAUTHORIZED);
    assert_record_gone(&app, &cookie).await;
}

/// Issue #11, item 3: on Redis the sid index was written with `SET … XX`, which never
/// creates a key, so front-channel logout found nothing.
async fn front_channel_logout_ends_the_session(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let cookie = sign_in(&app).await;
    front_channel(&app, &format!("sid={}", sid())).await;
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_record_gone(&app, &cookie).await;
}

/// Issue #11, item 3: the sid index expired at the sign-in's first idle expiry and was
/// never pushed forward, so a session kept alive by use could no longer be ended by
/// front-channel logout. The index lives as long as the sign-in may (its absolute end).
async fn front_channel_logout_outlives_the_first_idle_expiry(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app("idle_timeout_secs = 3").await;
    let cookie = sign_in(&app).await;
    // Used every second for four: each use is past the refresh step (at least a minute by
    // entrance's clock), so each pushes the session's idle expiry forward.
    for _ in 0..4 {
        tokio::time::sleep(secs(1)).await;
        app.clock.advance(secs(61));
        assert_eq!(app.me().await.status(), StatusCode::OK, "kept alive by use");
    }
    front_channel(&app, &format!("sid={}", sid())).await;
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_record_gone(&app, &cookie).await;
}

/// Issue #11, item 4: a request that loaded the session before a sign-out (an `/auth` about
/// to save its idle refresh) saved it back afterwards on memory and SQLite, where `save`
/// upserted. `save` only updates a live record now, on every store.
async fn a_request_that_loaded_the_session_cannot_bring_it_back(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let records = Arc::new(app.records.clone());
    let idle = Expiry::OnInactivity(time::Duration::seconds(IDLE as i64));

    // Against POST /logout.
    let cookie = sign_in(&app).await;
    let id: Id = cookie.parse().expect("a session id");
    let in_flight = Session::new(Some(id), records.clone(), Some(idle));
    assert!(in_flight.get_value("user").await.expect("load").is_some());
    let res = app
        .browser
        .post(app.url("/logout"))
        .header(header::ORIGIN, app.base.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    in_flight
        .insert("touched", app.clock.now_unix())
        .await
        .expect("insert");
    in_flight
        .save()
        .await
        .expect("saving a record that is gone is not an error");
    assert_record_gone(&app, &cookie).await;
    assert_eq!(me_with(&app, &cookie).await, StatusCode::UNAUTHORIZED);

    // Against front-channel logout.
    let cookie = sign_in(&app).await;
    let id: Id = cookie.parse().expect("a session id");
    let in_flight = Session::new(Some(id), records, Some(idle));
    assert!(in_flight.get_value("user").await.expect("load").is_some());
    front_channel(&app, &format!("sid={}", sid())).await;
    in_flight
        .insert("touched", app.clock.now_unix())
        .await
        .expect("insert");
    in_flight.save().await.expect("save");
    assert_record_gone(&app, &cookie).await;
    assert_eq!(me_with(&app, &cookie).await, StatusCode::UNAUTHORIZED);
}

/// SQLite and Redis keep sessions — and the front-channel index — across a restart of
/// entrance; the memory store loses them (documented: "lost on restart").
async fn sessions_survive_a_restart_where_the_store_persists(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let mut app = store.app(LONG).await;
    let cookie = sign_in(&app).await;
    app.restart().await;
    if !store.persists() {
        assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
        app.stop().await;
        return;
    }
    assert_eq!(app.me().await.status(), StatusCode::OK);
    app.clock.advance(secs(IDLE / 10));
    let res = app.me().await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.session_cookie(&res).and_then(|(_, m)| m),
        Some(secs(IDLE))
    );
    assert_record_lives(&store, &app, &cookie, IDLE).await;
    front_channel(&app, &format!("sid={}", sid())).await;
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Issue #11, item 6: callbacks racing with one state each loaded the session before any
/// saved the state's removal, and each went on to the token endpoint. Exactly one may.
async fn concurrent_callbacks_with_one_state_sign_in_once(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    let authorize = app.begin_login().await;
    let callback = app.authorize(&authorize).await;
    let tokens_before = app.idp.counters().token;
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = app.browser.clone();
        let callback = callback.clone();
        racing.spawn(async move {
            let res = client
                .get(&callback)
                .header(header::ACCEPT, "application/json")
                .send()
                .await
                .expect("callback");
            let status = res.status();
            let sets_cookie = res.headers().contains_key(header::SET_COOKIE);
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (status, sets_cookie, body)
        });
    }
    let mut signed_in = 0;
    while let Some(answer) = racing.join_next().await {
        let (status, sets_cookie, body) = answer.expect("the request task");
        if status == StatusCode::SEE_OTHER {
            signed_in += 1;
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "state_unknown", "{body}");
            // A loser's cookie (the pre-sign-in id) arriving after the winner's would sign
            // the browser out again.
            assert!(!sets_cookie, "a refused callback sets no cookie: {body}");
        }
    }
    assert_eq!(signed_in, 1, "exactly one callback signs in");
    assert_eq!(
        app.idp.counters().token - tokens_before,
        1,
        "exactly one callback reached the token endpoint"
    );
    assert_eq!(app.me().await.status(), StatusCode::OK);
}

/// The same race, made deterministic: a second tab's callback that arrives after the sign-in
/// moved the session to a new id still carries the old id, whose record is gone. It is
/// refused and sets no cookie — the session layer's removal of the old id's cookie would
/// delete the new one (same name and path) and sign the browser out.
async fn a_late_callback_with_the_old_cookie_does_not_sign_the_browser_out(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    // No cookie jar: each request carries the cookie a tab would have sent.
    let tab = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let name = &app.config.session.cookie_name;
    let res = tab
        .get(app.url("/login?connection=contoso"))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (old, _) = app
        .session_cookie(&res)
        .expect("the pending login's cookie");
    let callback = app
        .authorize(&reqwest::Url::parse(&location(&res)).expect("authorize URL"))
        .await;
    let call = |cookie: String| {
        tab.get(&callback)
            .header(header::COOKIE, format!("{name}={cookie}"))
            .header(header::ACCEPT, "application/json")
            .send()
    };
    let first = call(old.clone()).await.expect("callback");
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let (new, _) = app.session_cookie(&first).expect("the signed-in cookie");
    assert_ne!(new, old, "signing in moves the session to a new id");

    let late = call(old).await.expect("the late callback");
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    assert!(
        late.headers().get(header::SET_COOKIE).is_none(),
        "a refused callback sets no cookie: {:?}",
        late.headers()
    );
    let me = tab
        .get(app.url("/me"))
        .header(header::COOKIE, format!("{name}={new}"))
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);
}

/// Issue #11, item 5: a connection removed by a reload kept its sessions working on `/auth`
/// and `/me`. They read as not signed in — and count again if the connection comes back.
async fn a_removed_connection_signs_its_sessions_out(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let app = store.app(LONG).await;
    sign_in(&app).await;
    app.reload_with("id = \"contoso\"", "id = \"contoso-renamed\"");
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/auth").await.status(), StatusCode::UNAUTHORIZED);
    let res = app.get("/auth?redirect=true").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert!(location(&res).contains("/login?return_to="));
    app.reload.apply(app.config.clone());
    assert_eq!(app.me().await.status(), StatusCode::OK);
}

/// Issue #11, item 7: the sid index was keyed by `sid` alone, so another connection's IdP
/// issuing the same `sid` overwrote it — and its front-channel logout then ended that
/// connection's session instead. Keyed by (connection, `sid`), with the request's `iss`
/// (OpenID Connect Front-Channel Logout 1.0 §2) required to match the session's issuer.
async fn front_channel_logout_is_per_connection(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    // A second IdP whose user has the same `sid`, under another issuer.
    let other = MockIdp::start(Default::default())
        .await
        .expect("second IdP");
    let app = store
        .app_with(
            LONG,
            AppOptions {
                connection_extra: format!(
                    "
[[connections]]
id = \"fabrikam\"
name = \"Fabrikam\"
metadata_url = \"{}\"
client_id = \"{DEFAULT_CLIENT_ID}\"
client_secret = \"{DEFAULT_CLIENT_SECRET}\"
",
                    other.metadata_url()
                ),
                ..AppOptions::default()
            },
        )
        .await;
    other.set_redirect_uris(vec![app.config.redirect_uri()]);
    for _ in 0..200 {
        let res = browser()
            .get(app.url("/login?connection=fabrikam"))
            .send()
            .await
            .expect("login");
        if res.status() == StatusCode::SEE_OTHER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Contoso's user in the test's browser, then Fabrikam's in another.
    sign_in(&app).await;
    let fabrikam = browser();
    let authorize = app
        .begin_login_with(&fabrikam, "?connection=fabrikam")
        .await;
    let callback = app.authorize(&authorize).await;
    let res = app.callback_with(&fabrikam, &callback, true).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "Fabrikam signs in");
    let fabrikam_me = || async {
        fabrikam
            .get(app.url("/me"))
            .send()
            .await
            .expect("me")
            .status()
    };

    // Contoso's IdP signs its user out: Fabrikam's session stays.
    front_channel(
        &app,
        &format!("iss={}&sid={}", urlencode(&app.idp.issuer()), sid()),
    )
    .await;
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fabrikam_me().await, StatusCode::OK);
    // A request naming an issuer that is not the session's ends nothing.
    front_channel(
        &app,
        &format!(
            "iss={}&sid={}",
            urlencode("https://elsewhere.example"),
            sid()
        ),
    )
    .await;
    assert_eq!(fabrikam_me().await, StatusCode::OK);
    // Fabrikam's IdP signs its user out.
    front_channel(
        &app,
        &format!("iss={}&sid={}", urlencode(&other.issuer()), sid()),
    )
    .await;
    assert_eq!(fabrikam_me().await, StatusCode::UNAUTHORIZED);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Issue 14 items 2–3 on every store: the upstream tokens live in a record of their own
/// (written with `put`, read with `load`), one refresh at a time takes the store's single-use
/// lock (`insert_new`, released with `delete`), the rotated refresh token is what the next
/// refresh sends (the mock spends each one), a revoked grant ends the session, and sign-out —
/// by the button or front-channel — takes the tokens along: a stolen copy of the cookie
/// replayed afterwards gets neither a session nor a token.
async fn upstream_tokens_refresh_rotate_and_end_with_the_session(kind: Kind) {
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let opts = || AppOptions {
        connection_extra: crate::upstream::upstream_toml(""),
        ..AppOptions::default()
    };
    let app = store.app_with(LONG, opts()).await;
    let cookie = sign_in(&app).await;
    let first = crate::upstream::api_token(crate::upstream::auth(&app).await.1);
    for round in 1..=2 {
        app.clock.advance(secs(3400));
        let next = crate::upstream::api_token(crate::upstream::auth(&app).await.1);
        assert_ne!(next, first, "{kind:?} round {round}");
        assert_eq!(app.idp.counters().refresh, round, "{kind:?}");
    }
    // Sign-out takes the tokens along.
    let res = app
        .browser
        .post(app.url("/logout"))
        .header(header::ORIGIN, app.base.clone())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(me_with(&app, &cookie).await, StatusCode::UNAUTHORIZED);
    let replay = reqwest::Client::new()
        .get(app.url("/auth"))
        .header(
            header::COOKIE,
            format!("{}={cookie}", app.config.session.cookie_name),
        )
        .send()
        .await
        .expect("auth");
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED, "{kind:?}");

    // A revoked grant ends the next session at its refresh; so does front-channel logout.
    sign_in(&app).await;
    crate::upstream::api_token(crate::upstream::auth(&app).await.1);
    app.idp.revoke_refresh_tokens();
    app.clock.advance(secs(3400));
    assert_eq!(
        crate::upstream::auth(&app).await.0,
        StatusCode::UNAUTHORIZED,
        "{kind:?}"
    );
    assert_eq!(
        app.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "{kind:?}"
    );
    sign_in(&app).await;
    crate::upstream::api_token(crate::upstream::auth(&app).await.1);
    front_channel(&app, &format!("sid={}", sid())).await;
    assert_eq!(
        crate::upstream::auth(&app).await.0,
        StatusCode::UNAUTHORIZED,
        "{kind:?}"
    );
}

/// Each contract test as `store_contract::{memory,sqlite,redis}::<test>`, on a multi-threaded
/// runtime like the service's.
macro_rules! for_each_store {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Sqlite).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Redis).await
                }
            )*
        }
    };
}

for_each_store!(
    sign_in_gives_the_session_the_idle_timeout,
    the_idle_refresh_keeps_the_idle_timeout,
    a_login_started_while_signed_in_keeps_the_idle_timeout,
    an_idle_session_ends_after_the_idle_timeout,
    the_absolute_lifetime_ends_an_active_session,
    logout_ends_the_session,
    front_channel_logout_ends_the_session,
    front_channel_logout_outlives_the_first_idle_expiry,
    a_request_that_loaded_the_session_cannot_bring_it_back,
    sessions_survive_a_restart_where_the_store_persists,
    concurrent_callbacks_with_one_state_sign_in_once,
    a_late_callback_with_the_old_cookie_does_not_sign_the_browser_out,
    a_removed_connection_signs_its_sessions_out,
    front_channel_logout_is_per_connection,
    upstream_tokens_refresh_rotate_and_end_with_the_session,
);

// ----- store-independent ------------------------------------------------------------------

/// A customer tenant that is not the mock's own.
const FABRIKAM_TENANT: &str = "bbbbcccc-1111-dddd-2222-eeee3333ffff";

/// Issue #11, item 5: a tenant taken out of a multi-tenant connection's `allowed_tenants`
/// kept its sessions working. The verifier's sign-in rule applies to sessions too.
#[tokio::test]
async fn a_tenant_taken_out_of_allowed_tenants_is_signed_out() {
    let tenants = format!(
        r#"allowed_tenants = ["{}", "{FABRIKAM_TENANT}"]"#,
        mock_idp::DEFAULT_TENANT_ID
    );
    let app = spawn_app_with(AppOptions {
        authority: Some("organizations"),
        connection_extra: tenants.clone(),
        ..AppOptions::default()
    })
    .await;
    let res = app
        .login_with_behaviour(mock_idp::Behaviour {
            user_tenant: Some(FABRIKAM_TENANT.into()),
            ..Default::default()
        })
        .await;
    let me = assert_signed_in(&app, res).await;
    assert_eq!(me["tid"], FABRIKAM_TENANT);
    app.reload_with(
        &tenants,
        &format!(r#"allowed_tenants = ["{}"]"#, mock_idp::DEFAULT_TENANT_ID),
    );
    assert_eq!(app.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/auth").await.status(), StatusCode::UNAUTHORIZED);
}
