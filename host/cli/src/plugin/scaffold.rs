//! `imfree plugin new`: writes a plugin project that builds as it is (Rust with imfree-plugin-sdk, or JavaScript with
//! componentize-js). Writes only inside the new project's folder and refuses to overwrite anything.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use imfree_plugin_host::manifest::valid_plugin_name;
use imfree_plugin_host::wit::SUPPORTED_API_VERSIONS;

/// The plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, with the imfree-plugin-sdk crate (built by `cargo build --target wasm32-wasip2`).
    Rust,
    /// JavaScript, with componentize-js from npm (SpiderMonkey inside the component: ~12 MB, needs 128 MiB memory).
    Js,
}

/// The WIT files of the newest API, written into JavaScript projects (componentize-js reads the WIT itself).
const WIT_FILES: &[(&str, &str)] = &[
    (
        "world.wit",
        include_str!("../../../../wit/imfree-plugin@0.3.0/world.wit"),
    ),
    ("host.wit", include_str!("../../../../wit/imfree-plugin@0.3.0/host.wit")),
    (
        "types.wit",
        include_str!("../../../../wit/imfree-plugin@0.3.0/types.wit"),
    ),
];

/// The componentize-js release the JavaScript example and the scaffold pin (docs/plugins.md says why this one).
pub(crate) const COMPONENTIZE_JS: &str = "0.23.0";

/// componentize-js imports preview2-shim without declaring it, and 0.26.1 dropped the default preopen its tools rely
/// on: declare and override this release (as examples/plugins/auto-reply-js does).
const PREVIEW2_SHIM: &str = "0.26.0";

/// The WASI features componentize-js must leave out so that the component imports only what the host provides
/// (the default build imports wasi:http, which the host does not link).
pub(crate) const COMPONENTIZE_JS_DISABLE: &[&str] = &["stdio", "random", "clocks", "http", "fetch-event"];

/// The size profile `imfree plugin build` uses (and writes into new Rust projects).
pub(crate) const WASM_PROFILE: &[(&str, &str)] = &[
    ("inherits", "\"release\""),
    ("opt-level", "\"s\""),
    ("lto", "true"),
    ("codegen-units", "1"),
    ("strip", "true"),
    ("panic", "\"abort\""),
    ("debug", "false"),
];

/// Create the project; returns its folder.
pub(crate) fn create(name: &str, dir: Option<&Path>, lang: Lang, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    if !valid_plugin_name(name) {
        bail!(
            "plugin name {name:?} is invalid: use 1-64 lower-case letters, digits and '-', starting with a letter \
             (it becomes the kv namespace and the HTTP route prefix)"
        );
    }
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        let empty = dir.is_dir() && dir.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            bail!(
                "{} already exists: choose another --dir (nothing was written)",
                dir.display()
            );
        }
    }
    // Resolve the SDK before writing anything, so a failure leaves nothing behind.
    let sdk = match lang {
        Lang::Rust => Some(find_sdk(sdk, &dir)?),
        Lang::Js => None,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = match (lang, &sdk) {
        (Lang::Rust, Some(sdk)) => rust_files(name, &dir, sdk)?,
        _ => js_files(name),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        write_new(&path, text)?;
    }
    if let Some(sdk) = &sdk
        && let Some(lock) = &sdk.lock
    {
        // The versions the SDK is built and tested with (wit-bindgen above all); cargo drops what the plugin does not use.
        std::fs::copy(lock, dir.join("Cargo.lock")).with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    Ok(dir)
}

/// Create `path`, failing if it exists.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Where the SDK is and how the new project should name it.
#[derive(Debug)]
struct Sdk {
    /// What goes into `path = "..."`.
    dependency_path: PathBuf,
    /// The Cargo.lock of the SDK's own workspace, if there is one.
    lock: Option<PathBuf>,
}

/// The SDK is not on crates.io yet, so a new Rust plugin depends on it by path: `--sdk`, else a `plugin-sdk` folder
/// of an imfree checkout around the new project, else the checkout this binary was built from.
fn find_sdk(given: Option<&Path>, project: &Path) -> anyhow::Result<Sdk> {
    let project_abs = absolute(project)?;
    if let Some(given) = given {
        let sdk = absolute(given)?;
        if !is_sdk(&sdk) {
            bail!(
                "{} is not the imfree-plugin-sdk crate (no Cargo.toml naming it)",
                given.display()
            );
        }
        return Ok(sdk_at(&sdk, &project_abs, true));
    }
    for ancestor in project_abs.ancestors().skip(1) {
        let candidate = ancestor.join("plugin-sdk");
        if is_sdk(&candidate) {
            return Ok(sdk_at(&candidate, &project_abs, true));
        }
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugin-sdk");
    if is_sdk(&built_from) {
        let built_from = built_from.canonicalize().unwrap_or(built_from);
        return Ok(sdk_at(&built_from, &project_abs, false));
    }
    bail!(
        "cannot find the imfree-plugin-sdk crate: it is not on crates.io yet. Pass --sdk PATH/TO/imfree/plugin-sdk \
         (the plugin-sdk folder of an imfree checkout), or create the plugin inside an imfree checkout"
    )
}

fn sdk_at(sdk: &Path, project: &Path, relative: bool) -> Sdk {
    let dependency_path = if relative {
        relative_path(project, sdk).unwrap_or_else(|| sdk.to_path_buf())
    } else {
        sdk.to_path_buf()
    };
    // plugin-sdk/Cargo.toml says `workspace = "../examples/plugins"`.
    let lock = sdk.join("../examples/plugins/Cargo.lock");
    Sdk {
        dependency_path,
        lock: lock.is_file().then_some(lock),
    }
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("package")?
                .get("name")?
                .as_str()
                .map(|n| n == "imfree-plugin-sdk")
        })
        .unwrap_or(false)
}

