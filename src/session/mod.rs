//! What entrance keeps in a browser session — pending logins and the signed-in identity —
//! behind typed accessors, and the `CurrentUser` guard. Where sessions are stored is
//! [`store`].

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_sessions::{
    Expiry, Session, SessionStore,
    session::{Id, Record},
};

mod parsed;
pub(crate) mod sealed;
pub(crate) mod setup_links;
pub(crate) mod store;
pub(crate) mod upstream;

pub(crate) use parsed::ParsedUsers;

use crate::clock::Clock;
use crate::{config::ResponseMode, oidc::identity::Identity};
use store::AnyStore;

const PENDING_KEY: &str = "pending";
const USER_KEY: &str = "user";
/// The ID token, apart from the user: only logout reads it (`id_token_hint`), so the user
/// that every `/auth` parses does not carry its ~1.5 KB. Kept only when the IdP gave no
/// `login_hint` claim: Entra's logout takes `logout_hint` (that claim) instead, so an Entra
/// session stores no ID token at all (issue 16.4: the demo session from 2.78 KB to < 2 KiB).
/// Sessions written before still carry it, and logout still reads it.
const ID_TOKEN_KEY: &str = "id_token";
/// When the idle expiry was last pushed forward (unix seconds).
const TOUCHED_KEY: &str = "touched";

/// The signed-in user as kept in the session: [`SignedIn`] as ONE JSON string, not as a JSON
/// object. A session record is a map of `serde_json::Value`s that the memory store clones on
/// every load and tower-sessions clones again on every `get`; as an object tree the user
/// (ID token included) was ~45 allocations per copy, a third of the CPU of `GET /auth` and
/// ~6 KB per stored session; as a string it is one allocation and ~2.3 KB
/// (docs/BENCHMARKS.md). A user stored as an object (before this) is still read.
async fn get_user<U: serde::de::DeserializeOwned>(
    session: &Session,
) -> Result<Option<U>, SessionError> {
    match session.get_value(USER_KEY).await? {
        None => Ok(None),
        Some(value) => parse_user(value).map(Some),
    }
}

fn parse_user<U: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<U, SessionError> {
    match value {
        serde_json::Value::String(json) => parse_user_json(&json),
        object => serde_json::from_value(object).map_err(user_corrupt),
    }
}

fn parse_user_json<U: serde::de::DeserializeOwned>(json: &str) -> Result<U, SessionError> {
    serde_json::from_str(json).map_err(user_corrupt)
}

fn user_corrupt(e: serde_json::Error) -> SessionError {
    SessionError::Corrupt(format!("the session's user does not parse: {e}"))
}

async fn put_user(session: &Session, user: &SignedIn) -> Result<(), SessionError> {
    let json = serde_json::to_string(user)
        .map_err(|e| SessionError::Corrupt(format!("serialising the session's user: {e}")))?;
    session.insert(USER_KEY, json).await?;
    if user.identity.login_hint.is_none() {
        session.insert(ID_TOKEN_KEY, &user.id_token).await?;
    }
    Ok(())
}

/// A login that went to the IdP and has not come back yet. `Debug` leaves out the state, the
/// nonce and the PKCE verifier: with the state and the verifier a reader of the log could
/// redeem the code the IdP sends back (RFC 7636 §1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    pub state: String,
    pub connection: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub response_mode: String,
    pub created_at: i64,
    /// A setup link's test sign-in (issue 17): the link's id. Such a login creates no
    /// application session; its callback shows what entrance received (`http::setup`).
    #[serde(default)]
    pub test_of_link: Option<String>,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("state", &REDACTED)
            .field("connection", &self.connection)
            .field("nonce", &REDACTED)
            .field("pkce_verifier", &REDACTED)
            .field("return_to", &self.return_to)
            .field("response_mode", &self.response_mode)
            .field("created_at", &self.created_at)
            .field("test_of_link", &self.test_of_link)
            .finish()
    }
}

/// What `Debug` prints in place of a secret.
const REDACTED: Redacted = Redacted;

struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PendingLogin {
    pub(crate) fn mode(&self) -> ResponseMode {
        match self.response_mode.as_str() {
            "form_post" => ResponseMode::FormPost,
            _ => ResponseMode::Query,
        }
    }
}

