//! The SQLite session store: opened through sqlx's pool for writes, read on the calling
//! thread, and refusing to work once its file is gone.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store::{self},
};
use tower_sessions_sqlx_store::{
    SqliteStore,
    sqlx::{
        self, SqlitePool,
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    },
};

use super::{RecordStore, SQLITE_FIX, StoreError, cache::CacheableStore};

pub(super) async fn open_sqlite(
    path: &Path,
    timeout: Duration,
) -> Result<(SqliteStore, SqlitePool), StoreError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
        fix: SQLITE_FIX,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers (every /me) never wait for a writer (a sign-in).
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // Wait for a lock no longer than a store call may take anyway.
        .busy_timeout(timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        // A connection to a local file does not go stale; the default ping before every
        // acquire was one more hand-off to sqlx's worker thread per write.
        .test_before_acquire(false)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(|e| fail(Box::new(e)))?;
    let store = SqliteStore::new(pool.clone());
    if let Err(e) = store.migrate().await {
        pool.close().await;
        return Err(fail(Box::new(e)));
    }
    Ok((store, pool))
}

/// The SQLite store, refusing to work once its file is gone. Open connections keep writing
/// to a deleted (or moved-away) file without error, so sessions would silently go nowhere;
/// checking that the path still exists turns that into a store error (503, `/readyz` not
/// ready) that clears by itself when the file is put back.
#[derive(Debug)]
pub(super) struct CheckedSqlite {
    pub(super) store: SqliteStore,
    /// The store's pool, for the writes tower-sessions-sqlx-store does not offer (an update
    /// that never inserts, an insert that never overwrites a live record).
    pub(super) pool: SqlitePool,
    pub(super) path: PathBuf,
    /// When the file was last seen there, in nanoseconds since `since` (0: never): a cache
    /// hit within [`HIT_CHECK_EVERY`] of it takes no `stat` of its own.
    pub(super) seen_at: AtomicU64,
    pub(super) since: Instant,
}

/// How long a cache hit trusts the last sight of the file. A `stat` per `/auth` was most of
/// what the SQLite store cost beyond the memory store's (`docs/BENCHMARKS.md`, 2026-11-30);
/// a file gone is still answered 503 within this long, and every write still checks first,
/// so no write goes to a vanished file.
pub(super) const HIT_CHECK_EVERY: Duration = Duration::from_millis(50);

/// The table tower-sessions-sqlx-store 0.15 creates (`SqliteStore::migrate`): `id` text,
/// `data` the MessagePack of the whole record, `expiry_date` the RFC 3339 text sqlx writes
/// for an `OffsetDateTime` (compared as text, as that store's own `load` does).
const TABLE: &str = "tower_sessions";

