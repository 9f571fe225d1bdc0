//! The read cache in front of a shared session store (SQLite, Redis): recently read records
//! kept in this process, bounded (LRU), answered only while live and while the cache is
//! trusted, and invalidated by every write that passes through it and by whatever else tells
//! it a record changed (Redis's invalidation messages, the SQLite sweeper's deletions).
//!
//! Consistency rests on four rules, each with a test below:
//! - a write goes to the store first, then drops the local copy ([`CachedStore`]);
//! - a record read from the store is kept only if no invalidation of its shard was processed
//!   while the read was in flight (the classic race: the store's answer predates a sign-out
//!   whose invalidation arrived first — [`SessionCache::ticket`], [`SessionCache::insert`]);
//! - a write whose outcome is unknown (an error, or cancelled by the store timeout while the
//!   store may still apply it) holds its id back from caching for a while;
//! - while the cache is not trusted (Redis: the tracking connection is down or reconnecting)
//!   nothing is answered from it nor put into it, and it is emptied when trust is lost and
//!   again when it is regained.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use async_trait::async_trait;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use time::OffsetDateTime;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store,
};

use super::RecordStore;
use crate::sync;

/// Below this many entries the cache is one shard, so the bound is exact; above it, the
/// entries are spread over [`SHARDS`] locks so request threads rarely wait for each other.
const SHARDED_FROM: usize = 256;
const SHARDS: usize = 16;

/// The request counters of one store: `entrance_session_cache_requests_total{store, result}`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheCounters {
    pub hit: Counter,
    pub miss: Counter,
}

/// Recently read session records, bounded, with what makes them safe to answer from.
#[derive(Debug)]
pub(crate) struct SessionCache {
    shards: Box<[Shard]>,
    /// Whether hits may be answered and reads kept. Always true for SQLite (every write passes
    /// through this process); for Redis, true only while the tracking connection is up and
    /// tracking (`redis.rs`).
    trusted: AtomicBool,
    /// How long an id whose write failed or was cancelled is not cached: longer than the store
    /// may still take to apply that write (its timeouts).
    hold_back: Duration,
    counters: CacheCounters,
    /// Ids someone waits to hear have changed ([`SessionCache::watch`]); few, rarely any.
    watchers: Mutex<Vec<(Id, Arc<Notify>)>>,
    /// Whether `watchers` is non-empty: the common invalidation takes no further lock.
    watched: AtomicBool,
}

#[derive(Debug)]
struct Shard {
    state: Mutex<ShardState>,
    /// Bumped (under `state`'s lock) by every invalidation and flush of this shard; a read
    /// from the store is kept only if it is unchanged since before the read began.
    epoch: AtomicU64,
}

#[derive(Debug)]
struct ShardState {
    records: LruCache<Id, Record>,
    /// Ids not to cache until the instant given: their last write's outcome is unknown.
    held_back: HashMap<Id, Instant>,
}

/// What a read from the store must show to be kept: the epoch of its shard before it began.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    shard: usize,
    epoch: u64,
}

impl SessionCache {
    /// A cache of at most `entries` records (at least one), trusted from the start or not.
    pub(crate) fn new(
        entries: NonZeroUsize,
        trusted: bool,
        hold_back: Duration,
        counters: CacheCounters,
    ) -> SessionCache {
        let shards = if entries.get() >= SHARDED_FROM {
            SHARDS
        } else {
            1
        };
        let per_shard =
            NonZeroUsize::new(entries.get().div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        SessionCache {
            shards: (0..shards)
                .map(|_| Shard {
                    state: Mutex::new(ShardState {
                        records: LruCache::new(per_shard),
                        held_back: HashMap::new(),
                    }),
                    epoch: AtomicU64::new(0),
                })
                .collect(),
            trusted: AtomicBool::new(trusted),
            hold_back,
            counters,
            watchers: Mutex::new(Vec::new()),
            watched: AtomicBool::new(false),
        }
    }

    /// A notification each time `id` is invalidated (a write through this process, or the
    /// store saying another process changed it) and each time the cache resumes (changes may
    /// have gone unseen): how a replica hears at once of a record it otherwise polls. A
    /// notification that comes while nobody waits is kept for the next wait (`notify_one`).
    pub(crate) fn watch(&self, id: Id) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        sync::lock(&self.watchers).push((id, notify.clone()));
        self.watched.store(true, Ordering::Release);
        notify
    }

    fn notify_watchers(&self, id: Option<&Id>) {
        if !self.watched.load(Ordering::Acquire) {
            return;
        }
        for (watched, notify) in sync::lock(&self.watchers).iter() {
            if id.is_none_or(|id| id == watched) {
                notify.notify_one();
            }
        }
    }