/// How long a login may take at the IdP; also the lifetime of a session that holds only
/// pending logins. Entra's codes live about 10 minutes too.
pub(crate) const PENDING_LIFETIME: Duration = Duration::from_secs(600);

/// Logins one browser session may have in flight (several tabs). Past this the oldest is
/// dropped, so a bot hammering /login cannot grow one session without bound.
pub(crate) const MAX_PENDING: usize = 8;

/// A signed-in user. `Debug` leaves out the ID token (a bearer credential for
/// `id_token_hint`, and personal data).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SignedIn {
    pub identity: Identity,
    pub issued_at: i64,
    /// Absolute end of the session (`session.absolute_lifetime_secs` after sign-in). The idle
    /// timeout is the store's expiry; this second limit is kept as a timestamp because
    /// tower-sessions has one expiry mode per session.
    pub expires_at: i64,
    /// Kept for RP-initiated logout (`id_token_hint`) at IdPs that want it, under its own
    /// session key (see `ID_TOKEN_KEY`), not in the user's JSON.
    #[serde(skip)]
    pub id_token: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("identity", &self.identity)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("id_token", &REDACTED)
            .finish()
    }
}

/// A signed-in user as every request but logout reads it: [`SignedIn`] without the stored ID
/// token, which serde skips over without copying (a third of the bytes the hot path used to
/// parse on every `/auth`; docs/BENCHMARKS.md, "Profile").
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActiveUser {
    pub identity: Identity,
    pub issued_at: i64,
    pub expires_at: i64,
    /// What the web layer derives from this user once and keeps beside it while the parse
    /// is kept (`parsed::ParsedUsers`): the forward-auth headers (`http::auth`). Opaque here;
    /// never stored.
    #[serde(skip)]
    pub derived: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Why a callback's `state` could not be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateProblem {
    /// No pending login in this browser carries that state: never started here, started in
    /// another browser, or already used.
    Unknown,
    /// It was started here but more than 10 minutes ago.
    Expired,
}

/// What can go wrong with a session: the store failed, a record does not parse, or a
/// callback's `state` matches no pending login. The HTTP layer turns each into a response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Store(#[from] tower_sessions::session::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error("the sign-in state is {}", match .problem { StateProblem::Unknown => "unknown or already used", StateProblem::Expired => "expired" })]
    State {
        problem: StateProblem,
        /// The connection to offer "Sign in again" for, when known.
        connection: Option<String>,
        /// Where the login was headed, when known.
        return_to: Option<String>,
    },
}

impl From<tower_sessions::session_store::Error> for SessionError {
    fn from(e: tower_sessions::session_store::Error) -> SessionError {
        SessionError::Store(tower_sessions::session::Error::Store(e))
    }
}

/// Adds a pending login, dropping expired ones and the oldest beyond [`MAX_PENDING`], and
/// gives the session the expiry its content calls for ([`fit_expiry`]).
pub(crate) async fn push_pending(
    session: &Session,
    login: PendingLogin,
    idle_timeout: Duration,
    clock: &Clock,
) -> Result<(), SessionError> {
    let mut pending: Vec<PendingLogin> = session.get(PENDING_KEY).await?.unwrap_or_default();
    let now = clock.now_unix();
    pending.retain(|p| now - p.created_at < PENDING_LIFETIME.as_secs() as i64);
    pending.push(login);
    if pending.len() > MAX_PENDING {
        let excess = pending.len() - MAX_PENDING;
        pending.drain(..excess);
    }
    session.insert(PENDING_KEY, pending).await?;
    fit_expiry(session, idle_timeout, clock).await
}

