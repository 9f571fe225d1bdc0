//! Setup links (issue 17): the one-time links an operator hands a customer's Entra admin, kept
//! in the session store (memory, SQLite or Redis) through the record API every store keeps
//! (`RecordStore::put`, `insert_new`, `load_uncached`), so they work on every backend and
//! every replica alike.
//!
//! A link's token (256 random bits, base64url) is shown once, when the link is created; the
//! store keeps only its SHA-256, so a copy of the store opens no setup page. All links live in
//! one record (the operator lists them, and there are few), with the connections completed
//! setups created (their client secrets sealed, `sealed.rs`) and a version that every change
//! to those connections bumps, which each replica polls to apply new connections without a restart
//! (`rotation::poll_stored`). The record is changed under a lock record that
//! [`AnyStore::insert_new`] takes for one writer at a time across replicas (the pattern of the
//! upstream refresh lock, `session/upstream.rs`), so spending a link and adding its connection
//! is one write.

use std::{collections::HashMap, time::Duration};

use openidconnect::CsrfToken;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_sessions::{SessionStore, session::Record, session_store};

use super::{SessionError, derived_id, store::AnyStore};

/// The default lifetime of a link: a week for the customer's admin to find the time.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a link may live: an unused link is a door left open.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest: less is a typo, not a plan.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(600);
/// How long an ended link (expired, spent, revoked) is remembered, so its page can say what
/// happened to it instead of "unknown".
const REMEMBER_ENDED: i64 = 30 * 24 * 3600;
/// At most this many links are kept; creating one more is refused until some end.
pub(crate) const MAX_LINKS: usize = 1000;

const LINKS_KEY: &str = "setup_links";
const CONNECTIONS_KEY: &str = "setup_connections";
const VERSION_KEY: &str = "setup_version";
const LOCK_KEY: &str = "setup_links_lock";
/// The lock outlives any one change (a load and a write, each bounded by the store timeout).
const LOCK_LIFETIME: time::Duration = time::Duration::seconds(10);
/// How long a change waits for another replica's to finish.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// What became of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LinkState {
    Active,
    /// The setup was completed through it.
    Spent,
    /// The operator revoked it.
    Revoked,
}

/// One setup link as stored: never the token, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SetupLink {
    /// A short public id for `list` and `revoke` (random; not derived from the token).
    pub id: String,
    /// SHA-256 of the token, lower-case hex.
    pub token_sha256: String,
    /// The form's anti-CSRF token: random, tied to this link, checked on every POST.
    pub csrf: String,
    /// The connection the link sets up (its id, unique across TOML and stored ones).
    pub connection: String,
    /// The name users see on the start page.
    pub name: String,
    /// Who asked for the link, as the operator's tool said (`entrance setup-link create`
    /// sends the local user name): for the audit lines of what the link does.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Made for a connection a setup created already: it adds a credential (a rotation).
    #[serde(default)]
    pub rotation: bool,
    /// Unix seconds, by entrance's clock.
    pub created_at: i64,
    pub expires_at: i64,
    pub state: LinkState,
    /// When it was spent or revoked (unix seconds).
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// The certificate entrance generated for this link, once the admin asked for one.
    #[serde(default)]
    pub certificate: Option<Box<LinkCertificate>>,
    /// After activation: SHA-256 of the test sign-in grant the done page holds, and until
    /// when it is good (unix seconds). The link itself is spent by then.
    #[serde(default)]
    pub test_grant_sha256: Option<String>,
    #[serde(default)]
    pub test_grant_expires_at: i64,
}

/// How long the done page's Test sign-in works after activation.
pub(crate) const TEST_GRANT_LIFETIME: i64 = 15 * 60;

/// A new test grant: the token for the done page, and its hash for the link's record.
pub(crate) fn new_test_grant() -> (String, String) {
    let grant = CsrfToken::new_random_len(32).into_secret();
    let hash = sha256_hex(&grant);
    (grant, hash)
}

