//! The access token passed upstream (`[connections.upstream]`, issue 14 items 2–3): kept
//! server-side in a record of its own beside the session (never in a cookie, never logged),
//! and refreshed before it expires — by one request at a time per session, across replicas.
//!
//! Its own record, not a key of the session: tower-sessions writes a session whole, so an idle
//! refresh saved by one replica from a copy it loaded before another replica's token refresh
//! would put the spent refresh token back. The record's id is derived from the session id
//! ([`super::derived_id`]), so whoever holds the cookie finds it and nobody else can.
//!
//! One refresh at a time: the request that creates the lock record ([`AnyStore::insert_new`]:
//! atomic on every store, shared by every replica, expiring by itself if its holder dies)
//! refreshes; the others use the current token while it is valid, or wait for the new one.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
};

use super::store::AnyStore;
use super::{REDACTED, SessionError, derived_id};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::oidc::token::{RefreshVerdict, Refreshed, TokenError, refresh_verdict};

/// Refresh when less than this is left of the access token (issue 14.3: five minutes), so an
/// app behind the proxy never receives a token about to expire mid-request.
pub(crate) const REFRESH_MARGIN_SECS: i64 = 300;
/// The lock outlives any one refresh (the token request's own timeout is shorter), and expires
/// by itself when the replica holding it dies.
const LOCK_SECS: i64 = 30;
/// How long a request that finds the token expired waits for another request's refresh.
const WAIT_FOR_REFRESH: Duration = Duration::from_secs(10);
/// An access token with less than this left is not handed out while another request refreshes.
const STILL_USABLE_SECS: i64 = 5;
/// `expires_in` is only recommended (RFC 6749 §5.1); without it the token is taken to live
/// this long, so it is refreshed soon rather than passed on after it expired.
const DEFAULT_EXPIRES_IN: u64 = 600;

const TOKENS_KEY: &str = "upstream_tokens";

/// The tokens of one session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpstreamTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// When the access token expires (unix seconds, by entrance's [`Clock`]).
    pub expires_at: i64,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("access_token", &REDACTED)
            .field("refresh_token", &REDACTED)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl UpstreamTokens {
    /// From a token answer received at `now`.
    pub(crate) fn received(
        access_token: &SecretString,
        refresh_token: Option<&SecretString>,
        expires_in: Option<u64>,
        now: i64,
    ) -> UpstreamTokens {
        let lifetime = i64::try_from(expires_in.unwrap_or(DEFAULT_EXPIRES_IN)).unwrap_or(i64::MAX);
        UpstreamTokens {
            access_token: access_token.expose_secret().to_owned(),
            refresh_token: refresh_token.map(|t| t.expose_secret().to_owned()),
            expires_at: now.saturating_add(lifetime),
        }
    }
}

/// Why no access token can be passed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The session holds none: it signed in before the connection had an `upstream` table, or
    /// the IdP sent no access token. Signing in again gets one.
    #[error("the session holds no access token for the upstream API")]
    Missing,
    /// The access token expired and there is no refresh token (the IdP sent none: was
    /// `offline_access` granted?).
    #[error("the access token expired and the IdP issued no refresh token")]
    Expired,
    /// The IdP refused the refresh for good (revoked, expired, new interaction needed): the
    /// tokens are deleted and the session must end.
    #[error("the IdP refused to refresh the access token: {0}")]
    SignInAgain(Box<TokenError>),
    /// The token expired and no new one could be had now (the IdP is down, another request's
    /// refresh did not finish in time); the session stays.
    #[error("the access token expired and could not be refreshed now{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Unavailable(Option<Box<TokenError>>),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What [`access_token`] works on: one session of one connection.
pub(crate) struct Upstream<'a> {
    pub store: &'a AnyStore,
    pub session: Id,
    pub clock: &'a Clock,
    pub metrics: &'a Metrics,
    pub connection: &'a str,
    /// The session's absolute end (unix seconds, by `clock`): the records live no longer.
    pub until: i64,
}

fn tokens_id(session: &Id) -> Id {
    derived_id(&["entrance:upstream", &session.to_string()])
}

fn lock_id(session: &Id) -> Id {
    derived_id(&["entrance:upstream-refresh", &session.to_string()])
}

