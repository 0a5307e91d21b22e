//! `kv`: the plugin's key-value store, namespaced by plugin name in the embedder's [`crate::KvBackend`], with the
//! administrator's byte quota. Needs `kv` requested and granted.

use wasmtime::component::{HasSelf, Linker};

use crate::capability::Capability;
use crate::services::KvError;
use crate::state::PluginState;
use crate::wit::latest::imfree::plugin::kv;
use crate::wit::latest::imfree::plugin::types::HostError;

const MAX_KEY: usize = 256;

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    kv::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

fn unavailable(e: KvError) -> HostError {
    HostError::Unavailable(e.to_string())
}

fn valid_key(key: &str) -> Result<(), HostError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(HostError::Invalid(format!("kv keys must be 1 to {MAX_KEY} bytes")));
    }
    Ok(())
}

impl kv::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Kv)?;
            valid_key(&key)?;
            ctx.services.kv.get(&ctx.identity.name, &key).await.map_err(unavailable)
        }
        .await)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Kv)?;
            valid_key(&key)?;
            let ns = &ctx.identity.name;
            let used = ctx.services.kv.usage(ns).await.map_err(unavailable)?;
            let old = ctx
                .services
                .kv
                .get(ns, &key)
                .await
                .map_err(unavailable)?
                .map(|v| (key.len() + v.len()) as u64);
            let after = used - old.unwrap_or(0).min(used) + (key.len() + value.len()) as u64;
            if after > ctx.limits.kv_quota_bytes {
                return Err(HostError::QuotaExceeded(format!(
                    "kv quota of {} bytes would be exceeded ({after} bytes)",
                    ctx.limits.kv_quota_bytes
                )));
            }
            ctx.services.kv.set(ns, &key, value).await.map_err(unavailable)
        }
        .await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Kv)?;
            valid_key(&key)?;
            ctx.services
                .kv
                .delete(&ctx.identity.name, &key)
                .await
                .map_err(unavailable)
        }
        .await)
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Kv)?;
            ctx.services
                .kv
                .list_keys(&ctx.identity.name, &prefix)
                .await
                .map_err(unavailable)
        }
        .await)
    }
}
