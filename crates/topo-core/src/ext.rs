//! [`ConnExt`]: conveniences over any [`Conn`], implemented for every connection.

use std::time::Duration;

use async_trait::async_trait;

use crate::conn::{Conn, LockGuard};
use crate::error::{ErrorKind, Result, TopoError};
use crate::lock::LockOptions;
use crate::types::{Fence, Version};

/// Helpers built on the [`Conn`] primitives. Implemented for every `Conn` (including
/// `dyn Conn`); do not implement it yourself.
#[async_trait]
pub trait ConnExt: Conn {
    /// `get`, with `None` instead of `NoNode`.
    async fn get_opt(&self, path: &str) -> Result<Option<(Vec<u8>, Version)>> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_no_node() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the lock on `dir`, waiting while others hold it ([`LockOptions::blocking`]).
    async fn lock(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        self.lock_with(dir, contents, LockOptions::blocking()).await
    }

    /// As [`ConnExt::lock`] with `ttl` as the lease or session time-to-live of the entry
    /// (etcd, local; ignored by backends whose locks are session-bound).
    async fn lock_with_ttl(&self, dir: &str, contents: &str, ttl: Duration) -> Result<LockGuard> {
        self.lock_with(dir, contents, LockOptions::blocking().with_ttl(ttl))
            .await
    }

    /// A named lock: as [`ConnExt::lock`] but `dir` need not exist, and the entry's TTL is
    /// Vitess's `NamedLockTTL` (24 h) where the backend has TTLs.
    async fn lock_name(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        self.lock_with(dir, contents, LockOptions::named()).await
    }

    /// As [`ConnExt::lock`] but never waits behind a holder.
    ///
    /// # Errors
    /// `NodeExists` (`lock already exists at path <dir>`) at once when the lock is held or
    /// waited for; `NoNode` as `lock`.
    async fn try_lock(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        self.lock_with(dir, contents, LockOptions::try_once()).await
    }

    /// [`ConnExt::lock`] that gives up after `timeout` with `Timeout` naming `dir`. The
    /// abandoned acquisition leaves no entry behind.
    async fn lock_timeout(
        &self,
        dir: &str,
        contents: &str,
        timeout: Duration,
    ) -> Result<LockGuard> {
        match tokio::time::timeout(timeout, self.lock(dir, contents)).await {
            Ok(r) => r,
            Err(_) => Err(TopoError::Timeout(dir.to_string())),
        }
    }

    /// Read-modify-write of one file, retried only on `BadVersion` (and on `NodeExists` when
    /// the file was absent and another writer created it first).
    ///
    /// `update` gets the current contents (`None` when absent) and returns the new ones, or
    /// `Err(NoUpdateNeeded)` to skip the write, in which case this returns `Ok(None)`. Any
    /// other error from `update` is returned as is. With a `fence`, each write is fenced.
    async fn read_modify_write<F>(
        &self,
        path: &str,
        fence: Option<&Fence>,
        mut update: F,
    ) -> Result<Option<Version>>
    where
        F: FnMut(Option<&[u8]>) -> Result<Vec<u8>> + Send,
    {
        loop {
            let current = self.get_opt(path).await?;
            let new = match update(current.as_ref().map(|(c, _)| c.as_slice())) {
                Ok(new) => new,
                Err(e) if e.is(ErrorKind::NoUpdateNeeded) => return Ok(None),
                Err(e) => return Err(e),
            };
            let written = match (&current, fence) {
                (Some((_, v)), None) => self.update(path, &new, Some(v)).await,
                (Some((_, v)), Some(f)) => self.update_fenced(f, path, &new, Some(v)).await,
                (None, None) => self.create(path, &new).await,
                (None, Some(f)) => self.create_fenced(f, path, &new).await,
            };
            match written {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.is(ErrorKind::BadVersion) || e.is(ErrorKind::NodeExists) => {
                    tracing::debug!(path, "read-modify-write raced another writer; retrying");
                }
                // A file deleted between read and write: start over from "absent".
                Err(e) if e.is_no_node() && current.is_some() => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<C: Conn + ?Sized> ConnExt for C {}
