//! Checking a component against this host without running a hook: is it a component, does it compile, does the host
//! provide every import, does it export every hook of the world, and does it agree with its `plugin.toml` (API
//! version, hooks). This is what `imfree plugin check` and `imfree plugin list` report.
//!
//! It uses the host's own engine configuration, compile cache and linker (the same functions [`crate::PluginHost`]
//! uses), so "the check passes" means "the host can link it". It never instantiates; running `init` is a load
//! ([`crate::PluginHost::load_bytes`]).

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::capabilities;
use crate::engine::{ComponentCache, build_engine};
use crate::host::HostOptions;
use crate::manifest::{Hook, PluginManifest};
use crate::state::PluginState;
use crate::wit::SUPPORTED_API_VERSIONS;
use crate::wit::latest::PluginPre;

/// The WIT package whose interfaces are the plugin API.
const API_PACKAGE: &str = "imfree:plugin/";

/// Every function the `imfree:plugin/plugin` world exports (and so every component must export).
pub const WORLD_EXPORTS: &[&str] = &[
    "init",
    "incoming-message",
    "outgoing-message",
    "relay-envelope",
    "status-change",
    "command",
    "action",
    "http",
    "timer",
];

/// What a component is, as far as can be known without running it.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    /// Size of the `.wasm`, bytes.
    pub size: usize,
    /// Time to compile it (or to load it from the compile cache).
    pub compile_time: Duration,
    /// Imported names (`imfree:plugin/kv@0.1.0`, `wasi:io/streams@0.2.6`, …), sorted.
    pub imports: Vec<String>,
    /// Exported names, sorted.
    pub exports: Vec<String>,
    /// Versions of `imfree:plugin` it imports (empty when it imports no API interface).
    pub api_versions: BTreeSet<String>,
    /// Everything wrong with it; empty when the host can load it.
    pub problems: Vec<ComponentProblem>,
}

impl ComponentReport {
    /// Whether the host can link the component.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Add the disagreements between the component and its manifest to [`Self::problems`], first.
    pub fn check_manifest(&mut self, manifest: &PluginManifest) {
        let mut found = Vec::new();
        if let Some(version) = self.api_versions.iter().find(|v| **v != manifest.api) {
            found.push(ComponentProblem::ApiMismatch {
                manifest: manifest.api.clone(),
                component: version.clone(),
            });
        }
        for hook in &manifest.hooks {
            if !self.exports.iter().any(|e| e == hook.wit_name()) {
                found.push(ComponentProblem::HookNotExported(*hook));
            }
        }
        found.append(&mut self.problems);
        self.problems = found;
    }
}

/// One reason the host cannot load a component (or should not, given its manifest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentProblem {
    /// No `\0asm` header.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module: built for wasm32-wasip1 or wasm32-unknown-unknown, or not componentized.
    #[error(
        "a core WebAssembly module, not a component: build for wasm32-wasip2 (wasm32-wasip1 and wasm32-unknown-unknown produce core modules)"
    )]
    CoreModule,
    /// wasmtime refused to compile it.
    #[error("not a valid component: {0}")]
    Invalid(String),
    /// An import this host does not provide.
    #[error("imports `{name}`, which this host does not provide (it provides imfree:plugin@{supported} and WASI 0.2 without sockets or files): {detail}", supported = SUPPORTED_API_VERSIONS.join(", "))]
    UnprovidedImport {
        /// The import.
        name: String,
        /// wasmtime's explanation.
        detail: String,
    },
    /// Linking failed for another reason (a type mismatch).
    #[error("cannot be linked by this host: {0}")]
    Link(String),
    /// A world export the component lacks.
    #[error(
        "does not export `{0}`, which the imfree:plugin/plugin world requires (export the neutral value for hooks you do not use)"
    )]
    MissingExport(String),
    /// Exports with the right names but the wrong types.
    #[error("its exports do not match the imfree:plugin/plugin world: {0}")]
    ExportMismatch(String),
    /// It imports an API version this host does not implement.
    #[error("imports imfree:plugin@{0}, which this host does not implement (supported: {supported})", supported = SUPPORTED_API_VERSIONS.join(", "))]
    UnsupportedApi(String),
    /// The manifest's `api` is not the version the component was built against.
    #[error("plugin.toml says api = \"{manifest}\", but the component was built against imfree:plugin@{component}")]
    ApiMismatch {
        /// The manifest's `api`.
        manifest: String,
        /// What the component imports.
        component: String,
    },
    /// The manifest lists a hook the component does not export.
    #[error("plugin.toml lists hook `{0}`, but the component does not export `{0}`")]
    HookNotExported(Hook),
}

/// Checks components with the host's engine and linker. Building one costs an engine; reuse it.
pub struct ComponentInspector {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: ComponentCache,
}

impl fmt::Debug for ComponentInspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentInspector").finish_non_exhaustive()
    }
}