fn sqlx_error(e: tower_sessions_sqlx_store::sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(format!("SQLite: {e}"))
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

impl CheckedSqlite {
    pub(super) fn new(store: SqliteStore, pool: SqlitePool, path: PathBuf) -> CheckedSqlite {
        CheckedSqlite {
            store,
            pool,
            path,
            seen_at: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    /// [`check_file`](CheckedSqlite::check_file), unless the file was seen within
    /// [`HIT_CHECK_EVERY`].
    fn check_file_recently(&self) -> session_store::Result<()> {
        let now = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let seen = self.seen_at.load(Ordering::Relaxed);
        if seen != 0 && now.saturating_sub(seen) < HIT_CHECK_EVERY.as_nanos() as u64 {
            return Ok(());
        }
        self.check_file()?;
        self.seen_at.store(now.max(1), Ordering::Relaxed);
        Ok(())
    }

    /// Runs one write statement on the calling thread's connection ([`sqlite_inline_write`]);
    /// `None` means it could not run there and the caller writes through the pool instead.
    fn inline<T>(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> session_store::Result<Option<T>> {
        sqlite_inline_write(&self.path, write)
    }

    /// Runs one write statement on the calling thread, or through the pool when it cannot
    /// run there; the rows it changed.
    async fn write(&self, sql: &str, params: &[Param]) -> session_store::Result<u64> {
        if let Some(rows) = self.inline(|conn| {
            conn.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))
        })? {
            return Ok(rows as u64);
        }
        let mut query = sqlx::query(sql);
        for param in params {
            query = match param {
                Param::Text(text) => query.bind(text.as_str()),
                Param::Blob(blob) => query.bind(blob.as_slice()),
            };
        }
        Ok(query
            .execute(&self.pool)
            .await
            .map_err(sqlx_error)?
            .rows_affected())
    }

    async fn check(&self) -> session_store::Result<()> {
        self.check_file()
    }

    /// One `stat` on the caller's thread, not a hop to the blocking pool (`tokio::fs`): it runs
    /// before every read and write of the file (and for cache hits at most every
    /// [`HIT_CHECK_EVERY`]), and SQLite has to live on a local filesystem anyway (SQLite does
    /// not support network filesystems), where a `stat` takes microseconds.
    fn check_file(&self) -> session_store::Result<()> {
        match self.path.try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err(session_store::Error::Backend(format!(
                "the SQLite file {} is gone",
                self.path.display()
            ))),
            Err(e) => Err(session_store::Error::Backend(format!(
                "cannot check the SQLite file {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// Deletes the expired records, as tower-sessions-sqlx-store's `delete_expired` does (the
    /// same comparison), and says which: the read cache forgets them.
    pub(super) async fn delete_expired_ids(&self) -> session_store::Result<Vec<Id>> {
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "delete from {TABLE} where datetime(expiry_date) < datetime('now') returning id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sqlx_error)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }
}

/// A cached record is answered only while the file is there: the "file gone → 503" rule holds
/// for hits as for reads.
impl CacheableStore for CheckedSqlite {
    fn before_hit(&self) -> session_store::Result<()> {
        self.check_file_recently()
    }
}

#[async_trait]
impl SessionStore for CheckedSqlite {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.check().await?;
        let data = encode(record)?;
        let expiry = rfc3339(record.expiry_date)?;
        // tower-sessions-sqlx-store's create: `insert or abort`, a new id while the id is taken.
        let sql =
            format!("insert or abort into {TABLE} (id, data, expiry_date) values (?1, ?2, ?3)");
        let created = self.inline(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let mut id = record.id;
            loop {
                match statement.execute(rusqlite::params![id.to_string(), data, expiry]) {
                    Ok(_) => return Ok(id),
                    Err(e) if is_unique_violation(&e) => id = Id::default(),
                    Err(e) => return Err(e),
                }
            }
        })?;
        match created {
            Some(id) => {
                record.id = id;
                Ok(())
            }
            None => self.store.create(record).await,
        }
    }
    /// Updates a live record only ([`RecordStore`]'s contract); tower-sessions-sqlx-store's
    /// own `save` is an upsert, which brought back a session signed out meanwhile.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.check().await?;
        let sql = format!(
            "update {TABLE} set data = ?1, expiry_date = ?2 where id = ?3 and expiry_date > ?4"
        );
        let [id, data, expiry] = columns(record)?;
        self.write(&sql, &[data, expiry, id, now()?]).await?;
        Ok(())
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.check().await?;
        match sqlite_fast_read(&self.path, session_id) {
            Ok(record) => Ok(record),
            Err(e) => {
                tracing::debug!(error = %e, "SQLite read on the calling thread failed; reading through the pool");
                self.store.load(session_id).await
            }
        }
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.check().await?;
        let sql = format!("delete from {TABLE} where id = ?1");
        self.write(&sql, &[Param::Text(session_id.to_string())])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl RecordStore for CheckedSqlite {
    async fn put(&self, record: &Record) -> session_store::Result<()> {
        self.check().await?;
        // tower-sessions-sqlx-store's save: `insert … on conflict(id) do update`.
        let sql = format!(
            "insert into {TABLE} (id, data, expiry_date) values (?1, ?2, ?3) \
             on conflict(id) do update set data = excluded.data, expiry_date = excluded.expiry_date"
        );
        self.write(&sql, &columns(record)?).await?;
        Ok(())
    }
    async fn insert_new(&self, record: &Record) -> session_store::Result<bool> {
        self.check().await?;
        // One statement: a new row, or the row of an expired record taken over; a live
        // record's row is left alone and nothing is written (no row affected).
        let sql = format!(
            "insert into {TABLE} (id, data, expiry_date) values (?1, ?2, ?3) \
             on conflict(id) do update set data = excluded.data, expiry_date = excluded.expiry_date \
             where {TABLE}.expiry_date <= ?4"
        );
        let [id, data, expiry] = columns(record)?;
        Ok(self.write(&sql, &[id, data, expiry, now()?]).await? > 0)
    }
}

/// A value bound to a write statement, on the calling thread's connection or through the pool.
enum Param {
    Text(String),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(text) => text.to_sql(),
            Param::Blob(blob) => blob.to_sql(),
        }
    }
}

/// A record's row: id, data (the MessagePack of the whole record), expiry.
fn columns(record: &Record) -> session_store::Result<[Param; 3]> {
    Ok([
        Param::Text(record.id.to_string()),
        Param::Blob(encode(record)?),
        Param::Text(rfc3339(record.expiry_date)?),
    ])
}

fn now() -> session_store::Result<Param> {
    rfc3339(OffsetDateTime::now_utc()).map(Param::Text)
}

/// An expiry as sqlx writes an `OffsetDateTime` into SQLite (RFC 3339 text), so rows written
/// on either path compare alike (the table compares `expiry_date` as text).
fn rfc3339(at: OffsetDateTime) -> session_store::Result<String> {
    at.format(&Rfc3339)
        .map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

thread_local! {
    /// One plain SQLite connection per runtime thread and database file.
    static SQLITE_CONNECTIONS: std::cell::RefCell<HashMap<PathBuf, rusqlite::Connection>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Runs `f` with this thread's connection to `path`, opening it on first use. `busy_timeout`
/// is 0: a lock held by another connection is an error here, never a wait on a runtime thread.
fn with_thread_connection<T>(
    path: &Path,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    SQLITE_CONNECTIONS.with(|connections| {
        let mut connections = connections.borrow_mut();
        let conn = match connections.entry(path.to_path_buf()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(Duration::ZERO)?;
                // As the pool's connections (open_sqlite): the database is in WAL mode, and
                // a commit does not wait for the disk. SQLite's automatic checkpoint (at 1000
                // WAL pages) stays on: run by the writing connection itself, it keeps the log
                // bounded under constant load where a separate passive checkpoint every few
                // hundred writes was starved (the log grew past 300 MB in 10 s of sign-ins).
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                e.insert(conn)
            }
        };
        f(conn)
    })
}

/// Runs one write on the calling thread, for the same reason reads do ([`sqlite_fast_read`]):
/// through sqlx each write is one or more hand-offs to its worker thread (three for a
/// `create`: begin, insert, commit), which were most of a sign-in's CPU on SQLite
/// (docs/BENCHMARKS.md). `Ok(None)` when the write could not run here — the file could not be
/// opened on this thread, or another connection holds the write lock (`SQLITE_BUSY`,
/// `SQLITE_LOCKED`) — and nothing was written: the caller then writes through the pool, whose
/// calls wait for the lock within the store timeout. A single statement in autocommit mode is
/// all or nothing, so any other error is the write's own and is returned as is.
fn sqlite_inline_write<T>(
    path: &Path,
    write: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> session_store::Result<Option<T>> {
    let mut opened = false;
    let result = with_thread_connection(path, |conn| {
        opened = true;
        write(conn)
    });
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if !opened || is_busy(&e) => {
            tracing::debug!(error = %e, "SQLite write on the calling thread could not run; writing through the pool");
            Ok(None)
        }
        Err(e) => Err(session_store::Error::Backend(format!("SQLite: {e}"))),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Reads a session on the calling thread. sqlx runs every SQLite statement on a worker
/// thread of its own and hands rows back through a channel; for the one-row read every
/// `/auth` makes, that hand-off (futex wake-ups, context switches) was two thirds of the
/// request's CPU (docs/BENCHMARKS.md). The read is the same SELECT on the same file and
/// table, with the same decoding (MessagePack); with WAL a reader never waits for a writer,
/// and `busy_timeout` 0 means a lock is an error here, never a wait: any error falls back to
/// the pool, whose calls are bounded by the store timeout. Every write (on the calling thread
/// or through the pool) has finished before the next read starts, so a sign-out is seen at
/// once.
pub(super) fn sqlite_fast_read(path: &Path, id: &Id) -> Result<Option<Record>, rusqlite::Error> {
    with_thread_connection(path, |conn| {
        let mut statement = conn.prepare_cached("select data from tower_sessions where id = ?1")?;
        let mut rows = statement.query([id.to_string()])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let data = row.get_ref(0)?.as_blob()?;
        let record: Record = rmp_serde::from_slice(data).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
        })?;
        // The pool's query compares expiry_date in SQL; the decoded record carries the same.
        Ok((record.expiry_date > OffsetDateTime::now_utc()).then_some(record))
    })
}
