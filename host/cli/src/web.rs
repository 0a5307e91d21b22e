//! The web client embedded in the binary (host/web: the page and its WebAssembly engine, built by build.rs), which
//! `serve` hands to the relay to serve at `/`.

include!(concat!(env!("OUT_DIR"), "/web.rs"));