impl ComponentInspector {
    /// An inspector with the engine a [`crate::PluginHost`] built from `options` would have; compiled components go
    /// to `options.cache_dir`, so a host sharing that directory loads them without compiling again.
    pub fn new(options: &HostOptions) -> wasmtime::Result<Self> {
        let engine = build_engine(options)?;
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)?;
        Ok(ComponentInspector {
            cache: ComponentCache::new(options.cache_dir.clone()),
            engine,
            linker,
        })
    }

    /// Check `wasm`. Blocking (compiling a large component takes seconds): call from `spawn_blocking` in async code.
    pub fn inspect(&self, wasm: &[u8]) -> ComponentReport {
        let mut report = ComponentReport {
            size: wasm.len(),
            compile_time: Duration::ZERO,
            imports: vec![],
            exports: vec![],
            api_versions: BTreeSet::new(),
            problems: vec![],
        };
        if let Some(problem) = header_problem(wasm) {
            report.problems.push(problem);
            return report;
        }
        let started = Instant::now();
        let component = match self.cache.compile(&self.engine, wasm) {
            Ok(c) => c,
            Err(e) => {
                report.problems.push(ComponentProblem::Invalid(format!("{e:#}")));
                return report;
            }
        };
        report.compile_time = started.elapsed();
        self.describe(&component, &mut report);
        report
    }

    fn describe(&self, component: &Component, report: &mut ComponentReport) {
        let ty = component.component_type();
        report.imports = ty.imports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        report.imports.sort();
        report.exports = ty.exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        report.exports.sort();
        report.api_versions = report
            .imports
            .iter()
            .filter_map(|name| name.strip_prefix(API_PACKAGE))
            .filter_map(|rest| rest.split_once('@').map(|(_, v)| v.to_owned()))
            .collect();
        for version in &report.api_versions {
            if !SUPPORTED_API_VERSIONS.contains(&version.as_str()) {
                report.problems.push(ComponentProblem::UnsupportedApi(version.clone()));
            }
        }
        let missing: Vec<&str> = WORLD_EXPORTS
            .iter()
            .copied()
            .filter(|e| !report.exports.iter().any(|x| x == e))
            .collect();
        report
            .problems
            .extend(missing.iter().map(|e| ComponentProblem::MissingExport((*e).to_owned())));
        match self.linker.instantiate_pre(component) {
            Err(e) => {
                let detail = format!("{e:#}");
                // wasmtime names the first import it could not satisfy in backquotes.
                match report.imports.iter().find(|n| detail.contains(&format!("`{n}`"))) {
                    Some(name) => report.problems.push(ComponentProblem::UnprovidedImport {
                        name: name.clone(),
                        detail,
                    }),
                    None => report.problems.push(ComponentProblem::Link(detail)),
                }
            }
            Ok(pre) => {
                if let Err(e) = PluginPre::new(pre)
                    && missing.is_empty()
                {
                    report.problems.push(ComponentProblem::ExportMismatch(format!("{e:#}")));
                }
            }
        }
    }
}

/// Tell a component from a core module or something else by its preamble (magic, version, layer).
fn header_problem(wasm: &[u8]) -> Option<ComponentProblem> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Some(ComponentProblem::NotWasm);
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    if wasm[4..8] == [1, 0, 0, 0] {
        return Some(ComponentProblem::CoreModule);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_modules_from_components_by_the_preamble() {
        assert_eq!(header_problem(b"hello world"), Some(ComponentProblem::NotWasm));
        assert_eq!(header_problem(b"\0asm"), Some(ComponentProblem::NotWasm));
        assert_eq!(header_problem(b"\0asm\x01\0\0\0"), Some(ComponentProblem::CoreModule));
        assert_eq!(header_problem(b"\0asm\x0d\0\x01\0"), None);
    }

    #[test]
    fn world_exports_cover_every_hook() {
        use Hook::*;
        for hook in [
            IncomingMessage,
            OutgoingMessage,
            RelayEnvelope,
            StatusChange,
            Command,
            Action,
            Http,
            Timer,
        ] {
            assert!(WORLD_EXPORTS.contains(&hook.wit_name()), "{hook}");
        }
    }

    #[test]
    fn manifest_problems_come_first() {
        let manifest = PluginManifest::parse(
            "name = \"p\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nscopes = [\"bot\"]\nhooks = [\"timer\", \"command\"]",
        )
        .unwrap();
        let mut report = ComponentReport {
            size: 0,
            compile_time: Duration::ZERO,
            imports: vec!["imfree:plugin/log@0.2.0".into()],
            exports: vec!["command".into(), "init".into()],
            api_versions: ["0.2.0".to_owned()].into(),
            problems: vec![ComponentProblem::MissingExport("timer".into())],
        };
        report.check_manifest(&manifest);
        assert_eq!(
            report.problems,
            vec![
                ComponentProblem::ApiMismatch {
                    manifest: "0.1.0".into(),
                    component: "0.2.0".into()
                },
                ComponentProblem::HookNotExported(Hook::Timer),
                ComponentProblem::MissingExport("timer".into()),
            ]
        );
        assert!(
            report.problems[1]
                .to_string()
                .contains("lists hook `timer`, but the component does not export")
        );
    }
}