    fn shard_of(&self, id: &Id) -> usize {
        // Session ids are random (tower-sessions draws 128 bits; derived ids are hashes), so
        // their low bits spread evenly.
        (id.0 as u64 as usize) % self.shards.len()
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, ShardState> {
        sync::lock(&self.shards[shard].state)
    }

    /// The live record cached for `id`, if the cache is trusted. An expired one is dropped:
    /// a cached record is answered only while `expiry_date` is ahead, as the stores' own
    /// `load` does.
    pub(crate) fn get(&self, id: &Id) -> Option<Record> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let shard = self.shard_of(id);
        let mut state = self.lock(shard);
        let record = state.records.get(id)?;
        if record.expiry_date > OffsetDateTime::now_utc() {
            return Some(record.clone());
        }
        state.records.pop(id);
        None
    }

    /// Taken before reading `id` from the store, handed to [`insert`](Self::insert) after.
    pub(crate) fn ticket(&self, id: &Id) -> Ticket {
        let shard = self.shard_of(id);
        Ticket {
            shard,
            epoch: self.shards[shard].epoch.load(Ordering::Acquire),
        }
    }

    /// Keeps `record`, read from the store under `ticket`, unless something invalidated its
    /// shard meanwhile (the store's answer may predate that change), its id is held back, the
    /// cache is not trusted, or it is no longer live. The least recently used record of the
    /// shard makes room.
    pub(crate) fn insert(&self, ticket: Ticket, record: &Record) {
        if !self.trusted.load(Ordering::Acquire) || record.expiry_date <= OffsetDateTime::now_utc()
        {
            return;
        }
        let shard = &self.shards[ticket.shard];
        let mut state = sync::lock(&shard.state);
        if shard.epoch.load(Ordering::Acquire) != ticket.epoch {
            return;
        }
        if !state.held_back.is_empty() {
            let now = Instant::now();
            state.held_back.retain(|_, until| *until > now);
            if state.held_back.contains_key(&record.id) {
                return;
            }
        }
        state.records.put(record.id, record.clone());
    }

    /// Forgets `id`: a write to it passed through here, or the store said it changed.
    pub(crate) fn invalidate(&self, id: &Id) {
        let shard = self.shard_of(id);
        {
            let mut state = self.lock(shard);
            self.shards[shard].epoch.fetch_add(1, Ordering::AcqRel);
            state.records.pop(id);
        }
        self.notify_watchers(Some(id));
    }

    /// Forgets `id` and keeps it out for [`hold_back`](SessionCache::new): a write to it
    /// failed or was cancelled, and the store may still apply it without anyone saying so.
    fn invalidate_and_hold_back(&self, id: &Id) {
        let shard = self.shard_of(id);
        let mut state = self.lock(shard);
        self.shards[shard].epoch.fetch_add(1, Ordering::AcqRel);
        state.records.pop(id);
        state.held_back.insert(*id, Instant::now() + self.hold_back);
    }

    /// Forgets everything (and every read in flight is not kept).
    pub(crate) fn flush(&self) {
        for (i, shard) in self.shards.iter().enumerate() {
            let mut state = self.lock(i);
            shard.epoch.fetch_add(1, Ordering::AcqRel);
            state.records.clear();
        }
    }

    /// Stops answering from the cache and empties it: what told it about changes is gone.
    pub(crate) fn suspend(&self) {
        self.trusted.store(false, Ordering::Release);
        self.flush();
    }

    /// Empties the cache and answers from it again: what tells it about changes is back, and
    /// anything kept before may have changed unseen in between.
    pub(crate) fn resume(&self) {
        self.flush();
        self.trusted.store(true, Ordering::Release);
        self.notify_watchers(None);
    }

    /// How many records are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).records.len())
            .sum()
    }
}

/// What a backend offers the cache beyond the record contract.
pub(super) trait CacheableStore: RecordStore {
    /// Checked before a record is answered from the cache; an error is answered instead. The
    /// SQLite store refuses once its file is gone (`sqlite.rs`), and must keep refusing when
    /// the record is cached.
    fn before_hit(&self) -> session_store::Result<()> {
        Ok(())
    }
}

/// A store whose reads are served from a [`SessionCache`] when it can, and whose writes go
/// to the store first, then drop the local copy. `insert_new` (single-use markers, the
/// upstream refresh lock) and [`RecordStore::load_uncached`] always ask the store.
#[derive(Debug)]
pub(super) struct CachedStore<S> {
    pub(super) backend: std::sync::Arc<S>,
    pub(super) cache: std::sync::Arc<SessionCache>,
}

