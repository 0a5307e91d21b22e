//! Limits that bound every decoder of untrusted bytes. Each is a config value; the defaults are safe.

use serde::{Deserialize, Serialize};

/// Size limits applied while decoding frames and payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest encoded frame (JSON bytes, after reassembly of transport fragments). Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Largest opaque payload (`data`, decoded). Default 768 KiB.
    pub max_payload_bytes: usize,
    /// Largest decompressed content a client accepts from a compressed payload. Default 4 MiB.
    pub max_decompressed_bytes: usize,
    /// Most ids in one `ack` or `receipt` frame. Default 1024.
    pub max_ids_per_frame: usize,
    /// Longest user name. Default 64.
    pub max_name_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1 << 20,
            max_payload_bytes: 768 << 10,
            max_decompressed_bytes: 4 << 20,
            max_ids_per_frame: 1024,
            max_name_len: 64,
        }
    }
}