/// A record that expires `secs` from now (real time: the stores expire records by it).
fn record(id: Id, key: &str, value: serde_json::Value, secs: i64) -> Record {
    let mut data = HashMap::new();
    data.insert(key.to_owned(), value);
    Record {
        id,
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::seconds(secs.max(1)),
    }
}

/// Keeps `tokens` for `session` until the session's absolute end `until`.
pub(crate) async fn keep(
    store: &AnyStore,
    session: &Id,
    tokens: &UpstreamTokens,
    until: i64,
    clock: &Clock,
) -> Result<(), SessionError> {
    let json = serde_json::to_string(tokens)
        .map_err(|e| SessionError::Corrupt(format!("serialising the upstream tokens: {e}")))?;
    let left = until.saturating_sub(clock.now_unix());
    store
        .put(&record(
            tokens_id(session),
            TOKENS_KEY,
            serde_json::Value::String(json),
            left,
        ))
        .await?;
    Ok(())
}

/// The tokens kept for `session`, if any (from the store's read cache when it has them).
pub(crate) async fn load(
    store: &AnyStore,
    session: &Id,
) -> Result<Option<UpstreamTokens>, SessionError> {
    tokens_of(store.load(&tokens_id(session)).await?)
}

/// The tokens kept for `session`, read from the store itself, never from its read cache:
/// after another replica's refresh, its new tokens are in the store at once, while its
/// invalidation may still be on its way to this replica. Redeeming the refresh token that
/// a stale copy holds would spend a token already spent (Entra rotates them), and end the
/// session.
async fn load_current(
    store: &AnyStore,
    session: &Id,
) -> Result<Option<UpstreamTokens>, SessionError> {
    tokens_of(store.load_uncached(&tokens_id(session)).await?)
}

fn tokens_of(record: Option<Record>) -> Result<Option<UpstreamTokens>, SessionError> {
    let Some(record) = record else {
        return Ok(None);
    };
    match record.data.get(TOKENS_KEY) {
        Some(serde_json::Value::String(json)) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| SessionError::Corrupt(format!("the upstream tokens do not parse: {e}"))),
        _ => Ok(None),
    }
}

/// Deletes the tokens of a session that ends.
pub(crate) async fn forget(store: &AnyStore, session: &Id) -> Result<(), SessionError> {
    store.delete(&tokens_id(session)).await?;
    Ok(())
}

/// The access token to pass for this session: the kept one while more than
/// [`REFRESH_MARGIN_SECS`] are left, else a refreshed one (`refresh` redeems the refresh
/// token; called at most once, and only by the request holding the session's lock).
pub(crate) async fn access_token<F, Fut>(
    up: &Upstream<'_>,
    refresh: F,
) -> Result<SecretString, UpstreamError>
where
    F: FnOnce(SecretString) -> Fut,
    Fut: Future<Output = Result<Refreshed, TokenError>>,
{
    let Some(mut tokens) = load(up.store, &up.session).await? else {
        return Err(UpstreamError::Missing);
    };
    if tokens.expires_at - up.clock.now_unix() > REFRESH_MARGIN_SECS {
        return Ok(SecretString::from(tokens.access_token));
    }
    if tokens.refresh_token.is_none() {
        return usable(tokens, up.clock.now_unix()).ok_or(UpstreamError::Expired);
    }
    let deadline = tokio::time::Instant::now() + WAIT_FOR_REFRESH;
    loop {
        let lock = record(
            lock_id(&up.session),
            "upstream_refresh_lock",
            serde_json::Value::Bool(true),
            LOCK_SECS,
        );
        if up
            .store
            .insert_new(&lock)
            .await
            .map_err(SessionError::from)?
        {
            let result = refresh_holding_lock(up, refresh).await;
            if let Err(e) = SessionStore::delete(up.store, &lock.id).await {
                // It expires by itself within LOCK_SECS.
                tracing::warn!(error = %e, connection = up.connection, "could not release the upstream token refresh lock");
            }
            return result;
        }
        // Another request, here or on another replica, is refreshing.
        if let Some(token) = usable(tokens.clone(), up.clock.now_unix() + STILL_USABLE_SECS) {
            return Ok(token);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UpstreamError::Unavailable(None));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokens = load_current(up.store, &up.session)
            .await?
            .ok_or(UpstreamError::Missing)?;
        if tokens.expires_at - up.clock.now_unix() > REFRESH_MARGIN_SECS {
            return Ok(SecretString::from(tokens.access_token));
        }
    }
}

