//! `ComponentInspector` against real components: what `imfree plugin check` relies on.

use std::path::{Path, PathBuf};

use imfree_plugin_host::*;

use crate::support::*;

fn inspector() -> ComponentInspector {
    ComponentInspector::new(&HostOptions {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
        max_instances: 2,
        ..HostOptions::default()
    })
    .expect("engine")
}

fn example_manifest(name: &str) -> PluginManifest {
    PluginManifest::from_path(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/plugins")
            .join(name)
            .join("plugin.toml"),
    )
    .unwrap()
}

#[test]
fn a_good_component_passes_and_is_described() {
    let mut report = inspector().inspect(&guest("auto-reply"));
    report.check_manifest(&example_manifest("auto-reply"));
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.exports.iter().any(|e| e == "incoming-message"));
    assert!(
        report.imports.iter().any(|i| i == "imfree:plugin/kv@0.3.0"),
        "{:?}",
        report.imports
    );
    assert_eq!(report.api_versions.iter().collect::<Vec<_>>(), vec!["0.3.0"]);
}

#[test]
fn an_unprovided_import_is_named() {
    let report = inspector().inspect(&guest("guest-bad-import"));
    assert!(
        matches!(&report.problems[..], [ComponentProblem::UnprovidedImport { name, .. }] if name == "evil:host/admin"),
        "{:?}",
        report.problems
    );
}

#[test]
fn missing_hooks_are_named_and_the_manifest_first() {
    let mut report = inspector().inspect(&guest("guest-partial"));
    let missing: Vec<_> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            ComponentProblem::MissingExport(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        missing,
        vec![
            "incoming-message",
            "outgoing-message",
            "relay-envelope",
            "status-change",
            "action",
            "http",
            "timer"
        ]
    );
    let manifest = PluginManifest::parse(
        "name = \"partial\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nscopes = [\"bot\"]\nhooks = [\"command\", \"timer\"]",
    )
    .unwrap();
    report.check_manifest(&manifest);
    assert_eq!(report.problems[0], ComponentProblem::HookNotExported(Hook::Timer));
}

#[test]
fn junk_and_core_modules_are_refused_with_the_reason() {
    let i = inspector();
    assert_eq!(
        i.inspect(b"#!/bin/sh\necho hi\n").problems,
        vec![ComponentProblem::NotWasm]
    );
    // The smallest core module: magic and version 1.
    assert_eq!(
        i.inspect(b"\0asm\x01\0\0\0").problems,
        vec![ComponentProblem::CoreModule]
    );
    let truncated = &guest("auto-reply")[..200];
    assert!(matches!(
        &i.inspect(truncated).problems[..],
        [ComponentProblem::Invalid(_)]
    ));
}