/// A certificate generated for a link (`certificate::generate`): the certificate, public, as
/// PEM, and its private key sealed under `ENTRANCE_DATA_KEY` with the link's connection id as
/// associated data (`sealed.rs`), so the sealed key moves unchanged into the connection.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct LinkCertificate {
    pub certificate_pem: String,
    pub private_key_sealed: String,
}

impl std::fmt::Debug for LinkCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCertificate").finish_non_exhaustive()
    }
}

impl SetupLink {
    /// What the page says about the link now: usable, or why not.
    pub(crate) fn status(&self, now: i64) -> LinkStatus {
        match self.state {
            LinkState::Spent => LinkStatus::Spent,
            LinkState::Revoked => LinkStatus::Revoked,
            LinkState::Active if now >= self.expires_at => LinkStatus::Expired,
            LinkState::Active => LinkStatus::Usable,
        }
    }

    /// Whether `grant` is the test grant of this link, spent by its setup, and still good.
    pub(crate) fn test_grant_matches(&self, grant: &str, now: i64) -> bool {
        let Some(hash) = &self.test_grant_sha256 else {
            return false;
        };
        self.state == LinkState::Spent
            && now < self.test_grant_expires_at
            && bool::from(hash.as_bytes().ct_eq(sha256_hex(grant).as_bytes()))
    }

    /// Whether `csrf` is this link's form token (compared in constant time).
    pub(crate) fn csrf_matches(&self, csrf: &str) -> bool {
        self.csrf.as_bytes().ct_eq(csrf.as_bytes()).into()
    }
}

/// Why a completed setup could not be kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActivateError {
    #[error(transparent)]
    Unusable(Unusable),
    #[error("a connection with the id {0:?} exists already")]
    Taken(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What an activation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activated {
    /// A new connection.
    Created,
    /// A new credential for a stored connection, kept beside the previous one.
    Rotated,
}

/// Keeps the connection a setup through link `link_id` created and spends the link, in one
/// write: the link must still be usable, and the id must not be in `reserved` (the
/// configuration file's connections). When a stored connection has the id already, the link
/// rotates its credential: the new one goes first and the old one becomes `previous` (an
/// older `previous` goes), provided the app registration (metadata URL and client ID) is the
/// same — another registration is another connection.
pub(crate) async fn activate(
    store: &AnyStore,
    link_id: &str,
    connection: StoredConnection,
    reserved: &[String],
    test_grant_sha256: String,
    now: i64,
) -> Result<Activated, ActivateError> {
    change(store, now, |record| {
        let link = record
            .links
            .iter_mut()
            .find(|l| l.id == link_id)
            .ok_or(ActivateError::Unusable(Unusable::Unknown))?;
        match link.status(now) {
            LinkStatus::Usable => {}
            LinkStatus::Expired => return Err(ActivateError::Unusable(Unusable::Expired)),
            LinkStatus::Spent => return Err(ActivateError::Unusable(Unusable::Spent)),
            LinkStatus::Revoked => return Err(ActivateError::Unusable(Unusable::Revoked)),
        }
        if reserved.contains(&connection.id) {
            return Err(ActivateError::Taken(connection.id));
        }
        let existing = record
            .connections
            .iter_mut()
            .find(|c| c.id == connection.id);
        if let Some(existing) = &existing
            && (existing.client_id != connection.client_id
                || existing.metadata_url != connection.metadata_url)
        {
            return Err(ActivateError::Taken(connection.id));
        }
        link.state = LinkState::Spent;
        link.ended_at = Some(now);
        // The generated certificate's sealed key now lives in the connection only.
        link.certificate = None;
        link.test_grant_sha256 = Some(test_grant_sha256);
        link.test_grant_expires_at = now + TEST_GRANT_LIFETIME;
        match existing {
            None => {
                record.connections.push(connection);
                Ok(Activated::Created)
            }
            Some(existing) => {
                let old = std::mem::replace(&mut existing.credential, connection.credential);
                existing.previous = Some(old);
                existing.name = connection.name;
                existing.link = connection.link;
                existing.created_at = connection.created_at;
                Ok(Activated::Rotated)
            }
        }
    })
    .await
}

/// Removes connection `id`'s previous credential, once a sign-in proved the one a rotation
/// link added. Returns the id of that link when there was a credential to remove (a second
/// sign-in on another replica before both applied the change finds none, and writes nothing).
pub(crate) async fn retire_previous(
    store: &AnyStore,
    id: &str,
    now: i64,
) -> Result<Option<String>, SessionError> {
    let has_previous = |record: &SetupRecord| {
        record
            .connections
            .iter()
            .any(|c| c.id == id && c.previous.is_some())
    };
    if !has_previous(&load(store).await?) {
        return Ok(None);
    }
    change(store, now, |record| {
        Ok::<_, SessionError>(
            record
                .connections
                .iter_mut()
                .find(|c| c.id == id)
                .and_then(|c| c.previous.take().map(|_| c.link.clone())),
        )
    })
    .await
}

/// The connection a setup created with this id, if any (a link for it rotates its
/// credential).
pub(crate) async fn stored(
    store: &AnyStore,
    id: &str,
) -> Result<Option<StoredConnection>, SessionError> {
    Ok(load(store)
        .await?
        .connections
        .into_iter()
        .find(|c| c.id == id))
}

/// Keeps `certificate` as link `link_id`'s generated certificate, unless it has one already:
/// returns the one the link keeps (a second click, or another replica, made no other).
pub(crate) async fn attach_certificate(
    store: &AnyStore,
    link_id: &str,
    certificate: LinkCertificate,
    now: i64,
) -> Result<LinkCertificate, ActivateError> {
    change(store, now, |record| {
        let link = record
            .links
            .iter_mut()
            .find(|l| l.id == link_id)
            .ok_or(ActivateError::Unusable(Unusable::Unknown))?;
        if let Err(u) = link.clone().usable(now) {
            return Err(ActivateError::Unusable(u));
        }
        Ok((**link.certificate.get_or_insert(Box::new(certificate))).clone())
    })
    .await
}

/// A link's standing, for its page and for `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LinkStatus {
    Usable,
    Expired,
    Spent,
    Revoked,
}

