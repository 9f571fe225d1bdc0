//! The signed-in users this process has parsed lately, keyed by the exact JSON their session
//! stores: `/auth` and `/me` answer a returning session without parsing its user again.
//!
//! Parsing is a pure function of the stored string, so a hit can never be stale: a changed
//! user (a new sign-in, another replica's write) is a different string and a miss. The key is
//! the whole string, compared in full on every hit (the hash only picks the slot); entries
//! are evicted least recently used, and the bound is `session.cache_entries` (0 turns it off).
//! Profiled before: parsing the user was 14.5 % of the instructions of a `GET /auth` on the
//! memory store (docs/BENCHMARKS.md, "Profile").

use std::{
    hash::BuildHasher,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;

use super::{ActiveUser, SessionError, parse_user_json};
use crate::sync;

/// Below this many entries one lock; above it, entries spread over [`SHARDS`] locks (the
/// same rule as the store's read cache, `store/cache.rs`).
const SHARDED_FROM: usize = 256;
const SHARDS: usize = 16;

/// Parsed users by their stored JSON, bounded, least recently used out first.
#[derive(Debug)]
pub(crate) struct ParsedUsers {
    shards: Box<[Mutex<LruCache<u64, Entry>>]>,
    hasher: foldhash::fast::RandomState,
}

#[derive(Debug)]
struct Entry {
    json: Box<str>,
    user: Arc<ActiveUser>,
}

impl ParsedUsers {
    /// Room for `entries` users (0: nothing kept, every read parses).
    pub(crate) fn new(entries: usize) -> ParsedUsers {
        let shards = match entries {
            0 => 0,
            n if n < SHARDED_FROM => 1,
            _ => SHARDS,
        };
        let per_shard = entries.div_ceil(shards.max(1));
        let shards = (0..shards)
            .filter_map(|_| NonZeroUsize::new(per_shard))
            .map(|cap| Mutex::new(LruCache::new(cap)))
            .collect();
        ParsedUsers {
            shards,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The user `json` holds: the one parsed before from the very same string, else parsed
    /// now (and kept).
    pub(crate) fn parse(&self, json: String) -> Result<Arc<ActiveUser>, SessionError> {
        if self.shards.is_empty() {
            return parse_user_json(&json).map(Arc::new);
        }
        let hash = self.hasher.hash_one(json.as_str());
        let shard = &self.shards[(hash as usize) % self.shards.len()];
        if let Some(entry) = sync::lock(shard).get(&hash)
            && *entry.json == *json
        {
            return Ok(entry.user.clone());
        }
        let user = Arc::new(parse_user_json::<ActiveUser>(&json)?);
        sync::lock(shard).put(
            hash,
            Entry {
                json: json.into_boxed_str(),
                user: user.clone(),
            },
        );
        Ok(user)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| sync::lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_json(name: &str) -> String {
        serde_json::json!({
            "identity": {
                "user": "entra:t:o", "connection": "c", "iss": "https://issuer.example/t/v2.0",
                "sub": "s", "oid": "o", "tid": "t", "name": name, "email": null,
                "email_verified": false, "preferred_username": null, "login_hint": null,
                "sid": null, "groups": ["g1"],
            },
            "issued_at": 1, "expires_at": 2,
        })
        .to_string()
    }

    #[test]
    fn the_same_json_gives_the_same_parsed_user_and_another_json_its_own() {
        let users = ParsedUsers::new(10);
        let ada = users.parse(user_json("Ada")).expect("ada");
        let again = users.parse(user_json("Ada")).expect("ada again");
        assert!(
            Arc::ptr_eq(&ada, &again),
            "the second read is the kept parse"
        );
        let grace = users.parse(user_json("Grace")).expect("grace");
        assert_eq!(grace.identity.name.as_deref(), Some("Grace"));
        assert_eq!(ada.identity.name.as_deref(), Some("Ada"));
    }

    /// The hash only picks the slot: two strings landing on one key must never answer for
    /// each other. Forced here by a cache whose every entry collides (one slot, one key).
    #[test]
    fn a_hit_needs_the_whole_string_equal_not_just_the_hash() {
        let users = ParsedUsers::new(1);
        let ada = users.parse(user_json("Ada")).expect("ada");
        let hash = users.hasher.hash_one(user_json("Grace").as_str());
        // Plant Ada's parse under Grace's hash, as a collision would.
        sync::lock(&users.shards[0]).put(
            hash,
            Entry {
                json: user_json("Ada").into_boxed_str(),
                user: ada,
            },
        );
        let grace = users.parse(user_json("Grace")).expect("grace");
        assert_eq!(grace.identity.name.as_deref(), Some("Grace"));
    }

    #[test]
    fn the_cache_is_bounded_and_zero_keeps_nothing() {
        let users = ParsedUsers::new(300);
        for i in 0..1000 {
            users.parse(user_json(&format!("user {i}"))).expect("parse");
        }
        assert!(users.len() <= 300 + SHARDS, "{}", users.len());
        let off = ParsedUsers::new(0);
        let a = off.parse(user_json("Ada")).expect("ada");
        let b = off.parse(user_json("Ada")).expect("ada");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn a_json_that_does_not_parse_is_an_error_and_not_kept() {
        let users = ParsedUsers::new(10);
        assert!(matches!(
            users.parse("{\"identity\":".into()),
            Err(SessionError::Corrupt(_))
        ));
        assert_eq!(users.len(), 0);
    }
}
