//! The conformance suite: the behaviour every backend must show, as a library.
//!
//! A backend crate runs the whole suite from its tests with one macro call:
//!
//! ```text
//! // tests/tests.rs of a backend crate
//! async fn factory() -> Option<MyFactory> { Some(MyFactory::new()) }
//! mod mybackend {
//!     topo_core::conformance_tests!(mybackend, crate::factory);
//! }
//! ```
//!
//! That expands to a module `conformance` with one `#[tokio::test]` per check; inside a
//! module named after the backend the tests are `mybackend::conformance::<check>`.
//! The factory function returns `None` when the backend's server is not available (the
//! function prints why; in strict mode it should panic instead). Each check gets a fresh,
//! unique root, so checks can run in parallel against one server. A backend that cannot
//! support a check lists it with a reason (`skip = [WaitForNewLeader => "why"]`); the test
//! then prints `skipping <backend>::conformance::<check>: <reason>`.
//!
//! The checks follow Vitess's `go/vt/topo/test` suite (directory, file, list, lock,
//! try-lock, election, watch) and add what Vitess does not test: fencing tokens, fenced
//! writes, locks outliving their TTL while held, cancelled acquisitions, watch versions as
//! compare-and-set versions, concurrent creates and compare-and-set counters, refusal of
//! paths that climb above the root, `close()` (locks released, watches and waits ended,
//! later calls `Interrupted`), concurrent `try_lock` calls, and an abandoned acquisition
//! cleaned up by the time `close()` returns.

mod checks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::conn::Conn;
use crate::error::Result;

pub use checks::*;

/// Opens connections for the suite.
#[async_trait]
pub trait ConnFactory: Send + Sync + 'static {
    /// A new, independent client (its own session or lease where the backend has them) on
    /// `root`. Two calls with the same root must see the same data.
    async fn open(&self, root: &str) -> Result<Arc<dyn Conn>>;
}

/// A root no other check of this process uses: `/conformance-<pid>-<n>-<check>`.
pub fn fresh_root(check: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "/conformance-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        check
    )
}

/// For fault tests: waits until `guard.check()` succeeds, tolerating errors such as
/// timeouts while a cluster fails over, for at most `within`.
///
/// # Panics
/// When the check reports `LockLost`, or does not succeed in time (naming `what`).
pub async fn await_lock_held(
    guard: &dyn crate::LockDescriptor,
    within: std::time::Duration,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match guard.check().await {
            Ok(()) => return,
            Err(e) if e.is(crate::ErrorKind::LockLost) => panic!("{what}: the lock was lost: {e}"),
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: no answer in {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Runs one check against `factory` under a fresh root, or prints why it is skipped.
pub async fn run<F: ConnFactory>(
    backend: &str,
    factory: Option<F>,
    check: Check,
    skips: &[(Check, &str)],
) {
    if let Some((_, reason)) = skips.iter().find(|(c, _)| *c == check) {
        eprintln!(
            "skipping {backend}::conformance::{}: {reason}",
            check.name()
        );
        return;
    }
    let Some(factory) = factory else {
        eprintln!(
            "skipping {backend}::conformance::{}: backend not available",
            check.name()
        );
        return;
    };
    let root = fresh_root(check.name());
    check.run(&factory, &root).await;
}

/// Expands the suite into a module `conformance` with one `#[tokio::test]` per check for a
/// backend; invoke it inside a module named after the backend.
///
/// `conformance_tests!(name, path::to::factory_fn)` or
/// `conformance_tests!(name, path::to::factory_fn, skip = [Check => "reason", ...])`, where
/// the factory function is `async fn() -> Option<impl ConnFactory>` and the path is absolute
/// (`crate::factory`). The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $factory:path) => {
        $crate::conformance_tests!($backend, $factory, skip = []);
    };
    ($backend:ident, $factory:path, skip = [$($skip:ident => $reason:expr),* $(,)?]) => {
        $crate::__conformance_each!($backend, $factory, [$(($crate::conformance::Check::$skip, $reason)),*];
            directory Directory, file File, list List, get_version GetVersion,
            lock_timeout LockTimeout, lock_unblocks LockUnblocks, lock_name LockName,
            lock_needs_directory LockNeedsDirectory,
            try_lock_timeout TryLockTimeout, try_lock_unblocks TryLockUnblocks,
            election Election, wait_for_new_leader WaitForNewLeader, leader_fence LeaderFence,
            watch Watch, watch_interrupt WatchInterrupt, watch_recursive WatchRecursive,
            fencing_token_increases FencingTokenIncreases, fenced_write FencedWrite,
            lock_survives_ttl LockSurvivesTtl, dropped_lock_acquisition DroppedLockAcquisition,
            watch_version_cas WatchVersionCas, concurrent_create ConcurrentCreate,
            cas_increments CasIncrements, path_climbing_refused PathClimbingRefused,
            value_limit ValueLimit,
            close Close, try_lock_concurrent TryLockConcurrent,
            abandoned_acquisition_then_close AbandonedAcquisitionThenClose
        );
    };
}

/// Internal: one test function per check (used by [`conformance_tests!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ($backend:ident, $factory:path, $skips:tt; $($fn_name:ident $variant:ident),* $(,)?) => {
        mod conformance {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $fn_name() {
                    let skips: &[($crate::conformance::Check, &str)] = &$skips;
                    $crate::conformance::run(
                        stringify!($backend),
                        $factory().await,
                        $crate::conformance::Check::$variant,
                        skips,
                    )
                    .await;
                }
            )*
        }
    };
}