/// The access token while it is valid after `at`.
fn usable(tokens: UpstreamTokens, at: i64) -> Option<SecretString> {
    (tokens.expires_at > at).then(|| SecretString::from(tokens.access_token))
}

async fn refresh_holding_lock<F, Fut>(
    up: &Upstream<'_>,
    refresh: F,
) -> Result<SecretString, UpstreamError>
where
    F: FnOnce(SecretString) -> Fut,
    Fut: Future<Output = Result<Refreshed, TokenError>>,
{
    // Read again under the lock, from the store itself: another request (here or on another
    // replica) may have refreshed since this one loaded, and its refresh token is the only
    // one that still counts.
    let Some(tokens) = load_current(up.store, &up.session).await? else {
        return Err(UpstreamError::Missing);
    };
    let now = up.clock.now_unix();
    if tokens.expires_at - now > REFRESH_MARGIN_SECS {
        return Ok(SecretString::from(tokens.access_token));
    }
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        return usable(tokens, now).ok_or(UpstreamError::Expired);
    };
    match refresh(SecretString::from(refresh_token.clone())).await {
        Ok(Refreshed {
            access_token,
            refresh_token: rotated,
            expires_in,
        }) => {
            // Entra rotates refresh tokens: keep the new one; an IdP that sends none keeps
            // the old one valid.
            let kept = UpstreamTokens::received(
                &access_token,
                Some(&rotated.unwrap_or_else(|| SecretString::from(refresh_token))),
                expires_in,
                up.clock.now_unix(),
            );
            keep(up.store, &up.session, &kept, up.until, up.clock).await?;
            up.metrics.upstream_refresh(up.connection, "refreshed");
            Ok(access_token)
        }
        Err(e) => match refresh_verdict(&e) {
            RefreshVerdict::SignInAgain => {
                forget(up.store, &up.session).await?;
                up.metrics.upstream_refresh(up.connection, "sign_in_again");
                Err(UpstreamError::SignInAgain(Box::new(e)))
            }
            RefreshVerdict::TryLater => {
                up.metrics.upstream_refresh(up.connection, "failed");
                tracing::warn!(
                    connection = up.connection,
                    error = %e,
                    expires_in_secs = tokens.expires_at - now,
                    "refreshing the upstream access token failed; the current token is used while it is valid and the refresh is tried again on the next request"
                );
                usable(tokens, now).ok_or(UpstreamError::Unavailable(Some(Box::new(e))))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::oidc::token::OAuthError;
    use crate::session::store::RecordStore;

    fn metrics() -> Metrics {
        Metrics::new(&crate::Config::load_str(crate::config::DEMO_TOML).expect("demo config"))
    }

    fn refreshed(n: usize) -> Refreshed {
        Refreshed {
            access_token: SecretString::from(format!("access-{n}")),
            refresh_token: Some(SecretString::from(format!("refresh-{n}"))),
            expires_in: Some(3600),
        }
    }

    fn refused(error: &str) -> TokenError {
        TokenError::Refused {
            status: 400,
            error: OAuthError {
                error: error.into(),
                error_description: Some("AADSTS50173: revoked".into()),
                error_codes: vec![50173],
                trace_id: None,
                correlation_id: None,
            },
        }
    }

    struct Fixture {
        store: AnyStore,
        clock: Clock,
        metrics: Metrics,
        session: Id,
    }

    impl Fixture {
        async fn new(expires_in: u64) -> Fixture {
            let (store, _) = AnyStore::memory(Duration::from_secs(5));
            let clock = Clock::new();
            let session = Id::default();
            let f = Fixture {
                store,
                clock,
                metrics: metrics(),
                session,
            };
            let tokens = UpstreamTokens::received(
                &SecretString::from("access-0"),
                Some(&SecretString::from("refresh-0")),
                Some(expires_in),
                f.clock.now_unix(),
            );
            keep(&f.store, &f.session, &tokens, f.until(), &f.clock)
                .await
                .expect("keep");
            f
        }

        fn until(&self) -> i64 {
            self.clock.now_unix() + 8 * 3600
        }

        fn up(&self) -> Upstream<'_> {
            Upstream {
                store: &self.store,
                session: self.session,
                clock: &self.clock,
                metrics: &self.metrics,
                connection: "c",
                until: self.until(),
            }
        }
    }

    #[tokio::test]
    async fn a_fresh_token_is_passed_without_a_refresh() {
        let f = Fixture::new(3600).await;
        let token = access_token(&f.up(), |_| async { panic!("no refresh is due") })
            .await
            .expect("token");
        assert_eq!(token.expose_secret(), "access-0");
    }

    /// Once less than the margin is left (the injected clock moves, nobody sleeps) the token is
    /// refreshed once, and the rotated refresh token is the one the next refresh sends.
    #[tokio::test]
    async fn a_token_near_its_end_is_refreshed_and_the_rotated_refresh_token_kept() {
        let f = Fixture::new(3600).await;
        f.clock
            .advance(Duration::from_secs(3600 - REFRESH_MARGIN_SECS as u64 + 1));
        let token = access_token(&f.up(), |rt| async move {
            assert_eq!(rt.expose_secret(), "refresh-0");
            Ok(refreshed(1))
        })
        .await
        .expect("refreshed");
        assert_eq!(token.expose_secret(), "access-1");
        f.clock.advance(Duration::from_secs(3600));
        let token = access_token(&f.up(), |rt| async move {
            assert_eq!(rt.expose_secret(), "refresh-1", "the rotated token is sent");
            Ok(refreshed(2))
        })
        .await
        .expect("refreshed again");
        assert_eq!(token.expose_secret(), "access-2");
    }

    /// Another replica refreshed, and this replica's read cache still holds the tokens it
    /// replaced (the invalidation is on its way): the read under the lock asks the store, so
    /// this replica passes the new token instead of redeeming the spent refresh token (which
    /// Entra would refuse, ending the session).
    #[tokio::test]
    async fn the_read_under_the_lock_sees_another_replicas_refresh_before_its_invalidation() {
        let (store, behind) = AnyStore::memory_behind_a_cache(Duration::from_secs(5));
        let mut f = Fixture::new(3600).await;
        f.store = store;
        let tokens = UpstreamTokens::received(
            &SecretString::from("access-0"),
            Some(&SecretString::from("refresh-0")),
            Some(3600),
            f.clock.now_unix(),
        );
        keep(&f.store, &f.session, &tokens, f.until(), &f.clock)
            .await
            .expect("keep");
        // Read once: now cached.
        let token = access_token(&f.up(), |_| async { panic!("no refresh is due") })
            .await
            .expect("token");
        assert_eq!(token.expose_secret(), "access-0");
        // Near the end, the other replica refreshed: the store has its tokens, the cache not.
        f.clock
            .advance(Duration::from_secs(3600 - REFRESH_MARGIN_SECS as u64 + 1));
        let theirs = UpstreamTokens::received(
            &SecretString::from("access-1"),
            Some(&SecretString::from("refresh-1")),
            Some(3600),
            f.clock.now_unix(),
        );
        let json = serde_json::to_string(&theirs).expect("json");
        behind
            .put(&record(
                tokens_id(&f.session),
                TOKENS_KEY,
                serde_json::Value::String(json),
                3600,
            ))
            .await
            .expect("the other replica's write");
        let token = access_token(&f.up(), |rt| async move {
            panic!("refreshed again with {}", rt.expose_secret())
        })
        .await
        .expect("token");
        assert_eq!(token.expose_secret(), "access-1");
    }

    /// Many requests of one session at once: exactly one refresh; the others get the current
    /// (still valid) token or the new one, never an error.
    #[tokio::test]
    async fn concurrent_requests_refresh_once() {
        let f = Fixture::new(3600).await;
        f.clock.advance(Duration::from_secs(3500));
        let calls = Arc::new(AtomicUsize::new(0));
        let up = f.up();
        let runs = (0..16).map(|_| {
            let calls = calls.clone();
            access_token(&up, move |_| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(refreshed(1))
            })
        });
        let results = futures_util::future::join_all(runs).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for r in results {
            let t = r.expect("a token");
            assert!(["access-0", "access-1"].contains(&t.expose_secret()));
        }
    }

    /// An expired token and a refresh underway elsewhere: wait for it rather than refresh
    /// again (which would spend the refresh token twice).
    #[tokio::test]
    async fn an_expired_token_waits_for_the_refresh_underway() {
        let f = Fixture::new(3600).await;
        f.clock.advance(Duration::from_secs(3700));
        let lock = record(
            lock_id(&f.session),
            "upstream_refresh_lock",
            serde_json::Value::Bool(true),
            LOCK_SECS,
        );
        assert!(f.store.insert_new(&lock).await.expect("lock"));
        let store = f.store.clone();
        let session = f.session;
        let clock = f.clock.clone();
        let until = f.until();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = UpstreamTokens::received(
                &SecretString::from("access-9"),
                Some(&SecretString::from("refresh-9")),
                Some(3600),
                clock.now_unix(),
            );
            keep(&store, &session, &t, until, &clock)
                .await
                .expect("keep");
            store.delete(&lock_id(&session)).await.expect("unlock");
        });
        let token = access_token(&f.up(), |_| async { panic!("the other request refreshes") })
            .await
            .expect("the other request's token");
        assert_eq!(token.expose_secret(), "access-9");
    }

    #[tokio::test]
    async fn a_refused_grant_forgets_the_tokens_and_a_transient_failure_keeps_them() {
        // invalid_grant (AADSTS50173, revoked): signed out, nothing kept.
        let f = Fixture::new(3600).await;
        f.clock.advance(Duration::from_secs(3400));
        let err = access_token(&f.up(), |_| async { Err(refused("invalid_grant")) })
            .await
            .expect_err("refused");
        assert!(matches!(err, UpstreamError::SignInAgain(_)), "{err:?}");
        assert!(load(&f.store, &f.session).await.expect("load").is_none());

        // temporarily_unavailable while the token is valid: the current token, kept.
        let f = Fixture::new(3600).await;
        f.clock.advance(Duration::from_secs(3400));
        let token = access_token(&f.up(), |_| async {
            Err(refused("temporarily_unavailable"))
        })
        .await
        .expect("the current token");
        assert_eq!(token.expose_secret(), "access-0");
        // ...and once it has expired, unavailable, still kept for the next try.
        f.clock.advance(Duration::from_secs(300));
        let err = access_token(&f.up(), |_| async {
            Err(refused("temporarily_unavailable"))
        })
        .await
        .expect_err("expired");
        assert!(
            matches!(err, UpstreamError::Unavailable(Some(_))),
            "{err:?}"
        );
        assert!(load(&f.store, &f.session).await.expect("load").is_some());
        let text = f.metrics.render();
        assert!(
            text.contains(
                r#"entrance_upstream_token_refreshes_total{connection="c",result="failed"} 2"#
            ) || text
                .contains(r#"upstream_token_refreshes_total{connection="c",result="failed"} 2"#),
            "{text}"
        );
    }

    /// An IdP that issued no refresh token: the token is passed while valid, then the session
    /// must sign in again.
    #[tokio::test]
    async fn without_a_refresh_token_the_token_serves_until_it_expires() {
        let f = Fixture::new(3600).await;
        let tokens = UpstreamTokens::received(
            &SecretString::from("access-0"),
            None,
            Some(3600),
            f.clock.now_unix(),
        );
        keep(&f.store, &f.session, &tokens, f.until(), &f.clock)
            .await
            .expect("keep");
        f.clock.advance(Duration::from_secs(3500));
        let token = access_token(&f.up(), |_| async { panic!("nothing to refresh with") })
            .await
            .expect("still valid");
        assert_eq!(token.expose_secret(), "access-0");
        f.clock.advance(Duration::from_secs(200));
        let err = access_token(&f.up(), |_| async { panic!("nothing to refresh with") })
            .await
            .expect_err("expired");
        assert!(matches!(err, UpstreamError::Expired), "{err:?}");
    }

    #[test]
    fn debug_never_prints_the_tokens() {
        let t = UpstreamTokens {
            access_token: "eyJaccess".into(),
            refresh_token: Some("refresh-secret".into()),
            expires_at: 1,
        };
        let printed = format!("{t:?}");
        assert!(
            !printed.contains("eyJ") && !printed.contains("refresh-secret"),
            "{printed}"
        );
    }
}