/// Invalidates its id when dropped: after the write finished, failed, or was cancelled
/// (`AnyStore`'s timeout drops the future mid-write). Unless the write finished, the id is
/// held back too.
struct AfterWrite<'a> {
    cache: &'a SessionCache,
    id: Id,
    done: bool,
}

impl Drop for AfterWrite<'_> {
    fn drop(&mut self) {
        if self.done {
            self.cache.invalidate(&self.id);
        } else {
            self.cache.invalidate_and_hold_back(&self.id);
        }
    }
}

impl<S: CacheableStore> CachedStore<S> {
    async fn write<T>(
        &self,
        id: Id,
        write: impl std::future::Future<Output = session_store::Result<T>>,
    ) -> session_store::Result<T> {
        let mut after = AfterWrite {
            cache: &self.cache,
            id,
            done: false,
        };
        let result = write.await;
        after.done = result.is_ok();
        result
    }
}

#[async_trait]
impl<S: CacheableStore> SessionStore for CachedStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A fresh id nobody has read; invalidated anyway (the backend may draw another).
        let result = self.backend.create(record).await;
        match result {
            Ok(()) => self.cache.invalidate(&record.id),
            Err(_) => self.cache.invalidate_and_hold_back(&record.id),
        }
        result
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(record.id, self.backend.save(record)).await
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        if let Some(record) = self.cache.get(session_id) {
            self.backend.before_hit()?;
            self.cache.counters.hit.inc();
            return Ok(Some(record));
        }
        self.cache.counters.miss.inc();
        let ticket = self.cache.ticket(session_id);
        let record = self.backend.load(session_id).await?;
        if let Some(record) = &record {
            self.cache.insert(ticket, record);
        }
        Ok(record)
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.write(*session_id, self.backend.delete(session_id))
            .await
    }
}

#[async_trait]
impl<S: CacheableStore> RecordStore for CachedStore<S> {
    async fn put(&self, record: &Record) -> session_store::Result<()> {
        self.write(record.id, self.backend.put(record)).await
    }
    async fn insert_new(&self, record: &Record) -> session_store::Result<bool> {
        self.write(record.id, self.backend.insert_new(record)).await
    }
    async fn load_uncached(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.backend.load(session_id).await
    }
    fn watch(&self, id: Id) -> Option<Arc<Notify>> {
        Some(self.cache.watch(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::MemoryStore;
    use std::sync::Arc;

    fn record(expires_in: time::Duration) -> Record {
        Record {
            id: Id::default(),
            data: [("user".to_owned(), serde_json::json!("ada"))]
                .into_iter()
                .collect(),
            expiry_date: OffsetDateTime::now_utc() + expires_in,
        }
    }

    fn live() -> Record {
        record(time::Duration::minutes(5))
    }

    fn cache(entries: usize) -> Arc<SessionCache> {
        Arc::new(SessionCache::new(
            NonZeroUsize::new(entries).expect("entries"),
            true,
            Duration::from_secs(3),
            CacheCounters::default(),
        ))
    }

    impl CacheableStore for MemoryStore {}

    /// A cached memory store, and the memory store behind it (written behind the cache's
    /// back, as another process would).
    fn cached(entries: usize) -> (CachedStore<MemoryStore>, Arc<MemoryStore>) {
        let backend = Arc::new(MemoryStore::default());
        (
            CachedStore {
                backend: backend.clone(),
                cache: cache(entries),
            },
            backend,
        )
    }

    #[test]
    fn the_cache_keeps_at_most_its_bound_dropping_the_least_recently_used() {
        let cache = cache(3);
        let records: Vec<Record> = (0..4).map(|_| live()).collect();
        for r in &records[..3] {
            cache.insert(cache.ticket(&r.id), r);
        }
        // Use the first, so the second is the least recently used.
        assert!(cache.get(&records[0].id).is_some());
        cache.insert(cache.ticket(&records[3].id), &records[3]);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&records[1].id).is_none(), "the LRU one made room");
        for i in [0, 2, 3] {
            assert!(cache.get(&records[i].id).is_some());
        }
    }

    #[test]
    fn a_sharded_cache_stays_within_its_bound() {
        let cache = cache(1000);
        for _ in 0..5000 {
            let r = live();
            cache.insert(cache.ticket(&r.id), &r);
        }
        let len = cache.len();
        // Each of the 16 shards holds ceil(1000 / 16) = 63.
        assert!(len <= 1008, "{len}");
        assert!(len >= 900, "{len}");
    }

    #[test]
    fn an_expired_record_is_never_answered_nor_kept() {
        let cache = cache(10);
        let short = record(time::Duration::milliseconds(300));
        cache.insert(cache.ticket(&short.id), &short);
        assert!(cache.get(&short.id).is_some());
        std::thread::sleep(Duration::from_millis(400));
        assert!(cache.get(&short.id).is_none(), "expired while cached");
        assert_eq!(cache.len(), 0, "and dropped");
        let dead = record(-time::Duration::seconds(1));
        cache.insert(cache.ticket(&dead.id), &dead);
        assert_eq!(cache.len(), 0);
    }

    /// The classic race: a read from the store is answered (old record), then an
    /// invalidation of that id is processed, then the reader would keep its answer. It must
    /// not: the answer predates the change the invalidation reports.
    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = cache(10);
        let r = live();
        let ticket = cache.ticket(&r.id);
        // ... the GET is in flight; the store changes, the invalidation arrives first ...
        cache.invalidate(&r.id);
        cache.insert(ticket, &r);
        assert!(cache.get(&r.id).is_none(), "the stale answer was kept");
        // A flush (a lost connection) counts as an invalidation of everything.
        let ticket = cache.ticket(&r.id);
        cache.flush();
        cache.insert(ticket, &r);
        assert!(cache.get(&r.id).is_none());
        // Without anything in between, it is kept.
        cache.insert(cache.ticket(&r.id), &r);
        assert!(cache.get(&r.id).is_some());
    }

