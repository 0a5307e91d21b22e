//! The legacy plugin built against `imfree:plugin@0.2.0` (see `guest-legacy`): the host must keep loading it and
//! answering its host calls now that 0.3.0 has shipped.

wit_bindgen::generate!({
    path: "../../../../../wit/imfree-plugin@0.2.0",
    world: "imfree:plugin/plugin@0.2.0",
    generate_all,
});

const API: &str = "0.2.0";

include!("../../legacy/src/guest.rs");
