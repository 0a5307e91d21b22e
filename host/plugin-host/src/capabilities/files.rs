//! `files`: the files of the bot's (or client's) conversations through the embedder's [`crate::FileStore`] —
//! describe a file message, read its contents (fetched, decrypted and checked by the client engine), send a file.
//! Needs `files` requested and granted; every file is capped at `files-max-bytes`, checked before anything is
//! fetched or sent, because the bytes land in the guest's memory.

use wasmtime::component::{HasSelf, Linker};

use crate::capabilities::messaging::sink_error;
use crate::capability::Capability;
use crate::state::PluginState;
use crate::wit::latest::imfree::plugin::files;
use crate::wit::latest::imfree::plugin::types::{FileDraft, FileInfo, HostError};

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    files::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

fn too_big(size: u64, limit: u64) -> HostError {
    HostError::QuotaExceeded(format!("a file of {size} bytes exceeds this plugin's limit of {limit} bytes (files-max-bytes)"))
}

impl files::Host for PluginState {
    async fn info(&mut self, message_id: String) -> wasmtime::Result<Result<FileInfo, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Files)?;
            ctx.services.files.info(&ctx.identity, &message_id).await.map_err(sink_error)
        }
        .await)
    }

    async fn read(&mut self, message_id: String) -> wasmtime::Result<Result<Vec<u8>, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Files)?;
            let limit = ctx.limits.files_max_bytes;
            let info = ctx.services.files.info(&ctx.identity, &message_id).await.map_err(sink_error)?;
            if info.size > limit {
                return Err(too_big(info.size, limit));
            }
            if info.password_protected {
                return Err(HostError::Invalid("the file is protected by a password this plugin does not have".into()));
            }
            let data = ctx.services.files.read(&ctx.identity, &message_id).await.map_err(sink_error)?;
            // The descriptor's size is the sender's word; the bytes are what count.
            if data.len() as u64 > limit {
                return Err(too_big(data.len() as u64, limit));
            }
            Ok(data)
        }
        .await)
    }

    async fn send(&mut self, file: FileDraft) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Files)?;
            let limit = ctx.limits.files_max_bytes;
            if file.data.len() as u64 > limit {
                return Err(too_big(file.data.len() as u64, limit));
            }
            if file.name.is_empty() || file.name.len() > 255 || file.name.contains(['/', '\\', '\0']) {
                return Err(HostError::Invalid("a file name is 1 to 255 bytes without / \\ or NUL".into()));
            }
            ctx.services.files.send(&ctx.identity, &file).await.map_err(sink_error)
        }
        .await)
    }
}
