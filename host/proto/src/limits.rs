//! Limits that bound every decoder of untrusted bytes. Each is a config value; the defaults are safe.

use serde::{Deserialize, Serialize};

/// Size limits applied while decoding frames and payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest encoded frame (JSON bytes, after reassembly of transport fragments). Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Largest opaque payload (`data`, decoded). Default 704 KiB, so that its base64 (4/3 larger) and the rest of a
    /// `send` fit in one frame.
    pub max_payload_bytes: usize,
    /// Largest decompressed content a client accepts from a compressed payload. Default 4 MiB.
    pub max_decompressed_bytes: usize,
    /// Most ids in one `ack` or `receipt` frame. Default 1024.
    pub max_ids_per_frame: usize,
    /// Longest user name. Default 64.
    pub max_name_len: usize,
    /// Most device payloads in one `send` (and devices in one `keys.claim`). Default 64.
    pub max_devices_per_send: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1 << 20,
            max_payload_bytes: 704 << 10,
            max_decompressed_bytes: 4 << 20,
            max_ids_per_frame: 1024,
            max_name_len: 64,
            max_devices_per_send: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maximum_payload_fits_in_a_frame() {
        let limits = Limits::default();
        let base64_len = limits.max_payload_bytes.div_ceil(3) * 4;
        assert!(base64_len + 1024 <= limits.max_frame_bytes, "{base64_len}");
    }
}
