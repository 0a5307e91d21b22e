//! Generated bindings, one module per released WIT version (Zed's extension host pattern).
//!
//! Each `since_vX_Y_Z` module runs `bindgen!` over its own folder under `wit/`, so a plugin built against an older
//! API keeps loading after a new version ships: the older version's host traits are then implemented by mapping
//! onto the newest implementation. There is one version today; `latest` names it.

/// `imfree:plugin@0.1.0`.
pub mod since_v0_1_0 {
    #![allow(missing_docs, unreachable_pub)]
    wasmtime::component::bindgen!({
        path: "../../wit/imfree-plugin@0.1.0",
        world: "imfree:plugin/plugin@0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

pub use since_v0_1_0 as latest;

/// The WIT API versions this host can load, newest first (`api` in plugin.toml).
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0"];
