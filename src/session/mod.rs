//! What entrance keeps in a browser session — pending logins and the signed-in identity —
//! behind typed accessors, and the `CurrentUser` guard. Where sessions are stored is
//! [`store`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_sessions::{
    Expiry, Session, SessionStore,
    session::{Id, Record},
};

pub(crate) mod store;

use crate::clock::now_unix;
use crate::{config::ResponseMode, oidc::identity::Identity};
use store::AnyStore;

const PENDING_KEY: &str = "pending";
const USER_KEY: &str = "user";
/// The ID token, apart from the user: only logout reads it (`id_token_hint`), so the user
/// that every `/auth` parses does not carry its ~1.5 KB.
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
        serde_json::Value::String(json) => serde_json::from_str(&json),
        object => serde_json::from_value(object),
    }
    .map_err(|e| SessionError::Corrupt(format!("the session's user does not parse: {e}")))
}

async fn put_user(session: &Session, user: &SignedIn) -> Result<(), SessionError> {
    let json = serde_json::to_string(user)
        .map_err(|e| SessionError::Corrupt(format!("serialising the session's user: {e}")))?;
    session.insert(USER_KEY, json).await?;
    session.insert(ID_TOKEN_KEY, &user.id_token).await?;
    Ok(())
}

/// A login that went to the IdP and has not come back yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    pub state: String,
    pub connection: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub response_mode: String,
    pub created_at: i64,
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

/// A signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A signed-in user as every request but logout reads it: [`SignedIn`] without the stored ID
/// token, which serde skips over without copying (a third of the bytes the hot path used to
/// parse on every `/auth`; docs/BENCHMARKS.md, "Profile").
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActiveUser {
    pub identity: Identity,
    pub issued_at: i64,
    pub expires_at: i64,
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

/// Adds a pending login, dropping expired ones and the oldest beyond [`MAX_PENDING`].
pub(crate) async fn push_pending(
    session: &Session,
    login: PendingLogin,
) -> Result<(), SessionError> {
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
pub(crate) async fn take_pending(
    session: &Session,
    state: &str,
) -> Result<PendingLogin, SessionError> {
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
        return Err(SessionError::State {
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
        return Err(SessionError::State {
            problem: StateProblem::Expired,
            connection: Some(login.connection),
            return_to: Some(login.return_to),
        });
    }
    Ok(login)
}

/// Signs the user in: a new session id (so a session id planted before login is worthless —
/// session fixation), the identity, the idle expiry, and an explicit save.
pub(crate) async fn sign_in(
    session: &Session,
    signed_in: &SignedIn,
    idle_timeout: Duration,
) -> Result<(), SessionError> {
    let result = async {
        session.cycle_id().await?;
        put_user(session, signed_in).await?;
        session.insert(TOUCHED_KEY, signed_in.issued_at).await?;
        session.set_expiry(Some(Expiry::OnInactivity(time::Duration::seconds(
            idle_timeout.as_secs() as i64,
        ))));
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
/// secondary index, so entrance writes one small record per signed-in session whose id is
/// derived from the `sid`, holding the real session id, with the same expiry.
fn sid_index_id(sid: &str) -> Id {
    let digest = Sha256::digest(format!("entrance:sid:{sid}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Id(i128::from_le_bytes(bytes))
}

const SID_INDEX_KEY: &str = "sid_index_for";

pub(crate) async fn index_sid(
    store: &AnyStore,
    sid: &str,
    session: &Session,
) -> Result<(), SessionError> {
    let Some(id) = session.id() else {
        return Ok(());
    };
    let mut data = std::collections::HashMap::new();
    data.insert(SID_INDEX_KEY.to_owned(), serde_json::json!(id.to_string()));
    let record = Record {
        id: sid_index_id(sid),
        data,
        expiry_date: session.expiry_date(),
    };
    store
        .save(&record)
        .await
        .map_err(|e| SessionError::Store(tower_sessions::session::Error::Store(e)))
}

/// Ends the session that signed in with IdP session `sid`, if any. Returns whether one was.
pub(crate) async fn end_by_sid(
    store: &AnyStore,
    sid: &str,
) -> Result<Option<SignedIn>, SessionError> {
    let store_err = |e| SessionError::Store(tower_sessions::session::Error::Store(e));
    let index_id = sid_index_id(sid);
    let Some(index) = store.load(&index_id).await.map_err(store_err)? else {
        return Ok(None);
    };
    store.delete(&index_id).await.map_err(store_err)?;
    let Some(session_id) = index
        .data
        .get(SID_INDEX_KEY)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<Id>().ok())
    else {
        return Ok(None);
    };
    let user = store
        .load(&session_id)
        .await
        .map_err(store_err)?
        .and_then(|r| r.data.get(USER_KEY).cloned())
        .and_then(|v| parse_user::<SignedIn>(v).ok());
    store.delete(&session_id).await.map_err(store_err)?;
    Ok(user)
}

/// Ends the session: deletes it from the store and empties it, so the session layer sends a
/// removal cookie. Returns who was signed in.
pub(crate) async fn sign_out(session: &Session) -> Result<Option<SignedIn>, SessionError> {
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
/// request.
pub(crate) async fn signed_in(
    session: &Session,
    idle_timeout: Duration,
) -> Result<Option<ActiveUser>, SessionError> {
    let Some(user) = get_user::<ActiveUser>(session).await? else {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::store::AnyStore;

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
        let session = Session::new(None, Arc::new(store), None);
        let user = ada();
        sign_in(&session, &user, Duration::from_secs(3600))
            .await
            .expect("sign in");
        let Some(serde_json::Value::String(json)) = session.get_value(USER_KEY).await.expect("get")
        else {
            panic!("the user is stored as one JSON string");
        };
        // The ID token lives under its own key: the user every /auth parses does not carry it.
        assert!(!json.contains(&user.id_token), "{json}");
        let back = signed_in(&session, Duration::from_secs(3600))
            .await
            .expect("read")
            .expect("signed in");
        assert_eq!(back.identity, user.identity);
        assert_eq!(back.expires_at, user.expires_at);
        // The ID token is read back only on the way out, for logout.
        let out = sign_out(&session).await.expect("sign out").expect("was in");
        assert_eq!(out.id_token, user.id_token);
    }

    #[tokio::test]
    async fn a_user_stored_as_an_object_is_still_read() {
        let (store, _) = AnyStore::memory(Duration::from_secs(1));
        let session = Session::new(None, Arc::new(store), None);
        let user = ada();
        session.insert(USER_KEY, &user).await.expect("insert");
        let back = signed_in(&session, Duration::from_secs(3600))
            .await
            .expect("read")
            .expect("signed in");
        assert_eq!(back.identity, user.identity);
        let out = sign_out(&session).await.expect("sign out").expect("was in");
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
        let err = sign_in(&session, &user, Duration::from_secs(3600))
            .await
            .expect_err("the store refuses the write");
        assert!(matches!(err, SessionError::Store(_)), "{err:?}");
        assert!(
            signed_in(&session, Duration::from_secs(3600))
                .await
                .expect("read")
                .is_none(),
            "the in-memory session holds no identity either"
        );
        assert!(store.0.is_empty(), "nothing was stored");
    }
}
