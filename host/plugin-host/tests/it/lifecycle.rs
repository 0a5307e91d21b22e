//! The example plugins with their real plugin.toml, reload, the compile cache. (The auto-reply example's behaviour
//! is in twins.rs, run against its Rust and JavaScript versions.)

use std::path::Path;

use imfree_plugin_host::*;

use crate::support::*;

fn example(name: &str) -> PluginConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .join(name);
    let mut config = PluginConfig::new(guest_path(name));
    config.manifest = Some(dir.join("plugin.toml"));
    config
}

#[tokio::test]
async fn filter_example_rejects_and_masks() {
    let h = harness();
    h.host.load(example("filter")).await.unwrap();
    assert_eq!(
        h.host.outgoing_message(message("all good")).await,
        OutgoingOutcome::Send(message("all good"))
    );
    match h.host.outgoing_message(message("my Secret plan")).await {
        OutgoingOutcome::Send(m) => assert_eq!(m.body, "my ****** plan"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.host.outgoing_message(message("this is FORBIDDEN")).await,
        OutgoingOutcome::Reject {
            plugin: "filter".into(),
            reason: "messages containing \"forbidden\" are not allowed here".into()
        }
    );
}

#[tokio::test]
async fn filters_chain_in_name_order() {
    let h = harness();
    h.host.load(example("filter")).await.unwrap();
    h.load_probe("probe", "", "").await;
    // filter masks first, then probe upper-cases the masked text.
    match h.host.outgoing_message(message("secret upper")).await {
        OutgoingOutcome::Send(m) => assert_eq!(m.body, "****** UPPER"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reload_replaces_a_plugin_and_a_broken_reload_keeps_the_old_one() {
    let h = harness();
    h.load_probe("probe", "", "").await;
    assert_eq!(h.cmd("probe", "config", "greeting").await, "Some(\"hello\")");
    h.load_probe("probe", "", "settings = { greeting = \"moi\" }").await;
    assert_eq!(h.cmd("probe", "config", "greeting").await, "Some(\"moi\")");
    let broken = h
        .host
        .load_bytes(
            probe_manifest("probe", ""),
            admin("settings = { fail-init = true }"),
            guest("guest-probe"),
        )
        .await;
    assert!(broken.unwrap_err().to_string().contains("configured to fail"));
    assert_eq!(
        h.cmd("probe", "config", "greeting").await,
        "Some(\"moi\")",
        "the working version stays"
    );
    let disabled = h
        .host
        .load_bytes(
            probe_manifest("probe", ""),
            admin("enabled = false"),
            guest("guest-probe"),
        )
        .await;
    assert!(matches!(disabled, Err(LoadError::Disabled(_))));
}

#[tokio::test]
async fn admin_config_is_checked_against_the_manifest() {
    let h = harness();
    let err = h
        .host
        .load_bytes(
            probe_manifest("probe", ""),
            admin("settings = { colour = \"red\" }"),
            guest("guest-probe"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"colour\" is not declared"), "{err}");
}

#[tokio::test]
async fn compiled_components_are_cached_by_content_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness_with(std::sync::Arc::new(MemoryKv::new()), Some(dir.path().to_owned()));
    h.load_probe("probe", "", "").await;
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].extension().unwrap() == "cwasm");
    // A second host loads from the cache; a corrupt cache entry is recompiled, not trusted.
    let h2 = harness_with(std::sync::Arc::new(MemoryKv::new()), Some(dir.path().to_owned()));
    h2.load_probe("probe", "", "").await;
    assert_eq!(h2.cmd("probe", "config", "greeting").await, "Some(\"hello\")");
    std::fs::write(&files[0], b"garbage").unwrap();
    let h3 = harness_with(std::sync::Arc::new(MemoryKv::new()), Some(dir.path().to_owned()));
    h3.load_probe("probe", "", "").await;
    assert_eq!(h3.cmd("probe", "config", "greeting").await, "Some(\"hello\")");
}

#[test]
fn example_manifests_parse() {
    for name in ["auto-reply", "auto-reply-js", "filter"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/plugins")
            .join(name)
            .join("plugin.toml");
        let m = PluginManifest::from_path(&path).unwrap();
        assert_eq!(m.name, name);
    }
}
