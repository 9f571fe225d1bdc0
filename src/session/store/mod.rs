//! Where sessions are kept: the configured store (memory, SQLite or Redis) behind one type
//! that bounds every call with a timeout, the contract every backend keeps ([`RecordStore`]),
//! the read cache in front of SQLite and Redis (`cache.rs`), its readiness probe, the
//! expired-session sweeper, and closing it when the application stops.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use fred::{interfaces::ClientLike, prelude::Pool as RedisPool};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store::{self, ExpiredDeletion},
};

use crate::config::{SessionSettings, StoreKind};
use crate::metrics::Metrics;
use crate::sync;

mod cache;
mod memory;
mod redis;
mod sqlite;

use cache::{CacheCounters, CachedStore, SessionCache};
pub(crate) use memory::MemoryStore;
use redis::{RedisSessions, Tracking, open_redis};
#[cfg(test)]
use sqlite::sqlite_fast_read;
use sqlite::{CheckedSqlite, open_sqlite};

/// How often expired sessions are deleted from stores that do not expire them themselves.
const EXPIRED_SESSION_SWEEP: Duration = Duration::from_secs(60);

/// The most startup waits for the store to answer (Redis connects in the background) before
/// serving anyway; a store still down then is reported by `/readyz` as before.
pub(crate) const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// The session-store contract, the same for every backend (memory, SQLite, Redis; run against
/// each by `tests/api/store_contract.rs`). tower-sessions asks for `create` (a session without
/// a stored id: tower-sessions-core 0.14 `Session::save` calls it when the cookie named no live
/// record, or after `cycle_id`), `save` (a session loaded from the store), `load` and `delete`.
///
/// - `create` writes the record under a fresh id, drawing another while the id is taken.
/// - `save` only ever **updates a live record**: a record that is gone — deleted by a sign-out,
///   expired, never written — stays gone, and `save` still answers `Ok`. This is Redis's
///   `SET … XX`; memory and SQLite keep it too, so a request that loaded a session before a
///   sign-out cannot bring it back with its own save (its idle refresh, the layer's save).
/// - `load` never returns an expired record.
/// - [`put`](RecordStore::put) writes a record under its own id whether or not one is there
///   (the front-channel logout index, whose id is derived, not drawn).
/// - [`insert_new`](RecordStore::insert_new) writes a record under its own id only if no live
///   record has it, atomically, and says whether it wrote (single-use markers shared by every
///   replica).
/// - [`load_uncached`](RecordStore::load_uncached) is `load` asked of the store itself, never
///   of a cache in front of it: for a read that must see another replica's write at once,
///   even before that replica's invalidation reached this one (the upstream token read under
///   the refresh lock, `session/upstream.rs`).
#[async_trait]
pub(crate) trait RecordStore: SessionStore {
    async fn put(&self, record: &Record) -> session_store::Result<()>;
    async fn insert_new(&self, record: &Record) -> session_store::Result<bool>;
    async fn load_uncached(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.load(session_id).await
    }
    /// A notification when record `id` changes, where the store can tell (a read cache:
    /// this process's writes, and on Redis every replica's, through the tracking connection);
    /// `None` where it cannot, and the caller polls.
    fn watch(&self, _id: Id) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// Why the configured store cannot be used at startup. Like configuration errors, each names
/// the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`session.sqlite_path`: cannot use the SQLite file {path}: {source}\n  fix: {fix}")]
    Sqlite {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
        fix: &'static str,
    },
    #[error("`session.redis_url`: {problem}\n  fix: {fix}")]
    Redis { problem: String, fix: &'static str },
}

const SQLITE_FIX: &str = "point session.sqlite_path at a file in an existing directory that entrance may write (the file is created if missing), or set session.store = \"memory\"";

/// Any session store, behind one type so the router is built once whatever the config says.
/// Every call is bounded by `session.store_timeout_ms`: a hung store (a locked SQLite file, an
/// unreachable Redis) becomes an error the request answers with 503, instead of a request
/// that hangs until the client gives up.
#[derive(Clone)]
pub(crate) struct AnyStore {
    inner: Arc<dyn RecordStore>,
    timeout: Duration,
    /// The last save per session id, to skip an identical repeat (see [`AnyStore::save`]).
    recent_saves: Arc<Mutex<HashMap<Id, RecentSave>>>,
}

/// What a save wrote: a digest of the record's data, its expiry, and when.
#[derive(Clone, Copy)]
struct RecentSave {
    digest: u64,
    expiry: OffsetDateTime,
    at: std::time::Instant,
}

/// A repeat of a save within this long, with the same data and an expiry at most this far
/// off, is skipped.
const REPEAT_WINDOW: Duration = Duration::from_secs(2);
/// Bound on remembered saves; older ones are dropped when it is reached.
const MAX_RECENT_SAVES: usize = 4096;

fn digest(record: &Record) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    // Serialised as the stores serialise it; the same `Record` value gives the same bytes.
    let bytes = rmp_serde::to_vec(&record.data).ok()?;
    let mut hasher = digest_keys().build_hasher();
    hasher.write(&bytes);
    Some(hasher.finish())
}

