//! The Redis session store: records under `session.redis_key_prefix`, expired by Redis — and
//! the tracking connection that keeps this process's read cache of them honest.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{
    interfaces::{ClientLike, KeysInterface, TrackingInterface},
    prelude::{
        Builder, Client, Config as RedisConfig, Options, Pool as RedisPool, ReconnectPolicy,
    },
    types::{Expiration, Key, RespVersion, SetOptions, Value},
};
use secrecy::ExposeSecret;
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store::{self},
};

use crate::config::RedisSettings;

use super::{
    RecordStore, StoreError,
    cache::{CacheableStore, SessionCache},
};

fn redis_config(settings: &RedisSettings) -> Result<RedisConfig, StoreError> {
    RedisConfig::from_url(settings.url.expose_secret()).map_err(|e| {
        StoreError::Redis {
            // fred's message describes the part it could not parse, not the URL itself,
            // which may hold a password.
            problem: format!("not a usable Redis URL: {}", e.details()),
            fix: "write it like \"redis://host:6379\", \"redis://user:password@host:6379/0\" or \"rediss://host:6380\" (TLS)",
        }
    })
}

pub(super) fn open_redis(
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<RedisPool, StoreError> {
    let mut config = redis_config(settings)?;
    // Keep retrying when Redis is down at startup, as after a connection loss.
    config.fail_fast = false;
    let pool = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            // A command is tried once: a retry would outlive the store timeout anyway.
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        // Reconnect forever, every half second, so service resumes by itself.
        .set_policy(ReconnectPolicy::new_constant(0, 500))
        .build_pool(settings.pool_size)
        .map_err(|e| StoreError::Redis {
            problem: format!("cannot set up the Redis client: {}", e.details()),
            fix: "check session.redis_url and session.redis_pool_size",
        })?;
    // The connection tasks run until `quit`; their handles are not needed.
    drop(pool.connect_pool());
    Ok(pool)
}

/// Sessions in Redis under `session.redis_key_prefix`. The record encoding (MessagePack) and
/// the commands (`SET … EXAT … NX` to create, `XX` to save) are those of
/// tower-sessions-redis-store, which has no key prefix.
#[derive(Debug)]
pub(super) struct RedisSessions {
    pub(super) pool: RedisPool,
    pub(super) prefix: String,
}

impl RedisSessions {
    fn key(&self, id: &Id) -> String {
        format!("{}{id}", self.prefix)
    }

    /// A client for one command. While every connection is down, fred would queue commands
    /// until it reconnects; failing at once instead answers requests in milliseconds rather
    /// than after the store timeout (which still bounds a Redis that is connected but not
    /// answering).
    fn client(&self) -> session_store::Result<fred::clients::WithOptions<fred::clients::Client>> {
        if !self.pool.clients().iter().any(|c| c.is_connected()) {
            return Err(session_store::Error::Backend(
                "Redis is not connected (reconnecting)".into(),
            ));
        }
        // fail_fast: a command whose connection drops is failed, not kept for the reconnect.
        Ok(self.pool.next_connected().with_options(&Options {
            fail_fast: true,
            ..Default::default()
        }))
    }

    /// `SET key value EXAT expiry [NX|XX]`; true when Redis wrote.
    async fn set(
        &self,
        record: &Record,
        options: Option<SetOptions>,
    ) -> session_store::Result<bool> {
        let client = self.client()?;
        let value =
            rmp_serde::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let expire = Expiration::EXAT(record.expiry_date.unix_timestamp());
        let set: Option<String> = client
            .set(
                self.key(&record.id),
                value.as_slice(),
                Some(expire),
                options,
                false,
            )
            .await
            .map_err(redis_error)?;
        // `SET … NX/XX` answers OK when it wrote and nil when the condition failed.
        Ok(set.is_some())
    }
}

#[async_trait]
impl RecordStore for RedisSessions {
    async fn put(&self, record: &Record) -> session_store::Result<()> {
        self.set(record, None).await.map(|_| ())
    }
    async fn insert_new(&self, record: &Record) -> session_store::Result<bool> {
        // NX is atomic in Redis: of several replicas, exactly one writes.
        self.set(record, Some(SetOptions::NX)).await
    }
}

/// Hits need no check of their own: the cache is trusted only while [`Tracking`] is up.
impl CacheableStore for RedisSessions {}

fn redis_error(e: fred::error::Error) -> session_store::Error {
    session_store::Error::Backend(format!("Redis: {e}"))
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        while !self.set(record, Some(SetOptions::NX)).await? {
            record.id = Id::default();
        }
        Ok(())
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // XX: a session deleted meanwhile (expired, cycled at sign-in, signed out) is not
        // brought back; that nothing was written is the contract's `Ok` ([`RecordStore`]).
        self.set(record, Some(SetOptions::XX)).await.map(|_| ())
    }
    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let data: Option<Vec<u8>> = self
            .client()?
            .get(self.key(session_id))
            .await
            .map_err(redis_error)?;
        data.map(|d| {
            rmp_serde::from_slice(&d).map_err(|e| session_store::Error::Decode(e.to_string()))
        })
        .transpose()
    }
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let _: i64 = self
            .client()?
            .del(self.key(session_id))
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