/// An absolute, normalised path for `path` (which need not exist yet; its existing ancestors are canonicalised).
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    Ok(out)
}

/// `to` relative to `from` (both absolute and normalised); `None` if they share nothing but the root.
fn relative_path(from: &Path, to: &Path) -> Option<PathBuf> {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    Some(out)
}

/// `hello-bot` → `HelloBot`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut chars = s.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn api() -> &'static str {
    SUPPORTED_API_VERSIONS[0]
}

fn manifest(name: &str) -> String {
    format!(
        r#"# What this plugin is and what it asks for (docs/plugins.md, "The capability model"). The administrator grants
# capabilities in the server's [plugins.{name}] table; asking is not getting.
name = "{name}"
version = "0.1.0"
api = "{api}"                   # the imfree:plugin WIT version it is built against
description = "Answers /{name} with a greeting."
scopes = ["bot", "client"]      # relay | bot | client
hooks = ["command"]             # the hooks the host calls; list each one you implement

[capabilities]                  # log and config need no asking
kv = false
messaging = false
timers = false

[settings.greeting]
type = "string"                 # string | integer | float | boolean
default = "hello"
description = "How /{name} greets."
"#,
        api = api()
    )
}

fn gitignore(lang: Lang) -> String {
    match lang {
        Lang::Rust => "/target\n".into(),
        Lang::Js => "/node_modules\n/dist\n".into(),
    }
}

fn rust_files(name: &str, dir: &Path, sdk: &Sdk) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let ty = type_name(name);
    let sdk_path = sdk.dependency_path.to_str().with_context(|| {
        format!(
            "the SDK path {} is not UTF-8: pass --sdk with a UTF-8 path",
            sdk.dependency_path.display()
        )
    })?;
    let profile: String = WASM_PROFILE.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK is not on crates.io yet: this is the plugin-sdk folder of an imfree checkout.
imfree-plugin-sdk = {{ path = {sdk_path:?} }}

# A workspace of its own, so it builds even inside another Cargo workspace.
[workspace]

# `imfree plugin build` builds with this profile: a small component that instantiates quickly (~70-100 KB).
[profile.wasm]
{profile}"#
    );
    let lib = format!(
        r#"//! {name}: an imfree plugin. `/{name} ARGS` answers with the `greeting` setting.
//!
//! Every hook of the imfree:plugin world has a neutral default in the SDK's `Plugin` trait: implement the ones you
//! need and list them under `hooks` in plugin.toml (the host calls only those).

use imfree_plugin_sdk::types::Command;
use imfree_plugin_sdk::{{Plugin, config, export_plugin, log}};

struct {ty};

impl Plugin for {ty} {{
    fn init() -> Result<(), String> {{
        log::info("{name} ready");
        Ok(())
    }}

    fn command(cmd: Command) -> Option<String> {{
        let greeting = config::get_or("greeting", "hello");
        Some(format!("{{greeting}}, {{}}! You said: {{}}", cmd.sender, cmd.args))
    }}
}}

export_plugin!({ty});
"#
    );
    let readme = format!(
        r#"# {name}

An imfree plugin in Rust: `/{name} ARGS` answers with the `greeting` setting.

    rustup target add wasm32-wasip2               # once
    imfree plugin build {dir}                     # cargo build --target wasm32-wasip2 --profile wasm
    imfree plugin check target/wasm32-wasip2/wasm/{file}.wasm --manifest plugin.toml

`check` loads the component with the host's engine: every import must be one the host provides, every hook of the
world must be exported, and plugin.toml's `api` and `hooks` must match the component.

To run it, copy the `.wasm` and `plugin.toml` into one folder on the server and add to its configuration:

```toml
[plugins.{name}]
path = "plugins/{name}/{file}.wasm"    # plugin.toml is read from the same folder
grants = {{}}                           # this plugin asks for no capability
settings = {{ greeting = "hi" }}
```

`imfree plugin list --config FILE` shows what each configured plugin asks for, what it is granted and whether it
loads. The SDK (`imfree-plugin-sdk`) is not on crates.io yet; Cargo.toml points at the `plugin-sdk` folder of an
imfree checkout (`imfree plugin new --sdk PATH` chooses another). The author guide is docs/plugins.md in imfree.
"#,
        dir = dir.display(),
        file = name.replace('-', "_"),
    );
    Ok(vec![
        (PathBuf::from("Cargo.toml"), cargo),
        (PathBuf::from("src/lib.rs"), lib),
        (PathBuf::from("plugin.toml"), manifest(name)),
        (PathBuf::from("README.md"), readme),
        (PathBuf::from(".gitignore"), gitignore(Lang::Rust)),
    ])
}

