//! # topo-core
//!
//! The base of Toposphere: the [`Conn`] contract that every topology backend implements,
//! the error kinds of Vitess's topology service ([`TopoError`]), Go-compatible key rules
//! ([`path`]), the in-memory reference backend ([`memory`]), connection wrappers (statistics,
//! read-concurrency limit, read-only mode, fault injection: [`wrap`]) and the conformance
//! suite every backend runs (`conformance`, with the feature `conformance`).
//!
//! ## Layout
//! - [`conn`]: the `Conn`, `LockDescriptor`, `LeaderParticipation` and `Factory` traits.
//! - [`types`]: `Version`, `DirEntry`, `KvInfo`, `WatchData`, `RecursiveChange`, `Fence`.
//! - [`watch`]: `WatchStream`, which enforces the watch contract for every backend.
//! - [`ext`]: `ConnExt` helpers (`get_opt`, the lock short forms, `lock_timeout`,
//!   `read_modify_write`).
//! - [`backoff`]: `Backoff`, the shared retry pause policy.
//! - [`lock`]: the lock layout, kinds and options every backend shares.
//! - [`error`], [`path`], [`memory`], [`wrap`].
//!
//! ## Feature flags
//! - `conformance`: the shared test suite and its `conformance_tests!` macro.

pub mod backoff;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod conn;
pub mod duration;
pub mod election;
pub mod error;
pub mod ext;
pub mod limit;
pub mod lock;
pub mod memory;
pub mod path;
pub mod types;
pub mod watch;
pub mod wrap;

pub use conn::{Conn, Factory, LeaderParticipation, LockDescriptor, LockGuard};
pub use error::{ErrorKind, Result, TopoError};
pub use ext::ConnExt;
pub use limit::ValueLimit;
pub use lock::{LockKind, LockOptions};
pub use types::{
    dir_entries, DirEntry, DirEntryType, Fence, KvInfo, RecursiveChange, TlsFiles, Version,
    WatchData,
};
pub use watch::{WatchSender, WatchStream};

/// The `Conn` trait object, as the typed layer holds it.
pub type DynConn = dyn Conn;
