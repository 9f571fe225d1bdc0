//! What entrance keeps in a browser session — pending logins and the signed-in identity —
//! behind typed accessors, the session store, and the `CurrentUser` guard.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use axum::{extract::FromRequestParts, http::request::Parts};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tower_sessions::{
    Expiry, Session, SessionStore,
    session::{Id, Record},
    session_store::{self, ExpiredDeletion},
};

use crate::{config::ResponseMode, error::AppError, http::AppState, identity::Identity};

const PENDING_KEY: &str = "pending";
const USER_KEY: &str = "user";
/// When the idle expiry was last pushed forward (unix seconds).
const TOUCHED_KEY: &str = "touched";

/// The signed-in user as kept in the session: [`SignedIn`] as ONE JSON string, not as a JSON
/// object. A session record is a map of `serde_json::Value`s that the memory store clones on
/// every load and tower-sessions clones again on every `get`; as an object tree the user
/// (ID token included) was ~45 allocations per copy, a third of the CPU of `GET /auth` and
/// ~6 KB per stored session; as a string it is one allocation and ~2.3 KB
/// (docs/BENCHMARKS.md). A user stored as an object (before this) is still read.
async fn get_user(session: &Session) -> Result<Option<SignedIn>, AppError> {
    let parsed = match session.get_value(USER_KEY).await? {
        None => return Ok(None),
        Some(serde_json::Value::String(json)) => serde_json::from_str(&json),
        Some(object) => serde_json::from_value(object),
    };
    parsed
        .map(Some)
        .map_err(|e| AppError::Internal(format!("the session's user does not parse: {e}")))
}

async fn put_user(session: &Session, user: &SignedIn) -> Result<(), AppError> {
    let json = serde_json::to_string(user)
        .map_err(|e| AppError::Internal(format!("serialising the session's user: {e}")))?;
    session.insert(USER_KEY, json).await?;
    Ok(())
}

/// A login that went to the IdP and has not come back yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub connection: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub response_mode: String,
    pub created_at: i64,
}

impl PendingLogin {
    pub fn mode(&self) -> ResponseMode {
        match self.response_mode.as_str() {
            "form_post" => ResponseMode::FormPost,
            _ => ResponseMode::Query,
        }
    }
}

/// How long a login may take at the IdP; also the lifetime of a session that holds only
/// pending logins. Entra's codes live about 10 minutes too.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);

/// Logins one browser session may have in flight (several tabs). Past this the oldest is
/// dropped, so a bot hammering /login cannot grow one session without bound.
pub const MAX_PENDING: usize = 8;

/// A signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub identity: Identity,
    pub issued_at: i64,
    /// Absolute end of the session (`session.absolute_lifetime_secs` after sign-in). The idle
    /// timeout is the store's expiry; this second limit is kept as a timestamp because
    /// tower-sessions has one expiry mode per session.
    pub expires_at: i64,
    /// Kept for RP-initiated logout (`id_token_hint`) at IdPs that want it.
    pub id_token: String,
}

/// Why a callback's `state` could not be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    /// No pending login in this browser carries that state: never started here, started in
    /// another browser, or already used.
    Unknown,
    /// It was started here but more than 10 minutes ago.
    Expired,
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Adds a pending login, dropping expired ones and the oldest beyond [`MAX_PENDING`].
pub async fn push_pending(session: &Session, login: PendingLogin) -> Result<(), AppError> {
    let mut pending: Vec<PendingLogin> = session.get(PENDING_KEY).await?.unwrap_or_default();
    let now = now_unix();
    pending.retain(|p| now - p.created_at < PENDING_LIFETIME.as_secs() as i64);
    pending.push(login);
    if pending.len() > MAX_PENDING {
        let excess = pending.len() - MAX_PENDING;
        pending.drain(..excess);
    }
    session.insert(PENDING_KEY, pending).await?;
    if session.get_value(USER_KEY).await?.is_none() {
        // An anonymous session lives only as long as a login may take.
        session.set_expiry(Some(Expiry::OnInactivity(time::Duration::seconds(
            PENDING_LIFETIME.as_secs() as i64,
        ))));
    }
    Ok(())
}

/// Takes the pending login for `state` out of the session (single use) and saves the session
/// at once, so the removal sticks whatever the callback answers afterwards: a replayed or
/// failed callback can never use that state again.
pub async fn take_pending(session: &Session, state: &str) -> Result<PendingLogin, AppError> {
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
        return Err(AppError::State {
            problem: StateProblem::Unknown,
            connection: None,
            return_to: None,
        });
    };
    let login = pending.remove(i);
    if pending.is_empty() {
        session.remove_value(PENDING_KEY).await?;
    } else {
        session.insert(PENDING_KEY, &pending).await?;
    }
    session.save().await?;
    if now_unix() - login.created_at >= PENDING_LIFETIME.as_secs() as i64 {
        return Err(AppError::State {
            problem: StateProblem::Expired,
            connection: Some(login.connection),
            return_to: Some(login.return_to),
        });
    }
    Ok(login)
}

/// Signs the user in: a new session id (so a session id planted before login is worthless —
/// session fixation), the identity, the idle expiry, and an explicit save.
pub async fn sign_in(
    session: &Session,
    signed_in: &SignedIn,
    idle_timeout: Duration,
) -> Result<(), AppError> {
    session.cycle_id().await?;
    put_user(session, signed_in).await?;
    session.insert(TOUCHED_KEY, signed_in.issued_at).await?;
    session.set_expiry(Some(Expiry::OnInactivity(time::Duration::seconds(
        idle_timeout.as_secs() as i64,
    ))));
    session.save().await?;
    Ok(())
}

