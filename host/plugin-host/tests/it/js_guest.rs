//! Building the JavaScript example plugins from their sources with componentize-js (npm), the language's standard
//! component tooling. The component is cached under the test target directory by a hash of everything that goes
//! into it, so only a change to the sources (or the tool's pinned version) rebuilds it (~1 min on 2 cores).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The WASI features componentize-js leaves out: with them the component would import wasi:http and stdio, which
/// the host does not provide (docs/plugins.md, "A plugin in JavaScript").
pub const COMPONENTIZE_DISABLE: &[&str] = &["stdio", "random", "clocks", "http", "fetch-event"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every input of the build, hashed: the sources, the lockfile (which pins componentize-js and its tree), the WIT
/// and the flags.
fn source_hash(dir: &Path, wit: &Path) -> String {
    let mut files = vec![
        dir.join("plugin.js"),
        dir.join("package.json"),
        dir.join("package-lock.json"),
    ];
    let mut wit_files: Vec<PathBuf> = std::fs::read_dir(wit)
        .unwrap_or_else(|e| panic!("reading {}: {e}", wit.display()))
        .map(|e| e.expect("wit entry").path())
        .collect();
    wit_files.sort();
    files.extend(wit_files);
    let mut h = Sha256::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.update(COMPONENTIZE_DISABLE.join(" "));
    hex::encode(&h.finalize()[..8])
}

fn run(cmd: &mut Command, what: &str) {
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot start it ({e}). Node.js 20 and npm are needed to build the JavaScript example plugins.")
    });
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Path of the component built from `examples/plugins/<name>` (a folder with plugin.js and a package-lock.json).
pub fn js_guest_path(name: &str) -> PathBuf {
    // One build at a time in this process; a file lock keeps other test processes (nextest) out as well.
    static LOCAL: Mutex<()> = Mutex::new(());
    let _local = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo().join("examples/plugins").join(name);
    let wit = repo().join("wit/imfree-plugin@0.1.0");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("js-guests");
    std::fs::create_dir_all(&cache).expect("js-guests cache dir");
    let out = cache.join(format!("{name}-{}.wasm", source_hash(&dir, &wit)));
    if out.exists() {
        return out;
    }
    let lock = std::fs::File::create(cache.join(".lock")).expect("lock file");
    lock.lock().expect("locking the js-guests cache");
    if out.exists() {
        return out;
    }
    if !dir
        .join("node_modules/@bytecodealliance/componentize-js/package.json")
        .is_file()
    {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            "npm ci (installing componentize-js from package-lock.json)",
        );
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    run(
        Command::new("node")
            .arg("node_modules/@bytecodealliance/componentize-js/src/cli.js")
            .arg("plugin.js")
            .arg("--wit")
            .arg(&wit)
            .args(["--world-name", "plugin", "-d"])
            .args(COMPONENTIZE_DISABLE)
            .arg("-o")
            .arg(&tmp)
            .current_dir(&dir),
        "componentize-js",
    );
    std::fs::rename(&tmp, &out).expect("moving the built component into the cache");
    out
}

/// The bytes of the component built from `examples/plugins/<name>`.
pub fn js_guest(name: &str) -> Vec<u8> {
    let path = js_guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