    #[test]
    fn an_untrusted_cache_answers_nothing_keeps_nothing_and_comes_back_empty() {
        let cache = cache(10);
        let r = live();
        cache.insert(cache.ticket(&r.id), &r);
        let in_flight = cache.ticket(&r.id);
        cache.suspend();
        assert!(cache.get(&r.id).is_none());
        cache.insert(cache.ticket(&r.id), &r);
        assert_eq!(cache.len(), 0);
        cache.resume();
        assert!(cache.get(&r.id).is_none(), "nothing kept from before");
        cache.insert(in_flight, &r);
        assert!(
            cache.get(&r.id).is_none(),
            "a read begun before the resume is not kept"
        );
        cache.insert(cache.ticket(&r.id), &r);
        assert!(cache.get(&r.id).is_some());
    }

    #[tokio::test]
    async fn writes_reach_the_store_and_drop_the_cached_copy() {
        let (store, backend) = cached(10);
        let mut r = live();
        store.create(&mut r).await.expect("create");
        assert!(store.load(&r.id).await.expect("load").is_some());
        assert_eq!(store.cache.counters.miss.get(), 1);
        assert!(store.load(&r.id).await.expect("load").is_some());
        assert_eq!(store.cache.counters.hit.get(), 1, "answered from the cache");

        // save: the store has the new data, and so does the next load.
        r.data.insert("touched".into(), serde_json::json!(1));
        store.save(&r).await.expect("save");
        assert_eq!(
            backend.load(&r.id).await.expect("load").map(|x| x.data),
            Some(r.data.clone())
        );
        assert_eq!(
            store.load(&r.id).await.expect("load").map(|x| x.data),
            Some(r.data.clone())
        );
        // put, insert_new, delete likewise.
        r.data.insert("touched".into(), serde_json::json!(2));
        store.put(&r).await.expect("put");
        assert_eq!(
            store.load(&r.id).await.expect("load").map(|x| x.data),
            Some(r.data.clone())
        );
        store.delete(&r.id).await.expect("delete");
        assert!(store.load(&r.id).await.expect("load").is_none());
        assert!(store.insert_new(&r).await.expect("insert"));
        assert!(store.load(&r.id).await.expect("load").is_some());
        assert!(
            !store.insert_new(&r).await.expect("insert"),
            "not cached: asked the store"
        );
    }

    #[tokio::test]
    async fn a_change_behind_the_caches_back_is_seen_once_invalidated() {
        let (store, backend) = cached(10);
        let mut r = live();
        store.create(&mut r).await.expect("create");
        store.load(&r.id).await.expect("load");
        backend.delete(&r.id).await.expect("delete elsewhere");
        assert!(
            store.load(&r.id).await.expect("load").is_some(),
            "not told yet: the cached copy (this is what invalidation is for)"
        );
        assert!(
            store.load_uncached(&r.id).await.expect("load").is_none(),
            "load_uncached asks the store"
        );
        store.cache.invalidate(&r.id);
        assert!(store.load(&r.id).await.expect("load").is_none());
    }