/// Sets the expiry a session is saved with (the store record's and the cookie's `Max-Age`):
/// while it holds a user within the absolute lifetime, the idle timeout (never past that
/// lifetime's end); otherwise — only pending logins — [`PENDING_LIFETIME`].
///
/// Called before every save: tower-sessions gives each request's session the layer's expiry
/// (`src/http/mod.rs`: the pending lifetime), and `Session::save` and the layer's cookie use
/// whatever expiry the session holds then (tower-sessions-core 0.14 `Session::expiry_date`).
/// Before, a signed-in session saved by an idle refresh or a `/login` got 10 minutes.
async fn fit_expiry(
    session: &Session,
    idle_timeout: Duration,
    clock: &Clock,
) -> Result<(), SessionError> {
    let user = match get_user::<ActiveUser>(session).await {
        Ok(user) => user,
        // An unreadable user signs nobody in (`signed_in` fails on it): pending lifetime.
        Err(SessionError::Corrupt(_)) => None,
        Err(e) => return Err(e),
    };
    let expiry = match user {
        Some(user) if clock.now_unix() < user.expires_at => {
            signed_in_expiry(user.expires_at, idle_timeout, clock)
        }
        _ => pending_expiry(),
    };
    session.set_expiry(Some(expiry));
    Ok(())
}

fn pending_expiry() -> Expiry {
    Expiry::OnInactivity(time::Duration::seconds(PENDING_LIFETIME.as_secs() as i64))
}

/// The idle timeout, cut to what is left of the absolute lifetime (`expires_at`, by `clock`).
fn signed_in_expiry(expires_at: i64, idle_timeout: Duration, clock: &Clock) -> Expiry {
    let left = expires_at.saturating_sub(clock.now_unix()).max(1);
    let idle = i64::try_from(idle_timeout.as_secs()).unwrap_or(i64::MAX);
    Expiry::OnInactivity(time::Duration::seconds(idle.min(left)))
}

/// Takes the pending login for `state` out of the session (single use).
///
/// What makes a state single-use is a marker claimed in the store
/// ([`AnyStore::insert_new`]: atomic in every store, shared by every replica), kept as long
/// as a pending login can live: only the callback that created it gets the login, so a
/// replayed callback, or two racing ones (a double submit, two replicas) that both loaded the
/// session before either saved it, can never use the state again. The session without the
/// login is saved here only when the state has expired; a callback that finds the state
/// claimed by another leaves the session untouched. A sign-in cycles the session id at
/// once (deleting this record), and a later failure's session is saved by the session layer
/// with its response. Saving it here on every callback was one store write per sign-in that
/// the next write undid (issue 16.3).
pub(crate) async fn take_pending(
    session: &Session,
    store: &AnyStore,
    state: &str,
    idle_timeout: Duration,
    clock: &Clock,
) -> Result<PendingLogin, SessionError> {
    let unknown = || SessionError::State {
        problem: StateProblem::Unknown,
        connection: None,
        return_to: None,
    };
    let mut pending: Vec<PendingLogin> = session.get(PENDING_KEY).await?.unwrap_or_default();
    // Compare against every entry in constant time, so the time taken does not reveal how
    // much of a guessed state matched.
    let mut found = None;
    for (i, p) in pending.iter().enumerate() {
        if bool::from(p.state.as_bytes().ct_eq(state.as_bytes())) {
            found = Some(i);
        }
    }
    let Some(i) = found else {
        return Err(unknown());
    };
    if !store.insert_new(&state_marker(state)).await? {
        // Another callback holds this state: it owns the session (it cycles the id on a
        // sign-in, or saves the removal on a failure). Touching the session here would save
        // its old id again and send that cookie back — a racing second callback arriving
        // after the first's sign-in signed the browser out.
        return Err(unknown());
    }
    let login = pending.remove(i);
    if pending.is_empty() {
        session.remove_value(PENDING_KEY).await?;
    } else {
        session.insert(PENDING_KEY, &pending).await?;
    }
    fit_expiry(session, idle_timeout, clock).await?;
    if clock.now_unix() - login.created_at >= PENDING_LIFETIME.as_secs() as i64 {
        session.save().await?;
        return Err(SessionError::State {
            problem: StateProblem::Expired,
            connection: Some(login.connection),
            return_to: Some(login.return_to),
        });
    }
    Ok(login)
}

const STATE_MARKER_KEY: &str = "state_used";

/// The store record that says `state` has been used: its id derived from the state (256
/// random bits; the marker id is a domain-separated SHA-256 of it, so the record names no
/// state), kept as long as a pending login can live.
fn state_marker(state: &str) -> Record {
    let mut data = std::collections::HashMap::new();
    data.insert(STATE_MARKER_KEY.to_owned(), serde_json::Value::Bool(true));
    Record {
        id: derived_id(&["entrance:state", state]),
        data,
        expiry_date: time::OffsetDateTime::now_utc()
            + time::Duration::seconds(PENDING_LIFETIME.as_secs() as i64),
    }
}