/// Why a link opens nothing, as its page says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("no setup link has this token")]
    Unknown,
    #[error("the setup link expired")]
    Expired,
    #[error("the setup link was already used")]
    Spent,
    #[error("the setup link was revoked")]
    Revoked,
}

impl SetupLink {
    /// The link, if it can be used now.
    pub(crate) fn usable(self, now: i64) -> Result<SetupLink, Unusable> {
        match self.status(now) {
            LinkStatus::Usable => Ok(self),
            LinkStatus::Expired => Err(Unusable::Expired),
            LinkStatus::Spent => Err(Unusable::Spent),
            LinkStatus::Revoked => Err(Unusable::Revoked),
        }
    }
}

/// A link just created: the token, shown to the operator once and stored nowhere.
pub(crate) struct Created {
    pub token: String,
    pub link: SetupLink,
}

/// What a token leads to.
pub(crate) enum Found {
    /// No link has this token (never had one, or ended long ago).
    Unknown,
    Link {
        link: Box<SetupLink>,
        /// The connection a setup created with the link's id, if any: the link renews its
        /// credential (read in the same load as the link).
        renews: Option<Box<StoredConnection>>,
    },
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A token is 32 random bytes in base64url (43 characters); anything else is not one.
fn plausible_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A notification when the setup record changes, where the store can tell (`AnyStore::watch`:
/// on Redis, any replica's change within milliseconds); `None`: poll.
pub(crate) fn watch(store: &AnyStore) -> Option<std::sync::Arc<tokio::sync::Notify>> {
    store.watch(links_id())
}

fn links_id() -> tower_sessions::session::Id {
    derived_id(&["entrance:setup-links"])
}

fn lock_id() -> tower_sessions::session::Id {
    derived_id(&["entrance:setup-links", "lock"])
}

/// A connection a completed setup created, as stored: its client secret sealed under
/// `ENTRANCE_DATA_KEY` (`sealed.rs`), never in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredConnection {
    pub id: String,
    pub name: String,
    pub metadata_url: String,
    pub client_id: String,
    /// Flattened: the fields of the first version's records, which still load.
    #[serde(flatten)]
    pub credential: StoredCredential,
    /// The credential a rotation link replaced: tried after `credential` until the first
    /// sign-in with the new one proves it, then removed (`retire_previous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<StoredCredential>,
    /// Unix seconds, and the link that created it (or last rotated its credential).
    pub created_at: i64,
    pub link: String,
}

/// A stored connection's client credential: a sealed secret, or a generated certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredCredential {
    /// base64 of nonce ‖ ciphertext ‖ tag, the connection id as associated data. Empty for a
    /// certificate connection.
    #[serde(default)]
    pub client_secret_sealed: String,
    /// As the admin typed it (RFC 3339 date). Empty for a certificate connection.
    #[serde(default)]
    pub client_secret_expires_at: String,
    /// The generated certificate and its sealed key, instead of a secret (issue 17).
    #[serde(default)]
    pub certificate: Option<LinkCertificate>,
}