/// Redis's client-side caching (<https://redis.io/docs/latest/develop/reference/client-side-caching/>):
/// one RESP3 connection per process, apart from the pool, in broadcasting mode —
/// `CLIENT TRACKING ON BCAST PREFIX <session.redis_key_prefix>` — on which Redis pushes an
/// invalidation message for every key under the prefix that anyone changes, deletes or that
/// expires. Each message drops that record from this process's [`SessionCache`].
///
/// Broadcasting rather than the default mode: the default mode tracks the keys each
/// connection read, so every pool connection would have to track (and be re-tracked after
/// each of its reconnects), and Redis would keep a table entry per key and reading
/// connection. Broadcasting costs Redis no memory per key, keeps one connection to watch,
/// and sends each write to every replica — one small message per replica per write, while
/// writes (sign-ins, sign-outs, the idle refresh at most every tenth of the idle timeout) are
/// rare next to reads (every `/auth`).
///
/// The cache is trusted only while this connection is up and tracking: it is emptied when the
/// connection is lost (messages may have been lost with it) and again once tracking is back
/// (anything may have changed unseen in between). A heartbeat notices a connection that
/// went silent without closing. The task stops when this value is dropped.
pub(super) struct Tracking(JoinHandle<()>);

impl Drop for Tracking {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long after losing the tracking connection the next attempt starts.
const TRACKING_RETRY: Duration = Duration::from_millis(500);
/// How often the tracking connection is pinged: the longest a connection that went silent
/// without closing (a network partition) goes unnoticed is about this plus the store timeout.
const TRACKING_HEARTBEAT: Duration = Duration::from_secs(1);
/// Invalidation messages fred buffers for the task; if it falls further behind, the whole
/// cache is emptied instead ([`RecvError::Lagged`]).
const INVALIDATION_BUFFER: usize = 4096;

impl Tracking {
    pub(super) fn start(
        settings: &RedisSettings,
        timeout: Duration,
        cache: Arc<SessionCache>,
    ) -> Result<Tracking, StoreError> {
        let mut config = redis_config(settings)?;
        // Invalidation messages are RESP3 pushes on the same connection (RESP2 would need a
        // second, subscribed connection to redirect them to).
        config.version = RespVersion::RESP3;
        // This task reconnects itself, so that the cache is emptied between connections.
        config.fail_fast = true;
        let prefix = settings.key_prefix.clone();
        Ok(Tracking(tokio::spawn(async move {
            let mut was_up = true;
            loop {
                let lost = track(&config, timeout, &prefix, &cache).await;
                cache.suspend();
                if cache_was_up(&mut was_up, &lost) {
                    tracing::warn!(error = %lost.error, "the Redis tracking connection is down: sessions are read from Redis on every request until it is back (the session cache needs Redis 6 or later)");
                } else {
                    tracing::debug!(error = %lost.error, "the Redis tracking connection is still down");
                }
                tokio::time::sleep(TRACKING_RETRY).await;
            }
        })))
    }
}

/// Why a tracking connection ended, and whether it had been tracking.
struct Lost {
    error: fred::error::Error,
    was_tracking: bool,
}

/// Whether to warn: the first failure, and the first after each time tracking was up.
fn cache_was_up(was_up: &mut bool, lost: &Lost) -> bool {
    let warn = *was_up || lost.was_tracking;
    *was_up = false;
    warn
}

/// Aborts fred's connection task when dropped, closing the connection.
struct ConnectionTask(fred::types::ConnectHandle);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One tracking connection, from connecting until it is lost.
async fn track(
    config: &RedisConfig,
    timeout: Duration,
    prefix: &str,
    cache: &SessionCache,
) -> Lost {
    let lost = |error| Lost {
        error,
        was_tracking: false,
    };
    let client: Client = match Builder::from_config(config.clone())
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            p.broadcast_channel_capacity = INVALIDATION_BUFFER;
        })
        .build()
    {
        Ok(client) => client,
        Err(e) => return lost(e),
    };
    // Subscribed before connecting: no message after tracking starts is missed.
    let mut invalidations = client.invalidation_rx();
    let mut connection = match client.init().await {
        Ok(task) => ConnectionTask(task),
        Err(e) => return lost(e),
    };
    let prefixes: Vec<String> = if prefix.is_empty() {
        Vec::new()
    } else {
        vec![prefix.to_owned()]
    };
    if let Err(e) = client
        .start_tracking(prefixes, true, false, false, false)
        .await
    {
        return lost(e);
    }
    cache.resume();
    tracing::debug!("the Redis tracking connection is up: sessions are read from the cache");
    let lost = |error| Lost {
        error,
        was_tracking: true,
    };
    let heartbeat = async {
        loop {
            tokio::time::sleep(TRACKING_HEARTBEAT).await;
            if let Err(e) = client.ping::<Value>(None).await {
                return e;
            }
        }
    };
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            message = invalidations.recv() => match message {
                Ok(invalidation) => {
                    for key in &invalidation.keys {
                        if let Some(id) = session_id(prefix, key) {
                            cache.invalidate(&id);
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the session cache fell behind Redis's invalidation messages; emptied it");
                    cache.flush();
                }
                Err(RecvError::Closed) => {
                    return lost(fred::error::Error::new(
                        fred::error::ErrorKind::IO,
                        "the invalidation stream closed",
                    ));
                }
            },
            e = &mut heartbeat => return lost(e),
            ended = &mut connection.0 => {
                let error = match ended {
                    Ok(Err(e)) => e,
                    _ => fred::error::Error::new(fred::error::ErrorKind::IO, "the connection closed"),
                };
                return lost(error);
            }
        }
    }
}

/// The session id a Redis key names, if it is one of ours.
fn session_id(prefix: &str, key: &Key) -> Option<Id> {
    let rest = key.as_bytes().strip_prefix(prefix.as_bytes())?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}
