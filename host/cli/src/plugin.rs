//! `imfree plugin`: the plugin author's commands (`new`, `build`, `check`) and the administrator's `list`. A thin
//! layer over imfree-plugin-host: checks run the host's own engine and linker, and loads its real `load` path. It
//! must not reach into a running relay (its live health is in its log).

mod build;
mod scaffold;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use clap::{Args, Subcommand};
use imfree_plugin_host::capability::CapabilityCheck;
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::manifest::RequestedCapabilities;
use imfree_plugin_host::{
    Card, ComponentInspector, ComponentReport, Grants, HostOptions, MemoryKv, MessageSink, PluginConfig, PluginHost,
    PluginIdentity, PluginManifest, RecordingIncidents, SinkError, SystemClock,
};

/// Where `imfree serve` looks for its config when none is given (see serve.rs).
const SYSTEM_CONFIG: &str = "/etc/imfree/imfree.toml";

#[derive(Debug, Args)]
pub(crate) struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Create a plugin project that builds as it is: code with one example hook, plugin.toml, README.
    ///
    /// Refuses an invalid name and an existing, non-empty folder; writes nothing outside the new folder.
    New {
        /// Plugin name: lower-case letters, digits and '-', starting with a letter.
        name: String,
        /// Project folder (created; must not exist or be empty). Default: ./NAME.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// The imfree-plugin-sdk crate (Rust; not on crates.io yet). Default: the plugin-sdk folder of the imfree
        /// checkout around the new project, else of the checkout this binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in DIR into a component and print its path and size.
    ///
    /// Rust: `cargo build --target wasm32-wasip2` in a size profile (`[profile.wasm]`, supplied when the project
    /// has none). JavaScript: componentize-js, with the WASI features the host does not provide left out.
    Build {
        /// Project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check a component against this host and its plugin.toml.
    ///
    /// A component (not a core module), that compiles with the host's engine, imports only what the host
    /// provides, exports every hook of the world, and matches the manifest's api version and hooks; then it is
    /// loaded and `init` runs (capabilities granted as requested, settings at their defaults). Exits non-zero with
    /// the reasons when the host could not load it.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        /// Its manifest. Default: plugin.toml beside FILE, else ./plugin.toml.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Show the plugins a server config sets up, with their grants and whether they load.
    ///
    /// Reads the [plugins.NAME] tables: version, enabled, scopes, hooks, requested, granted and effective
    /// (requested AND granted) capabilities, and whether each component loads with its configuration (init
    /// included). Health is what can be known offline (this command loads each plugin itself): a running relay's
    /// failures, backoff and quarantine are in its log. Relative paths are relative to the config file's folder, as
    /// for `imfree serve`. Exits non-zero when an enabled plugin does not load.
    List {
        /// Server config. Default: /etc/imfree/imfree.toml.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub(crate) async fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::New { name, dir, lang, sdk } => {
            let dir = scaffold::create(&name, dir.as_deref(), lang, sdk.as_deref())?;
            println!("created plugin {name} in {}", dir.display());
            println!("next: imfree plugin build {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let built = tokio::task::spawn_blocking(move || build::build(&dir)).await??;
            for path in built {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                println!("{} ({size} bytes, {})", path.display(), human_size(size));
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check { file, manifest } => check(&file, manifest.as_deref()).await,
        PluginCommand::List { config } => list(config.as_deref()).await,
    }
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `check` and `list` never deliver anything: a plugin that posts from `init` gets `unavailable`.
struct NoDelivery;

const NO_DELIVERY: &str = "imfree plugin check and list do not deliver messages";

#[async_trait]
impl MessageSink for NoDelivery {
    async fn post(&self, _: &PluginIdentity, _: &str, _: &str) -> Result<String, SinkError> {
        Err(SinkError::Unavailable(NO_DELIVERY.into()))
    }
    async fn reply(&self, _: &PluginIdentity, _: &str, _: &str, _: &str) -> Result<String, SinkError> {
        Err(SinkError::Unavailable(NO_DELIVERY.into()))
    }
    async fn react(&self, _: &PluginIdentity, _: &str, _: &str, _: &str) -> Result<(), SinkError> {
        Err(SinkError::Unavailable(NO_DELIVERY.into()))
    }
    async fn post_card(&self, _: &PluginIdentity, _: &str, _: &Card) -> Result<String, SinkError> {
        Err(SinkError::Unavailable(NO_DELIVERY.into()))
    }
}

/// A host and an inspector sharing one engine configuration and a throw-away compile cache, so each component is
/// compiled once even though it is inspected and then loaded.
struct OfflineHost {
    inspector: Arc<ComponentInspector>,
    host: PluginHost,
    _cache: tempfile::TempDir,
}

impl OfflineHost {
    fn new() -> anyhow::Result<Self> {
        let cache = tempfile::Builder::new()
            .prefix("imfree-plugin-check")
            .tempdir()
            .context("cannot create a temporary compile cache")?;
        let options = HostOptions {
            cache_dir: Some(cache.path().to_owned()),
            max_instances: 4,
            ..HostOptions::default()
        };
        let services = HostServices {
            messages: Arc::new(NoDelivery),
            kv: Arc::new(MemoryKv::new()),
            clock: Arc::new(SystemClock),
            incidents: Arc::new(RecordingIncidents::new()),
            accounts: Arc::new(imfree_plugin_host::NoAccounts),
            conversations: Arc::new(imfree_plugin_host::NoConversations),
            files: Arc::new(imfree_plugin_host::NoFiles),
            mail: Arc::new(imfree_plugin_host::NoMail),
        };
        let inspector = ComponentInspector::new(&options).map_err(|e| anyhow::anyhow!("plugin engine: {e:#}"))?;
        let host = PluginHost::new(options, services).map_err(|e| anyhow::anyhow!("plugin engine: {e:#}"))?;
        Ok(OfflineHost {
            inspector: Arc::new(inspector),
            host,
            _cache: cache,
        })
    }

    async fn inspect(&self, wasm: Arc<Vec<u8>>) -> anyhow::Result<ComponentReport> {
        let inspector = self.inspector.clone();
        Ok(tokio::task::spawn_blocking(move || inspector.inspect(&wasm)).await?)
    }
}

fn default_manifest(file: &Path) -> Option<PathBuf> {
    let beside = file.parent().map(|d| d.join("plugin.toml"));
    beside
        .into_iter()
        .chain([PathBuf::from("plugin.toml")])
        .find(|p| p.is_file())
}

async fn check(file: &Path, manifest_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let manifest_path = manifest_path.map(Path::to_path_buf).or_else(|| default_manifest(file));
    let manifest = match &manifest_path {
        Some(path) => Some(PluginManifest::from_path(path).with_context(|| format!("{}", path.display()))?),
        None => None,
    };
    let offline = OfflineHost::new()?;
    let wasm = Arc::new(wasm);
    let mut report = offline.inspect(wasm.clone()).await?;
    if let Some(m) = &manifest {
        report.check_manifest(m);
    }
    println!(
        "component  {} ({} bytes, {}; compiled in {} ms)",
        file.display(),
        report.size,
        human_size(report.size as u64),
        report.compile_time.as_millis()
    );
    match (&manifest, &manifest_path) {
        (Some(m), Some(path)) => println!(
            "manifest   {}: {} {}, api {}, scopes {}, hooks {}",
            path.display(),
            m.name,
            m.version,
            m.api,
            join(m.scopes.iter().map(|s| format!("{s:?}").to_lowercase())),
            join(m.hooks.iter().map(|h| h.to_string()))
        ),
        _ => println!(
            "manifest   none found (pass --manifest): the api version and hooks were not compared with plugin.toml"
        ),
    }
    if !report.imports.is_empty() || !report.exports.is_empty() {
        println!("imports    {}", join(report.imports.iter().cloned()));
        println!("exports    {}", join(report.exports.iter().cloned()));
    }
    let label = manifest
        .as_ref()
        .map(|m| format!("{} {}", m.name, m.version))
        .unwrap_or_else(|| file.display().to_string());
    if !report.ok() {
        eprintln!("error: {label} cannot be loaded by this host:");
        for problem in &report.problems {
            eprintln!("  - {problem}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let Some(manifest) = manifest else {
        println!("ok: the host can link {label} (init not run without a manifest)");
        return Ok(ExitCode::SUCCESS);
    };
    // Load it for real: grants as requested, so init behaves as it will once the administrator grants them.
    let mut config = PluginConfig::new(file);
    config.grants = Grants {
        kv: manifest.capabilities.kv,
        messaging: manifest.capabilities.messaging,
        timers: manifest.capabilities.timers,
        accounts: manifest.capabilities.accounts,
        files: manifest.capabilities.files,
        mail: manifest.capabilities.mail,
        http_outbound: manifest
            .capabilities
            .http_outbound
            .iter()
            .map(|o| format!("{}://{}:{}{}", o.scheme, o.host, o.port, o.path))
            .collect(),
        // `check` runs init only; a private-address grant is the administrator's decision, never assumed.
        http_allow_private: false,
    };
    // SpiderMonkey and CPython need more than the default 64 MiB; `check` is about loading, not about limits.
    config.limits.memory_mib = 256;
    if let Err(e) = config.resolve_settings(&manifest) {
        println!("init       not run: {e} (its default is missing; `imfree plugin list` runs it with a config)");
        println!("ok: the host can link {label}");
        return Ok(ExitCode::SUCCESS);
    }
    match offline.host.load_bytes(manifest, config, wasm.to_vec()).await {
        Ok(()) => {
            println!("init       ok (capabilities granted as requested, settings at their defaults)");
            println!("ok: the host can load {label}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {label} cannot be loaded by this host:\n  - {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() { "-".into() } else { v.join(", ") }
}

fn requested_names(r: &RequestedCapabilities) -> Vec<String> {
    let mut out = Vec::new();
    for (on, name) in [(r.kv, "kv"), (r.messaging, "messaging"), (r.timers, "timers"), (r.accounts, "accounts")] {
        if on {
            out.push(name.to_owned());
        }
    }
    if r.http_outbound_any {
        out.push("http.outbound(* as granted)".to_owned());
    }
    out.extend(
        r.http_outbound
            .iter()
            .map(|o| format!("http.outbound({}://{}:{}{})", o.scheme, o.host, o.port, o.path)),
    );
    out
}

fn granted_names(g: &Grants) -> Vec<String> {
    let mut out = Vec::new();
    for (on, name) in [(g.kv, "kv"), (g.messaging, "messaging"), (g.timers, "timers"), (g.accounts, "accounts")] {
        if on {
            out.push(name.to_owned());
        }
    }
    out.extend(g.http_outbound.iter().map(|o| format!("http.outbound({o})")));
    if g.http_allow_private {
        out.push("http.allow-private".to_owned());
    }
    out
}

/// The `[plugins.NAME]` tables of a server config. Only that table is read: the rest belongs to the relay.
fn plugin_tables(path: &Path) -> anyhow::Result<Vec<(String, Result<PluginConfig, String>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let Some(plugins) = table.get("plugins") else {
        return Ok(vec![]);
    };
    // Tables without `path` name a bundled plugin: install them where the relay would (only then: listing plugins
    // that all have their own files writes nothing).
    let bundled_dir = imfree_relay::RelayConfig::from_file(path)
        .map(|c| c.bundled_dir())
        .with_context(|| format!("{} is not a valid server configuration", path.display()))?;
    let names_bundled = plugins.as_table().is_some_and(|t| t.values().any(|v| v.get("path").is_none()));
    if names_bundled {
        crate::bundled::install(&bundled_dir)?;
    }
    let plugins = plugins
        .as_table()
        .with_context(|| format!("{}: `plugins` must be a table of [plugins.NAME] tables", path.display()))?;
    Ok(plugins
        .iter()
        .map(|(name, value)| {
            let base = path.parent().unwrap_or(Path::new("."));
            let config = value
                .clone()
                .try_into::<PluginConfig>()
                .map(|mut c| {
                    c.resolve(name, base, &bundled_dir);
                    c
                })
                .map_err(|e| format!("[plugins.{name}] is not valid: {}", e.to_string().trim()));
            (name.clone(), config)
        })
        .collect())
}

async fn list(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None if Path::new(SYSTEM_CONFIG).exists() => PathBuf::from(SYSTEM_CONFIG),
        None => anyhow::bail!("no server config: pass --config FILE (the file `imfree serve --config` reads)"),
    };
    let plugins = plugin_tables(&path)?;
    if plugins.is_empty() {
        println!(
            "no plugins configured in {} (add [plugins.NAME] tables; see docs/plugins.md)",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let offline = OfflineHost::new()?;
    let mut broken = 0;
    for (i, (key, config)) in plugins.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                println!("{key}");
                println!("  health        does not load: {e}");
                broken += 1;
                continue;
            }
        };
        let manifest_path = config.manifest_path();
        let manifest = match PluginManifest::from_path(&manifest_path) {
            Ok(m) => m,
            Err(e) => {
                println!("{key}  {}", if config.enabled { "enabled" } else { "disabled" });
                println!("  component     {}", config.path.display());
                println!("  health        does not load: {e}");
                broken += usize::from(config.enabled);
                continue;
            }
        };
        println!(
            "{key} {}  {}",
            manifest.version,
            if config.enabled { "enabled" } else { "disabled" }
        );
        println!("  component     {}", config.path.display());
        println!("  manifest      {}", manifest_path.display());
        println!(
            "  scopes        {}",
            join(manifest.scopes.iter().map(|s| format!("{s:?}").to_lowercase()))
        );
        println!("  hooks         {}", join(manifest.hooks.iter().map(|h| h.to_string())));
        println!(
            "  requested     {}",
            join(requested_names(&manifest.capabilities).into_iter())
        );
        println!("  granted       {}", join(granted_names(&config.grants).into_iter()));
        let effective = CapabilityCheck::new(manifest.capabilities.clone(), config.grants.clone()).effective();
        println!("  effective     {}", join(effective.into_iter()));
        let health = if !config.enabled {
            "not loaded: disabled".to_owned()
        } else if manifest.name != key {
            broken += 1;
            format!(
                "does not load: the table is [plugins.{key}] but plugin.toml names the plugin {:?}",
                manifest.name
            )
        } else {
            match health(&offline, &manifest, config).await {
                Ok(()) => "loads (component linked, init ok)".to_owned(),
                Err(reason) => {
                    broken += 1;
                    format!("does not load: {reason}")
                }
            }
        };
        println!("  health        {health}");
    }
    if broken > 0 {
        eprintln!("error: {broken} configured plugin(s) do not load");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the plugin loads with its configuration, and if not, every reason found.
async fn health(offline: &OfflineHost, manifest: &PluginManifest, config: PluginConfig) -> Result<(), String> {
    let wasm = std::fs::read(&config.path).map_err(|e| format!("cannot read {}: {e}", config.path.display()))?;
    let wasm = Arc::new(wasm);
    let mut report = offline.inspect(wasm.clone()).await.map_err(|e| e.to_string())?;
    report.check_manifest(manifest);
    if !report.ok() {
        let reasons: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        return Err(reasons.join("; "));
    }
    offline
        .host
        .load_bytes(manifest.clone(), config, wasm.to_vec())
        .await
        .map_err(|e| e.to_string())?;
    // Its live instance holds a pool slot; the next plugin needs it more.
    offline.host.unload(&manifest.name);
    Ok(())
}