/// Ends the session: deletes it from the store and empties it, so the session layer sends a
/// removal cookie. Returns who was signed in.
pub async fn sign_out(session: &Session) -> Result<Option<SignedIn>, AppError> {
    let user = get_user(session).await?;
    session.flush().await?;
    Ok(user)
}

/// The signed-in user, if any and within the absolute lifetime. The idle expiry is pushed
/// forward (one store write) only when it has moved meaningfully — a tenth of the idle
/// timeout, at least a minute — so `/auth` and `/me` are reads, not writes, on almost every
/// request.
pub async fn signed_in(
    session: &Session,
    idle_timeout: Duration,
) -> Result<Option<SignedIn>, AppError> {
    let Some(user) = get_user(session).await? else {
        return Ok(None);
    };
    let now = now_unix();
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
        session.save().await?;
    }
    Ok(Some(user))
}

/// The guard for endpoints that need a signed-in user: rejects with `NotSignedIn`.
pub struct CurrentUser(pub SignedIn);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = session_from_parts(parts)?;
        signed_in(&session, state.config.session.idle_timeout)
            .await?
            .map(CurrentUser)
            .ok_or(AppError::NotSignedIn)
    }
}

/// The guard for pages that differ for signed-in users: never rejects for lack of a session.
pub struct MaybeUser(pub Option<SignedIn>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = session_from_parts(parts)?;
        Ok(MaybeUser(
            signed_in(&session, state.config.session.idle_timeout).await?,
        ))
    }
}

fn session_from_parts(parts: &Parts) -> Result<Session, AppError> {
    parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or_else(|| AppError::Internal("the session layer is missing".into()))
}

// ---------------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------------

/// Any session store, behind one type so the router is built once whatever the config says.
#[derive(Debug, Clone)]
pub struct AnyStore(Arc<dyn SessionStore>);

impl AnyStore {
    pub fn memory() -> (AnyStore, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        (AnyStore(store.clone()), store)
    }
}

#[async_trait]
impl SessionStore for AnyStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.0.create(record).await
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.0.save(record).await
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.0.load(session_id).await
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.0.delete(session_id).await
    }
}

/// An in-memory store whose expired records are deleted by a periodic task
/// ([`ExpiredDeletion::continuously_delete_expired`]); tower-sessions' own memory store never
/// evicts, so abandoned logins would grow it forever.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<HashMap<Id, Record>>);

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Record>> {
        // Records are replaced whole, so a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut map = self.map();
        while map.contains_key(&record.id) {
            record.id = Id::default();
        }
        map.insert(record.id, record.clone());
        Ok(())
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.map().insert(record.id, record.clone());
        Ok(())
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .map()
            .get(session_id)
            .filter(|r| r.expiry_date > now)
            .cloned())
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.map().remove(session_id);
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for MemoryStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        self.map().retain(|_, r| r.expiry_date > now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_evicts_expired_records() {
        let store = MemoryStore::default();
        let mut live = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        let mut dead = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc() - time::Duration::seconds(1),
        };
        store.create(&mut live).await.expect("create");
        store.create(&mut dead).await.expect("create");
        assert!(store.load(&dead.id).await.expect("load").is_none());
        assert_eq!(store.len(), 2);
        store.delete_expired().await.expect("evict");
        assert_eq!(store.len(), 1);
        assert!(store.load(&live.id).await.expect("load").is_some());
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
            },
            issued_at: now_unix(),
            expires_at: now_unix() + 3600,
            id_token: "header.payload.signature".into(),
        }
    }

    #[tokio::test]
    async fn the_user_is_kept_as_one_json_string_and_read_back() {
        let (store, _) = AnyStore::memory();
        let session = Session::new(None, Arc::new(store), None);
        let user = ada();
        sign_in(&session, &user, Duration::from_secs(3600))
            .await
            .expect("sign in");
        assert!(matches!(
            session.get_value(USER_KEY).await.expect("get"),
            Some(serde_json::Value::String(_))
        ));
        let back = signed_in(&session, Duration::from_secs(3600))
            .await
            .expect("read")
            .expect("signed in");
        assert_eq!(back.identity, user.identity);
        assert_eq!(back.id_token, user.id_token);
        assert_eq!(back.expires_at, user.expires_at);
    }

    #[tokio::test]
    async fn a_user_stored_as_an_object_is_still_read() {
        let (store, _) = AnyStore::memory();
        let session = Session::new(None, Arc::new(store), None);
        let user = ada();
        session.insert(USER_KEY, &user).await.expect("insert");
        let back = signed_in(&session, Duration::from_secs(3600))
            .await
            .expect("read")
            .expect("signed in");
        assert_eq!(back.identity, user.identity);
        let out = sign_out(&session).await.expect("sign out").expect("was in");
        assert_eq!(out.id_token, user.id_token);
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
        }
    }

    fn problem(r: Result<PendingLogin, AppError>) -> StateProblem {
        match r {
            Err(AppError::State { problem, .. }) => problem,
            other => panic!("expected a state error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pending_logins_are_single_use_capped_and_expire() {
        let (store, _) = AnyStore::memory();
        let session = Session::new(None, Arc::new(store), None);
        for i in 0..(MAX_PENDING + 3) {
            push_pending(&session, pending(&format!("s{i}"), now_unix()))
                .await
                .expect("push");
        }
        // The oldest three were dropped.
        assert_eq!(
            problem(take_pending(&session, "s0").await),
            StateProblem::Unknown
        );
        let last = format!("s{}", MAX_PENDING + 2);
        assert!(take_pending(&session, &last).await.is_ok());
        assert_eq!(
            problem(take_pending(&session, &last).await),
            StateProblem::Unknown,
            "a state is usable once"
        );
        push_pending(&session, pending("old", now_unix() - 599))
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
            problem(take_pending(&session, "old").await),
            StateProblem::Expired
        );
    }
}
