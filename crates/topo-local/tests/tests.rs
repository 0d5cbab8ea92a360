//! The conformance and typed-layer suites on a real database file.

use std::sync::Arc;

use async_trait::async_trait;
use topo_core::conformance::ConnFactory;
use topo_core::{Conn, Factory, Result};
use topo_local::{LocalConn, LocalFactory, LocalOptions};
use toposphere::suite::SuiteBackend;

/// Each suite run gets its own file; every `open` is an independent connection (its own
/// poller), as another process's would be.
struct LocalSuite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl LocalSuite {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("topo.db");
        LocalSuite { _dir: dir, path }
    }
}

#[async_trait]
impl ConnFactory for LocalSuite {
    async fn open(&self, root: &str) -> Result<Arc<dyn Conn>> {
        Ok(Arc::new(LocalConn::open(
            &self.path,
            root,
            LocalOptions::default(),
        )?))
    }
}

async fn factory() -> Option<LocalSuite> {
    Some(LocalSuite::new())
}

struct LocalBackend {
    suite: LocalSuite,
    factory: Arc<LocalFactory>,
}

impl SuiteBackend for LocalBackend {
    fn factory(&self) -> Arc<dyn Factory> {
        self.factory.clone()
    }
    fn address(&self) -> String {
        self.suite.path.display().to_string()
    }
}

async fn backend() -> Option<LocalBackend> {
    Some(LocalBackend {
        suite: LocalSuite::new(),
        factory: Arc::new(LocalFactory::new(LocalOptions::default())),
    })
}

mod local {
    topo_core::conformance_tests!(local, crate::factory);
    toposphere::typed_suite!(local, crate::backend);
}
