//! The wasmtime engine: configuration (pooling allocator, epoch interruption), the epoch ticker thread, and the
//! on-disk cache of precompiled components keyed by content hash and engine compatibility hash.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::host::HostOptions;

/// Build the engine for `options`.
pub(crate) fn build_engine(options: &HostOptions) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let n = options.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memory_size((options.max_memory_mib as usize).saturating_mul(1 << 20));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Increments the engine's epoch every tick until dropped; a store's CPU budget is a number of ticks.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Compiles components, through a disk cache when a directory is configured.
#[derive(Clone)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    fn key(engine: &Engine, wasm: &[u8]) -> String {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("{}-{:016x}.cwasm", hex::encode(Sha256::digest(wasm)), h.finish())
    }

    /// Compile `wasm`, or load its precompiled form from the cache. Blocking: call from `spawn_blocking`.
    pub(crate) fn compile(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, wasm);
        };
        let path = dir.join(Self::key(engine, wasm));
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring an unusable cached component: {e}")
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        let bytes = component.serialize()?;
        // Write then rename, so a concurrent reader never sees half a file.
        if std::fs::create_dir_all(dir).is_ok() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .is_err()
            {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(dir = %dir.display(), "could not write the component cache");
            }
        }
        Ok(component)
    }
}

/// Load a precompiled component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &std::path::Path) -> wasmtime::Result<Component> {
    // Read into memory rather than `deserialize_file`: a mapped file truncated underneath us would be SIGBUS.
    let bytes = std::fs::read(path)?;
    // SAFETY: wasmtime requires that the bytes were produced by `Engine::precompile_component` of a compatible
    // engine and not tampered with. The file lives in the host's own cache directory (which must not be writable
    // by plugins or other users), is named by the SHA-256 of its source and the engine's compatibility hash, and
    // was written by `compile` above with write-then-rename; wasmtime also checks the header and engine settings.
    unsafe { Component::deserialize(engine, &bytes) }
}
