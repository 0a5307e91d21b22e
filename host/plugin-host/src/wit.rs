//! Generated bindings, one module per released WIT version (Zed's extension host pattern).
//!
//! Each `since_vX_Y_Z` module runs `bindgen!` over its own folder under `wit/`, so a plugin built against an older
//! API keeps loading after a new version ships. The data types did not change between the released versions (0.2.0
//! and 0.3.0 only added types), so older versions reuse the newest `types` module (`with`), and the hooks, whose signatures
//! are the same in every version, are called through the newest bindings whatever the version a component was built
//! against. What differs is the set of host interfaces a component imports: the linker holds every version's, and
//! an older version's host traits are implemented by delegating to the newest implementation
//! (`capabilities::older`).

/// `imfree:plugin@0.3.0`: adds `files`, `mail`, and reactions and file summaries among the messages delivered.
pub mod since_v0_3_0 {
    #![allow(missing_docs, unreachable_pub)]
    wasmtime::component::bindgen!({
        path: "../../wit/imfree-plugin@0.3.0",
        world: "imfree:plugin/plugin@0.3.0",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

/// `imfree:plugin@0.2.0`: adds `conversations`, `accounts`, `messaging.send` and the http hook in bot scope. Its
/// host interfaces only; types and hooks are the newest version's.
pub mod since_v0_2_0 {
    #![allow(missing_docs, unreachable_pub)]
    wasmtime::component::bindgen!({
        path: "../../wit/imfree-plugin@0.2.0",
        world: "imfree:plugin/plugin@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "imfree:plugin/types@0.2.0": super::since_v0_3_0::imfree::plugin::types,
        },
    });
}

/// `imfree:plugin@0.1.0`: its host interfaces only; types and hooks are the newest version's.
pub mod since_v0_1_0 {
    #![allow(missing_docs, unreachable_pub)]
    wasmtime::component::bindgen!({
        path: "../../wit/imfree-plugin@0.1.0",
        world: "imfree:plugin/plugin@0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "imfree:plugin/types@0.1.0": super::since_v0_3_0::imfree::plugin::types,
        },
    });
}

pub use since_v0_3_0 as latest;

/// The WIT API versions this host can load, newest first (`api` in plugin.toml).
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.3.0", "0.2.0", "0.1.0"];
