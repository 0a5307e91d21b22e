//! `imfree plugin new|build|check|list` through the real binary: a new plugin builds and passes the check; bad
//! components fail it with the precise reason; `list` shows requested, granted and effective capabilities.
//!
//! Components are built into `<target>/tmp/guests`, the directory imfree-plugin-host's tests build the guest
//! workspace into, so the wasm dependencies (wit-bindgen) compile once for both and stay cached across runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{bin, guest_wasm, tempdir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guest_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests")
}

/// `imfree plugin ARGS` with the shared wasm target directory.
fn plugin(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("plugin")
        .args(args)
        .env("CARGO_TARGET_DIR", guest_target())
        .env("IMFREE_LOG", "warn")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running imfree plugin")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn a_new_plugin_builds_and_passes_the_check() {
    let tmp = tempdir();
    let project = tmp.path().join("hello-bot");
    let out = plugin(&["new", "hello-bot", "--dir", p(&project)]);
    assert!(out.status.success(), "{:?}", text(&out));
    for file in ["Cargo.toml", "src/lib.rs", "plugin.toml", "README.md", "Cargo.lock"] {
        assert!(project.join(file).is_file(), "{file} written");
    }

    // Names are validated and nothing is overwritten.
    let again = plugin(&["new", "hello-bot", "--dir", p(&project)]);
    assert!(!again.status.success());
    assert!(text(&again).1.contains("already exists"), "{:?}", text(&again));
    let bad = plugin(&["new", "Hello_Bot", "--dir", p(&tmp.path().join("bad"))]);
    assert!(!bad.status.success());
    assert!(text(&bad).1.contains("is invalid"), "{:?}", text(&bad));
    assert!(!tmp.path().join("bad").exists());

    let out = plugin(&["build", p(&project)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "build failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains(".wasm ("))
        .expect("the built component is printed");
    let wasm = PathBuf::from(line.split(" (").next().unwrap());
    assert!(wasm.ends_with("wasm32-wasip2/wasm/hello_bot.wasm"), "{line}");
    assert!(
        line.contains(&format!("{} bytes", std::fs::metadata(&wasm).unwrap().len())),
        "{line}"
    );

    let out = plugin(&["check", p(&wasm), "--manifest", p(&project.join("plugin.toml"))]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("init       ok"), "{stdout}");
    assert!(stdout.contains("ok: the host can load hello-bot 0.1.0"), "{stdout}");
}

#[test]
fn check_names_an_import_the_host_does_not_provide() {
    let tmp = tempdir();
    let manifest = tmp.path().join("plugin.toml");
    std::fs::write(
        &manifest,
        "name = \"evil\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nscopes = [\"bot\"]\n",
    )
    .unwrap();
    let out = plugin(&["check", p(&guest_wasm("guest-bad-import")), "--manifest", p(&manifest)]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("evil 1.0.0 cannot be loaded"), "{stderr}");
    assert!(
        stderr.contains("imports `evil:host/admin`, which this host does not provide"),
        "{stderr}"
    );
}

#[test]
fn check_names_a_manifest_hook_the_component_does_not_export() {
    let tmp = tempdir();
    let manifest = tmp.path().join("plugin.toml");
    std::fs::write(
        &manifest,
        "name = \"partial\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nscopes = [\"bot\"]\nhooks = [\"command\", \"timer\"]\n",
    )
    .unwrap();
    let out = plugin(&["check", p(&guest_wasm("guest-partial")), "--manifest", p(&manifest)]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    let first = stderr.lines().find(|l| l.starts_with("  - ")).unwrap_or_default();
    assert_eq!(
        first, "  - plugin.toml lists hook `timer`, but the component does not export `timer`",
        "{stderr}"
    );
    assert!(
        stderr.contains("does not export `http`, which the imfree:plugin/plugin world requires"),
        "{stderr}"
    );
    assert!(stdout.contains("exports    command, init"), "{stdout}");
}

#[test]
fn check_refuses_files_that_are_not_components() {
    let tmp = tempdir();
    let script = tmp.path().join("plugin.wasm");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let module = tmp.path().join("module.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let manifest = repo().join("examples/plugins/auto-reply/plugin.toml");
    for (file, reason) in [
        (&script, "not a WebAssembly file"),
        (
            &module,
            "a core WebAssembly module, not a component: build for wasm32-wasip2",
        ),
    ] {
        let out = plugin(&["check", p(file), "--manifest", p(&manifest)]);
        assert!(!out.status.success());
        assert!(text(&out).1.contains(reason), "{:?}", text(&out));
    }
    let missing = plugin(&["check", p(&tmp.path().join("nope.wasm"))]);
    assert!(!missing.status.success());
    assert!(text(&missing).1.contains("cannot read"), "{:?}", text(&missing));
}

#[test]
fn list_shows_requested_granted_and_effective_capabilities() {
    let tmp = tempdir();
    let config = tmp.path().join("imfree.toml");
    let auto_reply = guest_wasm("auto-reply");
    let examples = repo().join("examples/plugins");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:7878"   # the relay's keys are left to the relay

[accounts]
open_registration = false

[plugins.auto-reply]
path = {wasm:?}
manifest = {manifest:?}
grants = {{ kv = true, timers = true }}
settings = {{ keyword = "help" }}

[plugins.filter]
enabled = false
path = {filter:?}
manifest = {filter_manifest:?}
"#,
            wasm = p(&auto_reply),
            manifest = p(&examples.join("auto-reply/plugin.toml")),
            filter = p(&guest_wasm("filter")),
            filter_manifest = p(&examples.join("filter/plugin.toml")),
        ),
    )
    .unwrap();
    let out = plugin(&["list", "--config", p(&config)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "auto-reply 0.1.0  enabled",
        "  scopes        bot, client",
        "  hooks         incoming-message, command",
        "  requested     kv, messaging",
        "  granted       kv, timers",
        "  effective     kv",
        "  health        loads (component linked, init ok)",
        "filter 0.1.0  disabled",
        "  health        not loaded: disabled",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{stdout}"
        );
    }

    // More plugins than the checking host's instance pool (4): each is unloaded after its check.
    let mut many = String::new();
    for i in 1..=6 {
        let manifest = tmp.path().join(format!("filter-{i}.toml"));
        let text = std::fs::read_to_string(examples.join("filter/plugin.toml")).unwrap();
        std::fs::write(
            &manifest,
            text.replace("name = \"filter\"", &format!("name = \"filter-{i}\"")),
        )
        .unwrap();
        many += &format!(
            "[plugins.filter-{i}]\npath = {:?}\nmanifest = {:?}\n",
            p(&guest_wasm("filter")),
            p(&manifest)
        );
    }
    std::fs::write(&config, many).unwrap();
    let out = plugin(&["list", "--config", p(&config)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("health        loads").count(), 6, "{stdout}");

    // A plugin that cannot load makes the listing fail, with the reason on its line.
    let evil_manifest = tmp.path().join("evil.toml");
    std::fs::write(
        &evil_manifest,
        "name = \"evil\"\nversion = \"6.6.6\"\napi = \"0.1.0\"\nscopes = [\"bot\"]\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[plugins.evil]\npath = {:?}\nmanifest = {:?}\n",
            p(&guest_wasm("guest-bad-import")),
            p(&evil_manifest)
        ),
    )
    .unwrap();
    let out = plugin(&["list", "--config", p(&config)]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("evil 6.6.6  enabled"), "{stdout}");
    assert!(
        stdout.contains("health        does not load: imports `evil:host/admin`"),
        "{stdout}"
    );
    assert!(stderr.contains("1 configured plugin(s) do not load"), "{stderr}");
}