/// The one record: links, the connections they created, and its version.
#[derive(Debug, Default)]
pub(crate) struct SetupRecord {
    pub links: Vec<SetupLink>,
    pub connections: Vec<StoredConnection>,
    /// Bumped by every change to `connections`; replicas compare it to apply them.
    pub version: u64,
}

fn field<T: serde::de::DeserializeOwned + Default>(
    record: &Record,
    key: &str,
) -> Result<T, SessionError> {
    match record.data.get(key) {
        None => Ok(T::default()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            SessionError::Corrupt(format!("the setup record's {key} do not parse: {e}"))
        }),
    }
}

/// The record as stored, read from the store itself (never a replica's cache: another replica
/// may have just changed it).
pub(crate) async fn load(store: &AnyStore) -> Result<SetupRecord, SessionError> {
    let Some(record) = store.load_uncached(&links_id()).await? else {
        return Ok(SetupRecord::default());
    };
    Ok(SetupRecord {
        links: field(&record, LINKS_KEY)?,
        connections: field(&record, CONNECTIONS_KEY)?,
        version: field(&record, VERSION_KEY)?,
    })
}

/// The link with this public id, whatever its state.
pub(crate) async fn by_id(store: &AnyStore, id: &str) -> Result<Option<SetupLink>, SessionError> {
    Ok(list(store).await?.into_iter().find(|l| l.id == id))
}

/// Every link as stored.
pub(crate) async fn list(store: &AnyStore) -> Result<Vec<SetupLink>, SessionError> {
    Ok(load(store).await?.links)
}

/// The link `token` opens, whatever its state.
pub(crate) async fn find(store: &AnyStore, token: &str) -> Result<Found, SessionError> {
    if !plausible_token(token) {
        return Ok(Found::Unknown);
    }
    let hash = sha256_hex(token);
    let record = load(store).await?;
    let Some(link) = record.links.into_iter().find(|l| l.token_sha256 == hash) else {
        return Ok(Found::Unknown);
    };
    let renews = record
        .connections
        .into_iter()
        .find(|c| c.id == link.connection)
        .map(Box::new);
    Ok(Found::Link {
        link: Box::new(link),
        renews,
    })
}

