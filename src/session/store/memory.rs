//! The in-memory session store, for one replica and the demo, with its own expiry sweep.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store::{self, ExpiredDeletion},
};

use super::RecordStore;
use crate::sync;

/// An in-memory store whose expired records are deleted by a periodic task
/// ([`ExpiredDeletion::continuously_delete_expired`]); tower-sessions' own memory store never
/// evicts, so abandoned logins would grow it forever.
#[derive(Default)]
pub struct MemoryStore(Mutex<HashMap<Id, Record>>);

/// How many sessions, never their records: those hold pending logins (state, nonce, PKCE
/// verifier) and ID tokens. tower-sessions requires `Debug` of a store.
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Record>> {
        sync::lock(&self.0)
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
    /// Updates a live record only ([`RecordStore`]'s contract): one that is gone stays gone.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        if let Some(live) = self
            .map()
            .get_mut(&record.id)
            .filter(|r| r.expiry_date > now)
        {
            *live = record.clone();
        }
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
impl RecordStore for MemoryStore {
    async fn put(&self, record: &Record) -> session_store::Result<()> {
        self.map().insert(record.id, record.clone());
        Ok(())
    }
    async fn insert_new(&self, record: &Record) -> session_store::Result<bool> {
        let now = OffsetDateTime::now_utc();
        let mut map = self.map();
        if map.get(&record.id).is_some_and(|r| r.expiry_date > now) {
            return Ok(false);
        }
        map.insert(record.id, record.clone());
        Ok(true)
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