/// A record id derived from `parts` (SHA-256, first 16 bytes), for records entrance finds
/// again by what they are about rather than by a cookie. Each part is length-prefixed, so
/// no two different lists give the same input.
fn derived_id(parts: &[&str]) -> Id {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Id(i128::from_le_bytes(bytes))
}

/// Signs the user in: a new session id (so a session id planted before login is worthless —
/// session fixation), the identity, the idle expiry, and an explicit save.
pub(crate) async fn sign_in(
    session: &Session,
    signed_in: &SignedIn,
    idle_timeout: Duration,
    clock: &Clock,
) -> Result<(), SessionError> {
    let result = async {
        session.cycle_id().await?;
        put_user(session, signed_in).await?;
        session.insert(TOUCHED_KEY, signed_in.issued_at).await?;
        session.set_expiry(Some(signed_in_expiry(
            signed_in.expires_at,
            idle_timeout,
            clock,
        )));
        session.save().await.map_err(SessionError::from)
    }
    .await;
    if let Err(e) = result {
        // Not signed in unless the save succeeded: drop the identity from the in-memory session
        // too, so no later save (the session layer's, a retry) can store a sign-in the user
        // was told failed. The old id is already deleted from the store, or still holds only
        // pending logins; either way it never reads as signed in.
        session.clear().await;
        return Err(e);
    }
    Ok(())
}

/// Front-channel logout (Entra calls `GET /logout/frontchannel?sid=…` in a hidden iframe,
/// usually without our cookie) must find a session by the IdP's `sid`. The stores have no
/// secondary index, so entrance writes one small record per (connection, `sid`), whose id is
/// derived from both, listing the sessions signed in with them.
///
/// Keyed by connection too: a `sid` is unique only per issuer (OpenID Connect Front-Channel
/// Logout 1.0 §3), so another connection's IdP naming the same `sid` must neither overwrite
/// this index nor end these sessions.
fn sid_index_id(connection: &str, sid: &str) -> Id {
    derived_id(&["entrance:sid", connection, sid])
}

const SID_INDEX_KEY: &str = "sid_index_for";
/// Sessions one index record lists at most (the same IdP session signed in here again, e.g.
/// after the cookie was lost); the oldest are dropped.
const MAX_SESSIONS_PER_SID: usize = 8;

/// Records that the session just signed in (`session`, holding `signed_in`) belongs to IdP
/// session `sid` of its connection. Written with [`AnyStore::put`], not `save` (which never
/// creates a record), and kept until the sign-in's absolute end: the session may live that
/// long by being used, and the index is never touched by its idle refreshes.
pub(crate) async fn index_sid(
    store: &AnyStore,
    sid: &str,
    session: &Session,
    signed_in: &SignedIn,
    clock: &Clock,
) -> Result<(), SessionError> {
    let Some(session_id) = session.id() else {
        return Ok(());
    };
    let id = sid_index_id(&signed_in.identity.connection, sid);
    let left = signed_in.expires_at.saturating_sub(clock.now_unix()).max(1);
    let mut expiry_date = time::OffsetDateTime::now_utc() + time::Duration::seconds(left);
    let mut ids = Vec::new();
    if let Some(existing) = store.load(&id).await? {
        ids = indexed_sessions(&existing);
        expiry_date = expiry_date.max(existing.expiry_date);
    }
    ids.retain(|i| *i != session_id);
    ids.push(session_id);
    if ids.len() > MAX_SESSIONS_PER_SID {
        let excess = ids.len() - MAX_SESSIONS_PER_SID;
        ids.drain(..excess);
    }
    let mut data = std::collections::HashMap::new();
    data.insert(
        SID_INDEX_KEY.to_owned(),
        serde_json::Value::Array(
            ids.iter()
                .map(|i| serde_json::Value::String(i.to_string()))
                .collect(),
        ),
    );
    store
        .put(&Record {
            id,
            data,
            expiry_date,
        })
        .await?;
    Ok(())
}

