//! The plugins bundled with the `imfree` binary (`plugins/` in the source tree, built and embedded by build.rs).
//! `serve` installs them as files under the relay's bundled directory (default `<data_dir>/bundled/<name>/`), where
//! `[plugins.<name>]` without `path` finds them; the relay, the bots and `imfree plugin list` then load them like any
//! plugin, with the administrator's grants and settings.

use std::path::Path;

use anyhow::Context as _;

/// One bundled plugin.
pub(crate) struct Bundled {
    /// Plugin name (its manifest's `name`).
    pub(crate) name: &'static str,
    /// The component.
    pub(crate) wasm: &'static [u8],
    /// Its `plugin.toml`.
    pub(crate) manifest: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Write every bundled plugin to `dir/<name>/plugin.wasm` and `plugin.toml`, replacing files whose content differs
/// (atomically, so a relay watching them never reads half a file) and leaving identical ones untouched (so their
/// modification times do not trigger a reload).
pub(crate) fn install(dir: &Path) -> anyhow::Result<()> {
    for plugin in BUNDLED {
        let folder = dir.join(plugin.name);
        std::fs::create_dir_all(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
        write_if_changed(&folder.join("plugin.wasm"), plugin.wasm)?;
        write_if_changed(&folder.join("plugin.toml"), plugin.manifest.as_bytes())?;
    }
    Ok(())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot install {}", path.display()))
}
