//! Lock helpers: a poisoned lock (a panic while it was held) is taken over, not propagated.
//!
//! Every lock in entrance guards plain data (caches, rings, counters) whose every write leaves
//! it consistent, so the value after another thread's panic is still good to use; turning the
//! poison into a second panic would only take more requests down.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
