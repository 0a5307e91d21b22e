//! `imfree plugin build`: a Rust plugin with `cargo build --target wasm32-wasip2` in a size profile, a JavaScript
//! plugin with componentize-js. Runs the toolchain as a child process with its output shown; touches nothing but
//! the toolchain's own output folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use imfree_plugin_host::PluginManifest;

use super::scaffold::{COMPONENTIZE_JS_DISABLE, WASM_PROFILE};

const TARGET: &str = "wasm32-wasip2";

/// Build the plugin in `dir`; returns the components built.
pub(crate) fn build(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("Cargo.toml").is_file() {
        build_rust(dir)
    } else if dir.join("package.json").is_file() {
        build_js(dir).map(|p| vec![p])
    } else {
        bail!(
            "{} has neither a Cargo.toml (Rust) nor a package.json (JavaScript): run `imfree plugin new NAME` to create a plugin",
            dir.display()
        )
    }
}

fn build_rust(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    check_target_installed(dir)?;
    let manifest_path = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let cargo_toml: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", manifest_path.display()))?;
    let has_profile = cargo_toml.get("profile").and_then(|p| p.get("wasm")).is_some();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--target",
        TARGET,
        "--profile",
        "wasm",
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(&manifest_path);
    if !has_profile {
        // Guest settings live in a custom profile so that nothing else is built for size; supply it when the
        // project does not define one.
        for (key, value) in WASM_PROFILE {
            cmd.arg("--config").arg(format!("profile.wasm.{key}={value}"));
        }
    }
    let output = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo: is Rust installed (rustup)?")?;
    if !output.status.success() {
        bail!("cargo build failed (the errors are above)");
    }
    let built = wasm_artifacts(&String::from_utf8_lossy(&output.stdout));
    if built.is_empty() {
        bail!(
            "cargo built no .wasm: a plugin crate needs `[lib] crate-type = [\"cdylib\"]` in {}",
            manifest_path.display()
        );
    }
    Ok(built)
}

/// The `.wasm` files of cdylib targets in cargo's JSON messages.
fn wasm_artifacts(json_lines: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let cdylib = msg["target"]["crate_types"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !cdylib {
            continue;
        }
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                out.push(PathBuf::from(f));
            }
        }
    }
    out
}

/// A missing target shows up as a wall of "can't find crate for `core`"; say what to do instead.
fn check_target_installed(dir: &Path) -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // Run in the project so a rust-toolchain file there picks the toolchain, as cargo would.
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .context("cannot run rustc: is Rust installed (rustup)?")?;
    if !output.status.success() {
        bail!(
            "rustc --print sysroot failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !target_installed(&sysroot) {
        bail!("the {TARGET} target is not installed for this toolchain: run `rustup target add {TARGET}`");
    }
    Ok(())
}

fn target_installed(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir()
}

fn build_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = PluginManifest::from_path(&dir.join("plugin.toml"))?;
    let cli = dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    if !cli.is_file() {
        bail!(
            "componentize-js is not installed in {}: run `npm install` (or `npm ci`) there first",
            dir.display()
        );
    }
    let wit = ["wit", "../../../wit/imfree-plugin@0.1.0"]
        .iter()
        .map(|w| dir.join(w))
        .find(|w| w.is_dir())
        .with_context(|| {
            format!(
                "no wit/ folder in {}: copy the plugin API's WIT files there",
                dir.display()
            )
        })?;
    let out = dir.join("dist").join(format!("{}.wasm", manifest.name));
    std::fs::create_dir_all(dir.join("dist")).context("cannot create dist/")?;
    let status = Command::new("node")
        .arg(&cli)
        .arg(dir.join("plugin.js"))
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", "plugin", "-d"])
        .args(COMPONENTIZE_JS_DISABLE)
        .arg("-o")
        .arg(&out)
        .status()
        .context("cannot run node: install Node.js 20 or newer")?;
    if !status.success() {
        bail!("componentize-js failed (the errors are above)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cdylib_wasm_in_cargo_messages() {
        let lines = r#"{"reason":"compiler-artifact","target":{"crate_types":["lib"]},"filenames":["/t/libx.rlib"]}
{"reason":"compiler-artifact","target":{"crate_types":["cdylib"]},"filenames":["/t/wasm32-wasip2/wasm/hello.wasm"]}
not json
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifacts(lines),
            vec![PathBuf::from("/t/wasm32-wasip2/wasm/hello.wasm")]
        );
    }

    #[test]
    fn a_sysroot_without_the_target_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!target_installed(tmp.path()));
        std::fs::create_dir_all(tmp.path().join("lib/rustlib/wasm32-wasip2/lib")).unwrap();
        assert!(target_installed(tmp.path()));
    }
}