/// One randomly keyed SipHash for the process: digests are compared, never stored or sent.
fn digest_keys() -> &'static std::collections::hash_map::RandomState {
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new)
}

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyStore")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AnyStore {
    pub(crate) fn new(inner: Arc<dyn RecordStore>, timeout: Duration) -> AnyStore {
        AnyStore {
            inner,
            timeout,
            recent_saves: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<Id, RecentSave>> {
        sync::lock(&self.recent_saves)
    }

    /// Whether `record` repeats the last save of its id: same data, expiry within the window.
    fn is_repeat(&self, record: &Record, digest: Option<u64>) -> bool {
        let Some(digest) = digest else { return false };
        self.recent().get(&record.id).is_some_and(|last| {
            last.digest == digest
                && last.at.elapsed() < REPEAT_WINDOW
                && (record.expiry_date - last.expiry).unsigned_abs() < REPEAT_WINDOW
        })
    }

    fn remember(&self, record: &Record, digest: Option<u64>) {
        let mut recent = self.recent();
        let Some(digest) = digest else {
            recent.remove(&record.id);
            return;
        };
        if recent.len() >= MAX_RECENT_SAVES {
            recent.retain(|_, s| s.at.elapsed() < REPEAT_WINDOW);
            if recent.len() >= MAX_RECENT_SAVES {
                recent.clear();
            }
        }
        recent.insert(
            record.id,
            RecentSave {
                digest,
                expiry: record.expiry_date,
                at: std::time::Instant::now(),
            },
        );
    }

    pub(crate) fn memory(timeout: Duration) -> (AnyStore, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        (AnyStore::new(store.clone(), timeout), store)
    }

    async fn bounded<T>(
        &self,
        op: &str,
        call: impl Future<Output = session_store::Result<T>>,
    ) -> session_store::Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(session_store::Error::Backend(format!(
                "the session store did not answer a {op} within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// A cheap round trip for `/readyz`: loading an id that does not exist reads the store
    /// without writing to it.
    pub(crate) async fn probe(&self) -> session_store::Result<()> {
        self.load(&Id::default()).await.map(|_| ())
    }

    /// Waits until the store answers [`probe`](AnyStore::probe), for at most `bound`; returns
    /// whether it did. Redis connects in the background after startup, and answered "not
    /// connected" (503 on `/login`) for the first few hundred milliseconds.
    pub(crate) async fn wait_until_answering(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            match self.probe().await {
                Ok(()) => return true,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, waited = ?bound, "the session store does not answer yet; serving anyway (/readyz says not ready until it does)");
                    return false;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// [`RecordStore::put`], bounded by the store timeout.
    pub(crate) async fn put(&self, record: &Record) -> session_store::Result<()> {
        self.recent().remove(&record.id);
        self.bounded("write", self.inner.put(record)).await
    }

    /// [`RecordStore::insert_new`], bounded by the store timeout.
    pub(crate) async fn insert_new(&self, record: &Record) -> session_store::Result<bool> {
        self.recent().remove(&record.id);
        self.bounded("write", self.inner.insert_new(record)).await
    }

    /// [`RecordStore::load_uncached`], bounded by the store timeout.
    pub(crate) async fn load_uncached(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.bounded("load", self.inner.load_uncached(id)).await
    }

    /// [`RecordStore::watch`].
    pub(crate) fn watch(&self, id: Id) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.watch(id)
    }
}

#[async_trait]
impl SessionStore for AnyStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.bounded("create", self.inner.create(record)).await?;
        // The layer's save after a handler's first save of a new session is a repeat too.
        self.remember(record, digest(record));
        Ok(())
    }
    /// Saves, unless this exact record was just saved. tower-sessions' layer saves every
    /// session marked modified after the handler ran, and `Session::save` does not clear that
    /// mark, so each explicit save in a handler (made there so a store failure is that
    /// handler's to report) was written twice. A repeat — same id, same data, an expiry less
    /// than [`REPEAT_WINDOW`] apart (the layer recomputes it), within that window — is
    /// skipped. If the record changed in between (another request, another replica's
    /// sign-out), skipping leaves the newer state in place rather than writing an old copy.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let digest = digest(record);
        if self.is_repeat(record, digest) {
            return Ok(());
        }
        let result = self.bounded("save", self.inner.save(record)).await;
        match &result {
            Ok(()) => self.remember(record, digest),
            Err(_) => {
                self.recent().remove(&record.id);
            }
        }
        result
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.bounded("load", self.inner.load(session_id)).await
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.recent().remove(session_id);
        self.bounded("delete", self.inner.delete(session_id)).await
    }
}

#[cfg(test)]
impl AnyStore {
    /// A memory store behind a read cache that only this store's own writes invalidate: a
    /// replica's cache between another replica's write and that write's invalidation. Writes
    /// to the returned memory store are the other replica's.
    pub(crate) fn memory_behind_a_cache(timeout: Duration) -> (AnyStore, Arc<MemoryStore>) {
        let memory = Arc::new(MemoryStore::default());
        let cache = Arc::new(SessionCache::new(
            NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            true,
            hold_back(timeout),
            CacheCounters::default(),
        ));
        (
            AnyStore::new(
                Arc::new(CachedStore {
                    backend: memory.clone(),
                    cache,
                }),
                timeout,
            ),
            memory,
        )
    }
}

/// The running service's session store ([`crate::Application::session_records`]), for tests
/// and tools: tower-sessions' [`SessionStore`] over the same bounded store the service uses,
/// so a `tower_sessions::Session` on it behaves like a request's.
#[derive(Clone, Debug)]
pub struct SessionRecords(AnyStore);

impl SessionRecords {
    pub(crate) fn new(store: AnyStore) -> SessionRecords {
        SessionRecords(store)
    }

    /// The record a session cookie's value names, if it is live.
    pub async fn load_cookie(&self, cookie_value: &str) -> session_store::Result<Option<Record>> {
        match cookie_value.parse::<Id>() {
            Ok(id) => self.0.load(&id).await,
            Err(_) => Ok(None),
        }
    }
}

#[async_trait]
impl SessionStore for SessionRecords {
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

/// The store the configuration asks for, opened, with what it takes to sweep and close it.
pub(crate) struct OpenStore {
    pub store: AnyStore,
    backend: Backend,
}

enum Backend {
    Memory(Arc<MemoryStore>),
    Sqlite {
        store: Arc<CheckedSqlite>,
        /// The read cache, told about the sweeper's deletions.
        cache: Option<Arc<SessionCache>>,
    },
    /// Redis expires keys itself (every key is written with its expiry), so it needs no sweeper.
    Redis {
        pool: RedisPool,
        /// The connection that keeps the read cache honest; stopped when dropped.
        _tracking: Option<Tracking>,
    },
}

/// How long an id whose write failed or was cancelled is kept out of the read cache: the
/// store may still apply the write for about its timeout (SQLite's busy timeout and pool
/// acquire are both `session.store_timeout_ms`), and then some.
fn hold_back(timeout: Duration) -> Duration {
    timeout.saturating_mul(3)
}

/// The read cache for `store` (`sqlite`, `redis`), unless `session.cache_entries` is 0.
fn read_cache(
    settings: &SessionSettings,
    metrics: &Metrics,
    store: &str,
    trusted: bool,
) -> Option<Arc<SessionCache>> {
    let entries = NonZeroUsize::new(settings.cache_entries)?;
    let (hit, miss) = metrics.session_cache_counters(store);
    Some(Arc::new(SessionCache::new(
        entries,
        trusted,
        hold_back(settings.store_timeout),
        CacheCounters { hit, miss },
    )))
}

/// `backend`, behind `cache` when there is one.
fn cached<S: cache::CacheableStore + 'static>(
    backend: Arc<S>,
    cache: &Option<Arc<SessionCache>>,
) -> Arc<dyn RecordStore> {
    match cache {
        Some(cache) => Arc::new(CachedStore {
            backend,
            cache: cache.clone(),
        }),
        None => backend,
    }
}

impl OpenStore {
    /// Opens the configured store. SQLite: the file is created if missing and the table
    /// migrated, and an unusable path stops startup. Redis: connecting happens in the
    /// background, like an IdP's metadata, so a Redis that is down at startup only makes
    /// `/readyz` (and requests needing a session) fail until it is reachable. Both get a read
    /// cache of `session.cache_entries` records.
    pub(crate) async fn open(
        settings: &SessionSettings,
        metrics: &Metrics,
    ) -> Result<OpenStore, StoreError> {
        let timeout = settings.store_timeout;
        match &settings.store {
            StoreKind::Memory => {
                let (store, memory) = AnyStore::memory(timeout);
                Ok(OpenStore {
                    store,
                    backend: Backend::Memory(memory),
                })
            }
            StoreKind::Sqlite { path } => {
                let (store, pool) = open_sqlite(path, timeout).await?;
                let checked = Arc::new(CheckedSqlite::new(store, pool, path.clone()));
                // One process owns the file (README: `session.cache_entries`): every write
                // passes through this cache, so it is trusted from the start.
                let cache = read_cache(settings, metrics, "sqlite", true);
                Ok(OpenStore {
                    store: AnyStore::new(cached(checked.clone(), &cache), timeout),
                    backend: Backend::Sqlite {
                        store: checked,
                        cache,
                    },
                })
            }
            StoreKind::Redis(redis) => {
                let pool = open_redis(redis, timeout)?;
                // Not trusted until the tracking connection is up and tracking.
                let cache = read_cache(settings, metrics, "redis", false);
                let tracking = match &cache {
                    Some(cache) => Some(Tracking::start(redis, timeout, cache.clone())?),
                    None => None,
                };
                let sessions = Arc::new(RedisSessions {
                    pool: pool.clone(),
                    prefix: redis.key_prefix.clone(),
                });
                Ok(OpenStore {
                    store: AnyStore::new(cached(sessions, &cache), timeout),
                    backend: Backend::Redis {
                        pool,
                        _tracking: tracking,
                    },
                })
            }
        }
    }

    /// The in-memory store, when that is the backend.
    pub(crate) fn memory(&self) -> Option<Arc<MemoryStore>> {
        match &self.backend {
            Backend::Memory(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// Starts the periodic deletion of expired sessions, for stores that need it. Abandoned
    /// logins would otherwise grow the store forever.
    pub(crate) fn spawn_sweeper(&self) -> Option<JoinHandle<()>> {
        match &self.backend {
            Backend::Memory(memory) => {
                let memory = memory.clone();
                Some(spawn_sweep(move || {
                    let memory = memory.clone();
                    async move { memory.delete_expired().await }
                }))
            }
            Backend::Sqlite { store, cache } => {
                let (store, cache) = (store.clone(), cache.clone());
                Some(spawn_sweep(move || {
                    let (store, cache) = (store.clone(), cache.clone());
                    async move { sweep_sqlite(&store, cache.as_deref()).await }
                }))
            }
            Backend::Redis { .. } => None,
        }
    }

    /// Releases the store: closes the SQLite pool (so the next `Application` can open the
    /// same file) or the Redis connections.
    pub(crate) async fn close(self) {
        match self.backend {
            Backend::Memory(_) => {}
            Backend::Sqlite { store, .. } => store.pool.close().await,
            Backend::Redis { pool, _tracking } => {
                drop(_tracking);
                if let Err(e) = pool.quit().await {
                    tracing::debug!(error = %e, "closing the Redis connections failed");
                }
            }
        }
    }
}

/// Deletes SQLite's expired records, and drops each from the read cache. Expired records are
/// never answered from the cache anyway (it checks `expiry_date`); the sweeper's own list of
/// what it deleted also covers a wall clock that stepped back in between.
async fn sweep_sqlite(
    store: &CheckedSqlite,
    cache: Option<&SessionCache>,
) -> session_store::Result<()> {
    let deleted = store.delete_expired_ids().await?;
    if let Some(cache) = cache {
        for id in &deleted {
            cache.invalidate(id);
        }
    }
    Ok(())
}

fn spawn_sweep<F, Fut>(sweep: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = session_store::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRED_SESSION_SWEEP);
        loop {
            tick.tick().await;
            if let Err(e) = sweep().await {
                tracing::warn!(error = %e, "deleting expired sessions failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::prelude::Config as RedisConfig;
    use std::path::Path;

    /// A fresh record expiring `expires_in` from now (negative: already expired), holding
    /// `user` when given.
    fn record(user: Option<&str>, expires_in: time::Duration) -> Record {
        Record {
            id: Id::default(),
            data: user
                .map(|u| ("user".to_owned(), serde_json::json!(u)))
                .into_iter()
                .collect(),
            expiry_date: OffsetDateTime::now_utc() + expires_in,
        }
    }

    /// [`RecordStore`]'s contract, store by store (Redis: over HTTP in
    /// `tests/api/store_contract.rs`, which needs a `redis-server`).
    async fn keeps_the_record_contract(store: &dyn RecordStore) {
        let live = time::Duration::minutes(5);
        let gone = |r: Option<Record>| r.is_none();
        // save never creates: not for an id never written, not after a delete.
        let never = record(Some("ada"), live);
        store.save(&never).await.expect("save");
        assert!(
            gone(store.load(&never.id).await.expect("load")),
            "save created"
        );
        let mut rec = record(Some("ada"), live);
        store.create(&mut rec).await.expect("create");
        rec.data.insert("touched".into(), serde_json::json!(1));
        store.save(&rec).await.expect("save");
        let loaded = store.load(&rec.id).await.expect("load").expect("live");
        assert_eq!(loaded.data, rec.data, "save updates a live record");
        store.delete(&rec.id).await.expect("delete");
        store
            .save(&rec)
            .await
            .expect("a save of a gone record is not an error");
        assert!(
            gone(store.load(&rec.id).await.expect("load")),
            "save resurrected"
        );
        // An expired record is gone too: save does not renew it.
        let mut expired = record(Some("ada"), -time::Duration::seconds(1));
        store.put(&expired).await.expect("put");
        expired.expiry_date = OffsetDateTime::now_utc() + live;
        store.save(&expired).await.expect("save");
        assert!(
            gone(store.load(&expired.id).await.expect("load")),
            "save renewed"
        );
        // put writes whether or not the id is there.
        let mut index = record(Some("one"), live);
        store.put(&index).await.expect("put");
        index.data.insert("user".into(), serde_json::json!("two"));
        store.put(&index).await.expect("put");
        let loaded = store.load(&index.id).await.expect("load").expect("live");
        assert_eq!(loaded.data, index.data);
        // insert_new writes once per live id; an expired record's id is free again.
        let marker = record(None, live);
        assert!(store.insert_new(&marker).await.expect("insert"));
        assert!(!store.insert_new(&marker).await.expect("insert"));
        let stale = record(None, -time::Duration::seconds(1));
        store.put(&stale).await.expect("put");
        let mut fresh = record(None, live);
        fresh.id = stale.id;
        assert!(store.insert_new(&fresh).await.expect("insert"));
        assert!(!store.insert_new(&fresh).await.expect("insert"));
        assert!(store.load(&fresh.id).await.expect("load").is_some());
    }

    #[tokio::test]
    async fn the_memory_store_keeps_the_record_contract() {
        keeps_the_record_contract(&MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn the_sqlite_store_keeps_the_record_contract() {
        let dir = std::env::temp_dir().join(format!("entrance-contract-{}", Id::default()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sessions.db");
        let (store, pool) = open_sqlite(&path, Duration::from_secs(1))
            .await
            .expect("opens");
        let checked = CheckedSqlite::new(store, pool.clone(), path);
        keeps_the_record_contract(&checked).await;
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write that finds the file locked by another connection is not refused: it runs
    /// through the pool, which waits for the lock (within the store timeout), instead of on the
    /// calling thread, which never waits (`sqlite_inline_write`).
    #[tokio::test]
    async fn a_sqlite_write_that_finds_the_file_locked_waits_for_the_lock() {
        let (store, dir) = sqlite_store().await;
        let locker = rusqlite::Connection::open(dir.join("sessions.db")).expect("opens");
        locker.execute_batch("begin immediate").expect("write lock");
        let unlock = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            locker.execute_batch("commit").expect("unlocks");
        });
        let mut held = record(Some("ada"), time::Duration::hours(1));
        store
            .create(&mut held)
            .await
            .expect("created once the lock is gone");
        store.delete(&held.id).await.expect("deleted");
        unlock.join().expect("unlocker");
        assert!(store.load(&held.id).await.expect("load").is_none());
        store.pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fresh SQLite store in a directory of its own, and that directory.
    async fn sqlite_store() -> (Arc<CheckedSqlite>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("entrance-cached-{}", Id::default()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sessions.db");
        let (store, pool) = open_sqlite(&path, Duration::from_secs(1))
            .await
            .expect("opens");
        (Arc::new(CheckedSqlite::new(store, pool, path)), dir)
    }

    fn test_cache() -> Arc<SessionCache> {
        Arc::new(SessionCache::new(
            NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            true,
            Duration::from_secs(3),
            CacheCounters::default(),
        ))
    }

    #[tokio::test]
    async fn the_cached_sqlite_store_keeps_the_record_contract() {
        let (sqlite, dir) = sqlite_store().await;
        let cached = CachedStore {
            backend: sqlite.clone(),
            cache: test_cache(),
        };
        keeps_the_record_contract(&cached).await;
        sqlite.pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The sweeper's deletions reach the cache: a record the cache holds as live (its copy
    /// says so) but that the file holds as expired — a wall clock that stepped back, a copy
    /// read before the expiry was moved — is dropped when the sweeper deletes it.
    #[tokio::test]
    async fn the_sqlite_sweepers_deletions_reach_the_cache() {
        let (sqlite, dir) = sqlite_store().await;
        let cache = test_cache();
        let cached = CachedStore {
            backend: sqlite.clone(),
            cache: cache.clone(),
        };
        let live = record(Some("ada"), time::Duration::minutes(5));
        cached.put(&live).await.expect("put");
        assert!(cached.load(&live.id).await.expect("load").is_some());
        assert_eq!(cache.len(), 1, "cached");
        let mut expired = live.clone();
        expired.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(5);
        sqlite
            .put(&expired)
            .await
            .expect("expired behind the cache's back");
        sweep_sqlite(&sqlite, Some(&cache)).await.expect("sweep");
        assert!(
            sqlite.load(&live.id).await.expect("load").is_none(),
            "the sweeper deleted it"
        );
        assert!(
            cached.load(&live.id).await.expect("load").is_none(),
            "and the cache forgot it"
        );
        sqlite.pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn memory_store_evicts_expired_records() {
        let store = MemoryStore::default();
        let mut live = record(None, time::Duration::minutes(5));
        let mut dead = record(None, -time::Duration::seconds(1));
        store.create(&mut live).await.expect("create");
        store.create(&mut dead).await.expect("create");
        assert!(store.load(&dead.id).await.expect("load").is_none());
        assert_eq!(store.len(), 2);
        store.delete_expired().await.expect("evict");
        assert_eq!(store.len(), 1);
        assert!(store.load(&live.id).await.expect("load").is_some());
    }

    /// A store that never answers.
    #[derive(Debug)]
    struct Hung;

    #[async_trait]
    impl SessionStore for Hung {
        async fn save(&self, _: &Record) -> session_store::Result<()> {
            std::future::pending().await
        }
        async fn load(&self, _: &Id) -> session_store::Result<Option<Record>> {
            std::future::pending().await
        }
        async fn delete(&self, _: &Id) -> session_store::Result<()> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl RecordStore for Hung {
        async fn put(&self, _: &Record) -> session_store::Result<()> {
            std::future::pending().await
        }
        async fn insert_new(&self, _: &Record) -> session_store::Result<bool> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_hung_store_becomes_an_error_after_the_timeout() {
        let store = AnyStore::new(Arc::new(Hung), Duration::from_millis(50));
        let started = std::time::Instant::now();
        let err = store.probe().await.expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(err.to_string().contains("50 ms"), "{err}");
    }

    /// Counts the saves that reach it.
    #[derive(Debug, Default)]
    struct CountingStore {
        inner: MemoryStore,
        saves: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl SessionStore for CountingStore {
        async fn save(&self, record: &Record) -> session_store::Result<()> {
            self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.save(record).await
        }
        async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
            self.inner.load(id).await
        }
        async fn delete(&self, id: &Id) -> session_store::Result<()> {
            self.inner.delete(id).await
        }
    }

    #[async_trait]
    impl RecordStore for CountingStore {
        async fn put(&self, record: &Record) -> session_store::Result<()> {
            self.inner.put(record).await
        }
        async fn insert_new(&self, record: &Record) -> session_store::Result<bool> {
            self.inner.insert_new(record).await
        }
    }

    #[tokio::test]
    async fn a_repeated_save_of_the_same_record_is_written_once() {
        let counting = Arc::new(CountingStore::default());
        let store = AnyStore::new(counting.clone(), Duration::from_secs(1));
        let saves = || counting.saves.load(std::sync::atomic::Ordering::SeqCst);
        let mut record = record(Some("ada"), time::Duration::minutes(5));
        store.save(&record).await.expect("save");
        // The layer's repeat: same data, expiry recomputed a moment later.
        record.expiry_date += time::Duration::milliseconds(3);
        store.save(&record).await.expect("save");
        assert_eq!(saves(), 1, "the repeat is skipped");
        // Changed data is written.
        record
            .data
            .insert("touched".to_owned(), serde_json::json!(1));
        store.save(&record).await.expect("save");
        assert_eq!(saves(), 2);
        // An expiry pushed forward (idle timeout) is written.
        record.expiry_date += time::Duration::minutes(1);
        store.save(&record).await.expect("save");
        assert_eq!(saves(), 3);
        // After a delete (sign-out), the same record is written again, not skipped.
        store.delete(&record.id).await.expect("delete");
        store.save(&record).await.expect("save");
        assert_eq!(saves(), 4);
    }

    #[tokio::test]
    async fn the_thread_local_sqlite_read_sees_what_the_pool_wrote_and_deleted() {
        let dir = std::env::temp_dir().join(format!("entrance-store-{}", Id::default()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sessions.db");
        let (store, pool) = open_sqlite(&path, Duration::from_secs(1))
            .await
            .expect("opens");
        let mut live = record(Some("ada"), time::Duration::minutes(5));
        let mut dead = record(None, -time::Duration::seconds(1));
        store.create(&mut live).await.expect("create");
        store.create(&mut dead).await.expect("create");
        let read = sqlite_fast_read(&path, &live.id).expect("reads");
        assert_eq!(read.map(|r| r.data), Some(live.data.clone()));
        assert!(
            sqlite_fast_read(&path, &dead.id).expect("reads").is_none(),
            "expired"
        );
        assert!(
            sqlite_fast_read(&path, &Id::default())
                .expect("reads")
                .is_none(),
            "unknown"
        );
        // A sign-out through the pool is seen by the next read on this thread.
        store.delete(&live.id).await.expect("delete");
        assert!(sqlite_fast_read(&path, &live.id).expect("reads").is_none());
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unusable_sqlite_path_names_the_key() {
        let err = open_sqlite(
            Path::new("/nonexistent-dir-for-entrance/sessions.db"),
            Duration::from_secs(1),
        )
        .await
        .expect_err("no such directory");
        let text = err.to_string();
        assert!(text.contains("session.sqlite_path"), "{text}");
        assert!(text.contains("fix:"), "{text}");
    }

    #[test]
    fn redis_urls_with_tls_and_credentials_are_understood() {
        let config = RedisConfig::from_url("rediss://entrance:s3cret@cache.example:6380/2")
            .expect("a rediss URL parses (TLS support is compiled in)");
        assert!(config.uses_tls());
        assert_eq!(config.username.as_deref(), Some("entrance"));
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        let plain = RedisConfig::from_url("redis://127.0.0.1:6379").expect("parses");
        assert!(!plain.uses_tls());
    }
}