fn js_files(name: &str) -> Vec<(PathBuf, String)> {
    let disable = COMPONENTIZE_JS_DISABLE.join(" ");
    let package = format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "mkdir -p dist && componentize-js plugin.js --wit wit --world-name plugin -d {disable} -o dist/{name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }},
  "overrides": {{
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }}
}}
"#
    );
    let js = format!(
        r#"// {name}: an imfree plugin in JavaScript. `/{name} ARGS` answers with the `greeting` setting.
//
// Host interfaces are ES modules named by their WIT ids; hooks are exported functions in camelCase; variants are
// {{ tag, val }}. The world asks for every hook; the host calls only those listed in plugin.toml. An exception thrown
// out of a hook traps the instance: the host contains it and starts a fresh one.

import {{ log }} from 'imfree:plugin/log@{api}';
import {{ get as setting }} from 'imfree:plugin/config@{api}';

export function init() {{
  log('info', '{name} ready');
}}

export function command(cmd) {{
  const greeting = setting('greeting') ?? 'hello';
  return `${{greeting}}, ${{cmd.sender}}! You said: ${{cmd.args}}`;
}}

export function incomingMessage(_msg) {{}}

export function outgoingMessage(_msg) {{
  return {{ tag: 'pass' }};
}}

export function relayEnvelope(_env) {{
  return {{ tag: 'pass' }};
}}

export function statusChange(_change) {{}}

export function action(_act) {{}}

export function http(_req) {{
  return {{ status: 404, headers: [], body: new TextEncoder().encode('not found') }};
}}

export function timer(_t) {{}}
"#,
        api = api()
    );
    let readme = format!(
        r#"# {name}

An imfree plugin in JavaScript, built into a WebAssembly component by componentize-js {COMPONENTIZE_JS}
(SpiderMonkey): `/{name} ARGS` answers with the `greeting` setting. `wit/` is a copy of the plugin API
(imfree:plugin@{api}).

    npm install                                   # once (writes package-lock.json: commit it)
    imfree plugin build .                         # componentize-js ... -d {disable}
    imfree plugin check dist/{name}.wasm --manifest plugin.toml

`-d {disable}` leaves out the WASI features the host does not provide; without it the component imports wasi:http
and does not load. The component is about 12 MB and compiles in seconds (the host caches the compiled form);
SpiderMonkey's heap settles near 75 MiB, so grant it `limits = {{ memory-mib = 128 }}`:

```toml
[plugins.{name}]
path = "plugins/{name}/{name}.wasm"
limits = {{ memory-mib = 128 }}
settings = {{ greeting = "hi" }}
```

The author guide is docs/plugins.md in imfree.
"#,
        api = api()
    );
    let mut files = vec![
        (PathBuf::from("package.json"), package),
        (PathBuf::from("plugin.js"), js),
        (PathBuf::from("plugin.toml"), manifest(name)),
        (PathBuf::from("README.md"), readme),
        (PathBuf::from(".gitignore"), gitignore(Lang::Js)),
    ];
    for (file, text) in WIT_FILES {
        files.push((Path::new("wit").join(file), (*text).to_owned()));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_javascript_project_gets_the_wit_of_the_version_its_manifest_and_imports_name() {
        for (file, text) in WIT_FILES {
            assert!(text.contains(&format!("package imfree:plugin@{};", api())), "{file} is not the newest API's");
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("hello"), "Hello");
        assert_eq!(type_name("hello-bot-2"), "HelloBot2");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/c/p"), Path::new("/a/b/plugin-sdk")),
            Some(PathBuf::from("../../plugin-sdk"))
        );
        assert_eq!(relative_path(Path::new("/tmp/p"), Path::new("/work/sdk")), None);
    }

    #[test]
    fn refuses_bad_names_and_existing_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let err = create("Bad Name", Some(&tmp.path().join("x")), Lang::Js, None).unwrap_err();
        assert!(err.to_string().contains("is invalid"), "{err}");
        std::fs::write(tmp.path().join("taken"), "").unwrap();
        let err = create("taken", Some(&tmp.path().join("taken")), Lang::Js, None).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(!tmp.path().join("x").exists());
    }

    #[test]
    fn manifests_written_by_new_parse() {
        let m = imfree_plugin_host::PluginManifest::parse(&manifest("hello")).unwrap();
        assert_eq!(m.hooks, vec![imfree_plugin_host::Hook::Command]);
    }
}