/// The session ids an index record lists.
fn indexed_sessions(index: &Record) -> Vec<Id> {
    match index.data.get(SID_INDEX_KEY) {
        Some(serde_json::Value::Array(ids)) => ids
            .iter()
            .filter_map(|v| v.as_str()?.parse::<Id>().ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Ends the sessions that signed in through `connection` with IdP session `sid` — and, when
/// the request names the issuer (`iss`, OpenID Connect Front-Channel Logout 1.0 §2), only
/// those whose ID token came from that issuer. Returns who was signed out.
pub(crate) async fn end_by_sid(
    store: &AnyStore,
    connection: &str,
    sid: &str,
    iss: Option<&str>,
) -> Result<Vec<SignedIn>, SessionError> {
    let index_id = sid_index_id(connection, sid);
    let Some(index) = store.load(&index_id).await? else {
        return Ok(Vec::new());
    };
    let mut ended = Vec::new();
    let mut kept = false;
    for session_id in indexed_sessions(&index) {
        let Some(record) = store.load(&session_id).await? else {
            continue;
        };
        let Some(user) = record
            .data
            .get(USER_KEY)
            .cloned()
            .and_then(|v| parse_user::<SignedIn>(v).ok())
        else {
            continue;
        };
        let id = &user.identity;
        // The index is keyed by both already; the session itself must agree too.
        if id.connection != connection
            || id.sid.as_deref() != Some(sid)
            || iss.is_some_and(|iss| iss != id.iss)
        {
            kept = true;
            continue;
        }
        store.delete(&session_id).await?;
        upstream::forget(store, &session_id).await?;
        ended.push(user);
    }
    if !kept {
        store.delete(&index_id).await?;
    }
    Ok(ended)
}

/// Ends the session: deletes it from the store and empties it, so the session layer sends a
/// removal cookie. Returns who was signed in.
/// The session's upstream tokens ([`upstream`]) go with it.
pub(crate) async fn sign_out(
    session: &Session,
    store: &AnyStore,
) -> Result<Option<SignedIn>, SessionError> {
    if let Some(id) = session.id() {
        upstream::forget(store, &id).await?;
    }
    let mut user = get_user::<SignedIn>(session).await?;
    if let Some(user) = &mut user {
        user.id_token = session
            .get::<String>(ID_TOKEN_KEY)
            .await?
            .unwrap_or_default();
    }
    session.flush().await?;
    Ok(user)
}

/// The signed-in user, if any and within the absolute lifetime. The idle expiry is pushed
/// forward (one store write) only when it has moved meaningfully — a tenth of the idle
/// timeout, at least a minute — so `/auth` and `/me` are reads, not writes, on almost every
/// request. The refresh saves the session with the idle timeout ([`signed_in_expiry`]) and
/// so sends the cookie again with it as `Max-Age`.
///
/// The user is parsed once per distinct stored JSON per process (`users`, [`ParsedUsers`]).
pub(crate) async fn signed_in(
    session: &Session,
    users: &ParsedUsers,
    idle_timeout: Duration,
    clock: &Clock,
) -> Result<Option<Arc<ActiveUser>>, SessionError> {
    let user = match session.get_value(USER_KEY).await? {
        None => return Ok(None),
        Some(serde_json::Value::String(json)) => users.parse(json)?,
        Some(object) => Arc::new(parse_user(object)?),
    };
    let now = clock.now_unix();
    if now >= user.expires_at {
        return Ok(None);
    }
    let touched = session
        .get::<i64>(TOUCHED_KEY)
        .await?
        .unwrap_or(user.issued_at);
    let step = (idle_timeout.as_secs() as i64 / 10).max(60);
    if now - touched >= step {
        session.insert(TOUCHED_KEY, now).await?;
        session.set_expiry(Some(signed_in_expiry(user.expires_at, idle_timeout, clock)));
        session.save().await?;
    }
    Ok(Some(user))
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::clock::now_unix;
    use crate::session::store::AnyStore;

    fn clock() -> Clock {
        Clock::new()
    }

    fn ada() -> SignedIn {
        SignedIn {
            identity: Identity {
                user: "entra:t:o".into(),
                connection: "c".into(),
                iss: "https://issuer.example/t/v2.0".into(),
                sub: "s".into(),
                oid: Some("o".into()),
                tid: Some("t".into()),
                name: Some("Ada \"Quoted\" Lovelace".into()),
                email: Some("ada@contoso.example".into()),
                email_verified: false,
                preferred_username: Some("ada@contoso.example".into()),
                login_hint: None,
                sid: None,
                groups: vec!["g1".into()],
                roles: Vec::new(),
                groups_overage: false,
            },
            issued_at: now_unix(),
            expires_at: now_unix() + 3600,
            id_token: "header.payload.signature".into(),
        }
    }

    #[tokio::test]
    async fn the_user_is_kept_as_one_json_string_and_read_back() {
        let (store, _) = AnyStore::memory(Duration::from_secs(1));
        let session = Session::new(None, Arc::new(store.clone()), None);
        let user = ada();
        sign_in(&session, &user, Duration::from_secs(3600), &clock())
            .await
            .expect("sign in");
        let Some(serde_json::Value::String(json)) = session.get_value(USER_KEY).await.expect("get")
        else {
            panic!("the user is stored as one JSON string");
        };
        // The ID token lives under its own key: the user every /auth parses does not carry it.
        assert!(!json.contains(&user.id_token), "{json}");
        let back = read_back(&session).await;
        assert_eq!(back.identity, user.identity);
        assert_eq!(back.expires_at, user.expires_at);
        // The ID token is read back only on the way out, for logout (`ada` has no
        // login_hint, so logout needs id_token_hint).
        let out = sign_out(&session, &store)
            .await
            .expect("sign out")
            .expect("was in");
        assert_eq!(out.id_token, user.id_token);
    }

    /// Issue 16.4: with Entra's `login_hint` (what logout sends as `logout_hint`) the ID token
    /// is not kept; a session written before, which holds it, still gives it to logout.
    #[tokio::test]
    async fn the_id_token_is_kept_only_when_logout_needs_it() {
        let (store, _) = AnyStore::memory(Duration::from_secs(1));
        let session = Session::new(None, Arc::new(store.clone()), None);
        let mut user = ada();
        user.identity.login_hint = Some("O.aXN0aGlzYWhpbnQ".into());
        sign_in(&session, &user, Duration::from_secs(3600), &clock())
            .await
            .expect("sign in");
        assert!(
            session
                .get_value(ID_TOKEN_KEY)
                .await
                .expect("get")
                .is_none()
        );
        let out = sign_out(&session, &store)
            .await
            .expect("sign out")
            .expect("was in");
        assert_eq!(out.id_token, "");

        let older = Session::new(None, Arc::new(store.clone()), None);
        sign_in(&older, &user, Duration::from_secs(3600), &clock())
            .await
            .expect("sign in");
        older
            .insert(ID_TOKEN_KEY, &user.id_token)
            .await
            .expect("as the previous version wrote it");
        let out = sign_out(&older, &store)
            .await
            .expect("sign out")
            .expect("was in");
        assert_eq!(out.id_token, user.id_token);
    }

    /// Issue 14.2: the upstream tokens live beside the session and end with it.
    #[tokio::test]
    async fn sign_out_forgets_the_upstream_tokens() {
        let (store, _) = AnyStore::memory(Duration::from_secs(1));
        let session = Session::new(None, Arc::new(store.clone()), None);
        let user = ada();
        sign_in(&session, &user, Duration::from_secs(3600), &clock())
            .await
            .expect("sign in");
        let id = session.id().expect("saved");
        let tokens = upstream::UpstreamTokens::received(
            &secrecy::SecretString::from("access"),
            Some(&secrecy::SecretString::from("refresh")),
            Some(3600),
            now_unix(),
        );
        upstream::keep(&store, &id, &tokens, user.expires_at, &clock())
            .await
            .expect("keep");
        assert_eq!(
            upstream::load(&store, &id).await.expect("load"),
            Some(tokens)
        );
        sign_out(&session, &store).await.expect("sign out");
        assert_eq!(upstream::load(&store, &id).await.expect("load"), None);
    }

    /// The signed-in user `session` holds, read as `/auth` reads it.
    async fn read_back(session: &Session) -> Arc<ActiveUser> {
        signed_in(
            session,
            &ParsedUsers::new(10),
            Duration::from_secs(3600),
            &clock(),
        )
        .await
        .expect("read")
        .expect("signed in")
    }

    #[tokio::test]
    async fn a_user_stored_as_an_object_is_still_read() {
        let (store, _) = AnyStore::memory(Duration::from_secs(1));
        let session = Session::new(None, Arc::new(store.clone()), None);
        let user = ada();
        session.insert(USER_KEY, &user).await.expect("insert");
        let back = read_back(&session).await;
        assert_eq!(back.identity, user.identity);
        let out = sign_out(&session, &store)
            .await
            .expect("sign out")
            .expect("was in");
        assert_eq!(out.identity, user.identity);
    }

    fn pending(state: &str, created_at: i64) -> PendingLogin {
        PendingLogin {
            state: state.into(),
            connection: "c".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/".into(),
            response_mode: "query".into(),
            created_at,
            test_of_link: None,
        }
    }

    fn problem(r: Result<PendingLogin, SessionError>) -> StateProblem {
        match r {
            Err(SessionError::State { problem, .. }) => problem,
            other => panic!("expected a state error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pending_logins_are_single_use_capped_and_expire() {
        let (store, _) = AnyStore::memory(Duration::from_secs(1));
        let session = Session::new(None, Arc::new(store.clone()), None);
        let idle = Duration::from_secs(3600);
        for i in 0..(MAX_PENDING + 3) {
            push_pending(
                &session,
                pending(&format!("s{i}"), now_unix()),
                idle,
                &clock(),
            )
            .await
            .expect("push");
        }
        // The oldest three were dropped.
        assert_eq!(
            problem(take_pending(&session, &store, "s0", idle, &clock()).await),
            StateProblem::Unknown
        );
        let last = format!("s{}", MAX_PENDING + 2);
        assert!(
            take_pending(&session, &store, &last, idle, &clock())
                .await
                .is_ok()
        );
        assert_eq!(
            problem(take_pending(&session, &store, &last, idle, &clock()).await),
            StateProblem::Unknown,
            "a state is usable once"
        );
        push_pending(&session, pending("old", now_unix() - 599), idle, &clock())
            .await
            .expect("push");
        // Inserted while still fresh; becomes expired by the time it is taken.
        let mut all: Vec<PendingLogin> =
            session.get(PENDING_KEY).await.expect("get").expect("some");
        all.iter_mut()
            .filter(|p| p.state == "old")
            .for_each(|p| p.created_at -= 2);
        session.insert(PENDING_KEY, all).await.expect("insert");
        assert_eq!(
            problem(take_pending(&session, &store, "old", idle, &clock()).await),
            StateProblem::Expired
        );
    }

    /// A memory store whose loads, once `together` is set, wait until two have begun: two
    /// requests that both loaded a session before either saved.
    #[derive(Debug)]
    struct LoadsTogether {
        inner: crate::session::store::MemoryStore,
        together: std::sync::atomic::AtomicBool,
        barrier: tokio::sync::Barrier,
    }

    #[async_trait::async_trait]
    impl tower_sessions::SessionStore for LoadsTogether {
        async fn create(&self, r: &mut Record) -> tower_sessions::session_store::Result<()> {
            self.inner.create(r).await
        }
        async fn save(&self, r: &Record) -> tower_sessions::session_store::Result<()> {
            self.inner.save(r).await
        }
        async fn load(&self, id: &Id) -> tower_sessions::session_store::Result<Option<Record>> {
            let loaded = self.inner.load(id).await;
            if self.together.load(std::sync::atomic::Ordering::SeqCst) {
                // Read first, then wait: neither sees the other's save.
                self.barrier.wait().await;
            }
            loaded
        }
        async fn delete(&self, id: &Id) -> tower_sessions::session_store::Result<()> {
            self.inner.delete(id).await
        }
    }

    #[async_trait::async_trait]
    impl crate::session::store::RecordStore for LoadsTogether {
        async fn put(&self, r: &Record) -> tower_sessions::session_store::Result<()> {
            self.inner.put(r).await
        }
        async fn insert_new(&self, r: &Record) -> tower_sessions::session_store::Result<bool> {
            self.inner.insert_new(r).await
        }
    }

    /// Issue #11, item 6: two callbacks with one state that both loaded the session before
    /// either saved its removal both got the pending login (read-modify-write of the
    /// session). The store's single-use marker lets exactly one have it.
    #[tokio::test]
    async fn two_callbacks_that_loaded_the_session_together_take_the_login_once() {
        let backend = Arc::new(LoadsTogether {
            inner: Default::default(),
            together: Default::default(),
            barrier: tokio::sync::Barrier::new(2),
        });
        let store = AnyStore::new(backend.clone(), Duration::from_secs(5));
        let idle = Duration::from_secs(3600);
        let started = Session::new(None, Arc::new(store.clone()), None);
        push_pending(&started, pending("s", now_unix()), idle, &clock())
            .await
            .expect("push");
        started.save().await.expect("save");
        let id = started.id();

        backend
            .together
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let first = Session::new(id, Arc::new(store.clone()), None);
        let second = Session::new(id, Arc::new(store.clone()), None);
        let clock = clock();
        let (a, b) = tokio::join!(
            take_pending(&first, &store, "s", idle, &clock),
            take_pending(&second, &store, "s", idle, &clock),
        );
        let taken = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(taken, 1, "{a:?} / {b:?}");
        let (lost, lost_session) = if a.is_ok() { (b, &second) } else { (a, &first) };
        assert_eq!(problem(lost), StateProblem::Unknown);
        assert!(
            !lost_session.is_modified(),
            "the callback that lost the state must not save the session (its old id) again"
        );
    }

    /// A store that refuses to create records (the write that stores a sign-in under its new
    /// id) and otherwise behaves.
    #[derive(Debug, Default)]
    struct CreateFails(crate::session::store::MemoryStore);

    #[async_trait::async_trait]
    impl tower_sessions::SessionStore for CreateFails {
        async fn create(
            &self,
            _: &mut tower_sessions::session::Record,
        ) -> tower_sessions::session_store::Result<()> {
            Err(tower_sessions::session_store::Error::Backend(
                "disk full".into(),
            ))
        }
        async fn save(
            &self,
            r: &tower_sessions::session::Record,
        ) -> tower_sessions::session_store::Result<()> {
            self.0.save(r).await
        }
        async fn load(
            &self,
            id: &tower_sessions::session::Id,
        ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>>
        {
            self.0.load(id).await
        }
        async fn delete(
            &self,
            id: &tower_sessions::session::Id,
        ) -> tower_sessions::session_store::Result<()> {
            self.0.delete(id).await
        }
    }

    #[async_trait::async_trait]
    impl crate::session::store::RecordStore for CreateFails {
        async fn put(
            &self,
            r: &tower_sessions::session::Record,
        ) -> tower_sessions::session_store::Result<()> {
            self.0.put(r).await
        }
        async fn insert_new(
            &self,
            r: &tower_sessions::session::Record,
        ) -> tower_sessions::session_store::Result<bool> {
            self.0.insert_new(r).await
        }
    }

    #[tokio::test]
    async fn a_failed_sign_in_write_leaves_nothing_signed_in() {
        let store = Arc::new(CreateFails::default());
        let session = Session::new(None, store.clone(), None);
        let user = SignedIn {
            identity: crate::oidc::identity::Identity {
                user: "entra:t:o".into(),
                connection: "c".into(),
                iss: "https://idp.example".into(),
                sub: "s".into(),
                oid: None,
                tid: None,
                name: None,
                email: None,
                email_verified: false,
                preferred_username: None,
                login_hint: None,
                sid: None,
                groups: Vec::new(),
                roles: Vec::new(),
                groups_overage: false,
            },
            issued_at: now_unix(),
            expires_at: now_unix() + 3600,
            id_token: "t".into(),
        };
        let err = sign_in(&session, &user, Duration::from_secs(3600), &clock())
            .await
            .expect_err("the store refuses the write");
        assert!(matches!(err, SessionError::Store(_)), "{err:?}");
        assert!(
            signed_in(
                &session,
                &ParsedUsers::new(10),
                Duration::from_secs(3600),
                &clock()
            )
            .await
            .expect("read")
            .is_none(),
            "the in-memory session holds no identity either"
        );
        assert!(store.0.is_empty(), "nothing was stored");
    }
}
