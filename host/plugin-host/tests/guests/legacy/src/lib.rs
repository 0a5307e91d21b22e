//! A plugin built against the first API, `imfree:plugin@0.1.0`, with wit-bindgen directly (the SDK follows the
//! newest version). The host must keep loading it and answering its host calls after newer versions ship.
//! Commands: `kv KEY VALUE` (set, then get), `post CONVERSATION TEXT`, `config KEY`.

wit_bindgen::generate!({
    path: "../../../../../wit/imfree-plugin@0.1.0",
    world: "imfree:plugin/plugin@0.1.0",
    generate_all,
});

const API: &str = "0.1.0";

include!("guest.rs");
