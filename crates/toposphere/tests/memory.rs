//! The typed-layer suite over the memory backend.

use std::sync::Arc;

use topo_core::memory::MemoryFactory;
use topo_core::Factory;
use toposphere::suite::SuiteBackend;

/// One memory factory per check: every server of a check shares its stores.
struct Memory(Arc<MemoryFactory>);

impl SuiteBackend for Memory {
    fn factory(&self) -> Arc<dyn Factory> {
        self.0.clone()
    }
    fn address(&self) -> String {
        "mem".into()
    }
}

async fn backend() -> Option<Memory> {
    Some(Memory(Arc::new(MemoryFactory::new())))
}

mod memory {
    toposphere::typed_suite!(memory, crate::backend);
}