    /// A store whose writes never finish: `AnyStore`'s timeout cancels them, and the store
    /// (sqlx's worker thread, Redis) may apply them later.
    #[derive(Debug, Default)]
    struct SlowWrites(MemoryStore);

    #[async_trait]
    impl SessionStore for SlowWrites {
        async fn save(&self, _: &Record) -> session_store::Result<()> {
            std::future::pending().await
        }
        async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
            self.0.load(id).await
        }
        async fn delete(&self, _: &Id) -> session_store::Result<()> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl RecordStore for SlowWrites {
        async fn put(&self, r: &Record) -> session_store::Result<()> {
            self.0.put(r).await
        }
        async fn insert_new(&self, r: &Record) -> session_store::Result<bool> {
            self.0.insert_new(r).await
        }
    }

    impl CacheableStore for SlowWrites {}

    #[tokio::test]
    async fn a_cancelled_write_keeps_its_id_out_of_the_cache_for_a_while() {
        let store = CachedStore {
            backend: Arc::new(SlowWrites::default()),
            cache: Arc::new(SessionCache::new(
                NonZeroUsize::new(10).expect("entries"),
                true,
                Duration::from_millis(300),
                CacheCounters::default(),
            )),
        };
        let r = live();
        store.put(&r).await.expect("put");
        store.load(&r.id).await.expect("load");
        assert_eq!(store.cache.len(), 1);
        // A sign-out cancelled by the store timeout: it may still land.
        let cancelled = tokio::time::timeout(Duration::from_millis(20), store.delete(&r.id)).await;
        assert!(cancelled.is_err());
        assert_eq!(store.cache.len(), 0, "the cached copy is dropped");
        store.load(&r.id).await.expect("load");
        assert_eq!(store.cache.len(), 0, "and the id is not cached again yet");
        tokio::time::sleep(Duration::from_millis(350)).await;
        store.load(&r.id).await.expect("load");
        assert_eq!(store.cache.len(), 1, "until the hold-back passed");
    }

    /// A store that refuses every read, as the SQLite store does once its file is gone.
    #[derive(Debug, Default)]
    struct Refusing {
        inner: MemoryStore,
        refuse: AtomicBool,
    }

    #[async_trait]
    impl SessionStore for Refusing {
        async fn save(&self, r: &Record) -> session_store::Result<()> {
            self.inner.save(r).await
        }
        async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
            self.before_hit()?;
            self.inner.load(id).await
        }
        async fn delete(&self, id: &Id) -> session_store::Result<()> {
            self.inner.delete(id).await
        }
    }

    #[async_trait]
    impl RecordStore for Refusing {
        async fn put(&self, r: &Record) -> session_store::Result<()> {
            self.inner.put(r).await
        }
        async fn insert_new(&self, r: &Record) -> session_store::Result<bool> {
            self.inner.insert_new(r).await
        }
    }

    impl CacheableStore for Refusing {
        fn before_hit(&self) -> session_store::Result<()> {
            if self.refuse.load(Ordering::SeqCst) {
                return Err(session_store::Error::Backend("gone".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_store_that_refuses_refuses_cache_hits_too() {
        let store = CachedStore {
            backend: Arc::new(Refusing::default()),
            cache: cache(10),
        };
        let r = live();
        store.put(&r).await.expect("put");
        store.load(&r.id).await.expect("load");
        assert_eq!(store.cache.len(), 1);
        store.backend.refuse.store(true, Ordering::SeqCst);
        assert!(store.load(&r.id).await.is_err(), "a hit is refused too");
        store.backend.refuse.store(false, Ordering::SeqCst);
        assert!(store.load(&r.id).await.expect("load").is_some());
    }

    #[tokio::test]
    async fn a_watcher_hears_of_its_record_and_of_a_resume_only() {
        let cache = cache(10);
        let notified = async |n: &Notify| {
            tokio::time::timeout(Duration::from_millis(20), n.notified())
                .await
                .is_ok()
        };
        let watched = cache.watch(Id(1));
        cache.invalidate(&Id(2));
        assert!(!notified(&watched).await, "another record's change");
        // Kept until someone waits: a change while the poller was busy is not lost.
        cache.invalidate(&Id(1));
        assert!(notified(&watched).await);
        assert!(!notified(&watched).await, "one change, one notification");
        cache.suspend();
        assert!(!notified(&watched).await);
        cache.resume();
        assert!(
            notified(&watched).await,
            "after a gap, anything may have changed"
        );
    }
}