/// Why a link could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    #[error("{MAX_LINKS} setup links are kept already; revoke some first")]
    TooMany,
    #[error("an active setup link for connection {0:?} exists already (id {1}); revoke it first")]
    Duplicate(String, String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Creates a link for `connection`, living `lifetime` from `now` (unix seconds).
pub(crate) async fn create(
    store: &AnyStore,
    connection: &str,
    name: &str,
    created_by: Option<&str>,
    rotation: bool,
    lifetime: Duration,
    now: i64,
) -> Result<Created, CreateError> {
    let token = CsrfToken::new_random_len(32).into_secret();
    let link = SetupLink {
        id: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
        token_sha256: sha256_hex(&token),
        csrf: CsrfToken::new_random_len(32).into_secret(),
        connection: connection.to_owned(),
        name: name.to_owned(),
        created_by: created_by.map(str::to_owned),
        rotation,
        created_at: now,
        expires_at: now + lifetime.as_secs() as i64,
        state: LinkState::Active,
        ended_at: None,
        certificate: None,
        test_grant_sha256: None,
        test_grant_expires_at: 0,
    };
    let created = link.clone();
    change(store, now, move |record| {
        let links = &mut record.links;
        if let Some(other) = links
            .iter()
            .find(|l| l.connection == created.connection && l.status(now) == LinkStatus::Usable)
        {
            return Err(CreateError::Duplicate(
                created.connection.clone(),
                other.id.clone(),
            ));
        }
        if links.len() >= MAX_LINKS {
            return Err(CreateError::TooMany);
        }
        links.push(created);
        Ok(())
    })
    .await?;
    Ok(Created { token, link })
}

/// Ends the link with this id. Returns the link as it is now, or `None` when no link has
/// that id. An ended link stays as it ended (a spent link is not revoked later).
pub(crate) async fn end(
    store: &AnyStore,
    id: &str,
    state: LinkState,
    now: i64,
) -> Result<Option<SetupLink>, SessionError> {
    let result = change(store, now, |record| {
        let found = record.links.iter_mut().find(|l| l.id == id);
        Ok::<_, SessionError>(found.map(|l| {
            if l.state == LinkState::Active {
                l.state = state;
                l.ended_at = Some(now);
                // A revoked link's generated key is of no use to anyone: gone with it.
                l.certificate = None;
            }
            l.clone()
        }))
    })
    .await?;
    Ok(result)
}

/// Reads the links, applies `edit`, drops links ended long ago and writes them back, all under
/// the lock, so two replicas' changes never overwrite each other.
async fn change<T, E: From<SessionError>>(
    store: &AnyStore,
    now: i64,
    edit: impl FnOnce(&mut SetupRecord) -> Result<T, E>,
) -> Result<T, E> {
    let lock = lock_record();
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        if store.insert_new(&lock).await.map_err(SessionError::from)? {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SessionError::Store(tower_sessions::session::Error::Store(
                session_store::Error::Backend(
                    "another change to the setup links did not finish in time".into(),
                ),
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = async {
        let mut record = load(store).await?;
        let connections = connections_json(&record)?;
        let out = edit(&mut record)?;
        record.links.retain(|l| {
            let ended = l.ended_at.unwrap_or(l.expires_at);
            l.state == LinkState::Active && now < l.expires_at || now - ended < REMEMBER_ENDED
        });
        // Only a change to the connections (one added, a credential rotated or retired)
        // makes replicas apply them again.
        if connections_json(&record)? != connections {
            record.version += 1;
        }
        store
            .put(&setup_record(&record)?)
            .await
            .map_err(SessionError::from)?;
        Ok(out)
    }
    .await;
    if let Err(e) = SessionStore::delete(store, &lock.id).await {
        // It expires by itself within LOCK_LIFETIME.
        tracing::warn!(error = %e, "could not release the setup links' lock");
    }
    result
}

fn connections_json(record: &SetupRecord) -> Result<serde_json::Value, SessionError> {
    serde_json::to_value(&record.connections)
        .map_err(|e| SessionError::Corrupt(format!("serialising the setup record: {e}")))
}

fn lock_record() -> Record {
    let mut data = HashMap::new();
    data.insert(LOCK_KEY.to_owned(), serde_json::Value::Bool(true));
    Record {
        id: lock_id(),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + LOCK_LIFETIME,
    }
}

fn setup_record(record: &SetupRecord) -> Result<Record, SessionError> {
    let json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| SessionError::Corrupt(format!("serialising the setup record: {e}")))
    };
    let mut data = HashMap::new();
    data.insert(
        LINKS_KEY.to_owned(),
        json(serde_json::to_value(&record.links))?,
    );
    data.insert(
        CONNECTIONS_KEY.to_owned(),
        json(serde_json::to_value(&record.connections))?,
    );
    data.insert(VERSION_KEY.to_owned(), record.version.into());
    // The store's own expiry is by the real clock. With connections in it, the record must
    // outlive any plausible time between two changes (a store record has to expire:
    // 100 years); with links only, past the last link's end and the time it is remembered.
    let lifetime = if record.connections.is_empty() {
        MAX_LIFETIME.as_secs() as i64 + 2 * REMEMBER_ENDED
    } else {
        100 * 365 * 24 * 3600
    };
    Ok(Record {
        id: links_id(),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::seconds(lifetime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> AnyStore {
        AnyStore::memory(Duration::from_secs(1)).0
    }

    #[tokio::test]
    async fn a_link_is_found_by_its_token_which_is_stored_only_as_a_hash() {
        let store = store();
        let created = create(
            &store,
            "fabrikam",
            "Fabrikam",
            None,
            false,
            DEFAULT_LIFETIME,
            1000,
        )
        .await
        .expect("created");
        assert_eq!(created.token.len(), 43);
        let links = list(&store).await.expect("listed");
        assert_eq!(links.len(), 1);
        let stored = serde_json::to_string(&links).expect("json");
        assert!(!stored.contains(&created.token));
        let Found::Link { link, renews } = find(&store, &created.token).await.expect("found")
        else {
            panic!("the token opens its link");
        };
        assert_eq!(link.connection, "fabrikam");
        assert!(renews.is_none(), "no connection fabrikam is stored yet");
        assert_eq!(link.status(1000), LinkStatus::Usable);
        assert_eq!(
            link.status(1000 + DEFAULT_LIFETIME.as_secs() as i64),
            LinkStatus::Expired
        );
        assert!(matches!(
            find(&store, &"A".repeat(43)).await.expect("asked"),
            Found::Unknown
        ));
        assert!(matches!(
            find(&store, "short").await.expect("asked"),
            Found::Unknown
        ));
    }

    #[tokio::test]
    async fn a_second_active_link_for_one_connection_is_refused_until_the_first_ends() {
        let store = store();
        let first = create(&store, "fabrikam", "F", None, false, DEFAULT_LIFETIME, 0)
            .await
            .expect("created");
        assert!(matches!(
            create(&store, "fabrikam", "F", None, false, DEFAULT_LIFETIME, 1).await,
            Err(CreateError::Duplicate(..))
        ));
        let ended = end(&store, &first.link.id, LinkState::Revoked, 2)
            .await
            .expect("ended")
            .expect("the link exists");
        assert_eq!(ended.status(3), LinkStatus::Revoked);
        create(&store, "fabrikam", "F", None, false, DEFAULT_LIFETIME, 3)
            .await
            .expect("a new link once the old one is revoked");
        // An ended link stays as it ended.
        let again = end(&store, &first.link.id, LinkState::Spent, 4)
            .await
            .expect("ended")
            .expect("found");
        assert_eq!(again.state, LinkState::Revoked);
    }

    #[tokio::test]
    async fn links_ended_long_ago_are_forgotten() {
        let store = store();
        let old = create(&store, "a", "A", None, false, MIN_LIFETIME, 0)
            .await
            .expect("created");
        let later = MIN_LIFETIME.as_secs() as i64 + REMEMBER_ENDED + 1;
        create(&store, "b", "B", None, false, DEFAULT_LIFETIME, later)
            .await
            .expect("created");
        let links = list(&store).await.expect("listed");
        assert_eq!(links.len(), 1);
        assert!(links.iter().all(|l| l.id != old.link.id));
    }

    fn connection(client_id: &str, secret_sealed: &str, link: &str) -> StoredConnection {
        StoredConnection {
            id: "fabrikam".into(),
            name: "Fabrikam".into(),
            metadata_url: "https://login.example/t/v2.0/.well-known/openid-configuration".into(),
            client_id: client_id.into(),
            credential: StoredCredential {
                client_secret_sealed: secret_sealed.into(),
                client_secret_expires_at: "2099-01-01".into(),
                certificate: None,
            },
            previous: None,
            created_at: 0,
            link: link.into(),
        }
    }

    #[tokio::test]
    async fn a_second_link_rotates_the_credential_keeping_the_old_until_retired() {
        let store = store();
        let first = create(&store, "fabrikam", "F", None, false, DEFAULT_LIFETIME, 0)
            .await
            .expect("created");
        let activated = activate(
            &store,
            &first.link.id,
            connection("app", "old", &first.link.id),
            &[],
            "g".into(),
            1,
        )
        .await
        .expect("activated");
        assert_eq!(activated, Activated::Created);
        let v1 = load(&store).await.expect("loaded").version;
        assert_eq!(
            retire_previous(&store, "fabrikam", 2).await.expect("asked"),
            None
        );
        assert_eq!(
            load(&store).await.expect("loaded").version,
            v1,
            "nothing written"
        );

        // Another app registration is refused; the same one rotates.
        let second = create(
            &store,
            "fabrikam",
            "F",
            Some("ops"),
            true,
            DEFAULT_LIFETIME,
            3,
        )
        .await
        .expect("created");
        assert!(second.link.rotation);
        assert!(matches!(
            activate(
                &store,
                &second.link.id,
                connection("other", "new", &second.link.id),
                &[],
                "g".into(),
                4
            )
            .await,
            Err(ActivateError::Taken(_))
        ));
        let activated = activate(
            &store,
            &second.link.id,
            connection("app", "new", &second.link.id),
            &[],
            "g".into(),
            5,
        )
        .await
        .expect("activated");
        assert_eq!(activated, Activated::Rotated);
        let record = load(&store).await.expect("loaded");
        assert!(record.version > v1, "replicas apply a rotation");
        let c = &record.connections[0];
        assert_eq!(record.connections.len(), 1);
        assert_eq!(c.credential.client_secret_sealed, "new");
        assert_eq!(
            c.previous.as_ref().map(|p| p.client_secret_sealed.as_str()),
            Some("old")
        );
        assert_eq!(c.link, second.link.id);

        // The first sign-in with the new credential retires the old one, once.
        assert_eq!(
            retire_previous(&store, "fabrikam", 6).await.expect("asked"),
            Some(second.link.id.clone()),
            "the link whose credential now stands alone"
        );
        let after = load(&store).await.expect("loaded");
        assert!(after.connections[0].previous.is_none());
        assert!(after.version > record.version);
        assert_eq!(
            retire_previous(&store, "fabrikam", 7).await.expect("asked"),
            None
        );
    }

    #[tokio::test]
    async fn a_connection_stored_before_rotations_existed_still_loads() {
        // The first version's record: the credential's fields inline, no `previous`.
        let json = serde_json::json!({
            "id": "fabrikam", "name": "F", "metadata_url": "https://m", "client_id": "app",
            "client_secret_sealed": "sealed", "client_secret_expires_at": "2099-01-01",
            "created_at": 1, "link": "l"
        });
        let c: StoredConnection = serde_json::from_value(json.clone()).expect("loads");
        assert_eq!(c.credential.client_secret_sealed, "sealed");
        assert!(c.previous.is_none());
        assert_eq!(
            serde_json::to_value(&c).expect("json")["client_secret_sealed"],
            "sealed"
        );
        let mut written = serde_json::to_value(&c).expect("json");
        written
            .as_object_mut()
            .expect("object")
            .remove("certificate");
        assert_eq!(written, json, "written back in the same shape");
    }
}
