//! The Redis session store: records under `session.redis_key_prefix`, expired by Redis.

use std::time::Duration;

use async_trait::async_trait;
use fred::{
    interfaces::{ClientLike, KeysInterface},
    prelude::{Builder, Config as RedisConfig, Options, Pool as RedisPool, ReconnectPolicy},
    types::{Expiration, SetOptions},
};
use secrecy::ExposeSecret;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store::{self},
};

use crate::config::RedisSettings;

use super::{RecordStore, StoreError};

pub(super) fn open_redis(
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<RedisPool, StoreError> {
    let config = RedisConfig::from_url(settings.url.expose_secret()).map_err(|e| {
        StoreError::Redis {
            // fred's message describes the part it could not parse, not the URL itself,
            // which may hold a password.
            problem: format!("not a usable Redis URL: {}", e.details()),
            fix: "write it like \"redis://host:6379\", \"redis://user:password@host:6379/0\" or \"rediss://host:6380\" (TLS)",
        }
    })?;
    let mut config = config;
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
