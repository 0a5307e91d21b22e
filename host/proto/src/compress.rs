//! Optional payload compression (gzip, brotli), applied by the sender before encryption and undone by the recipient
//! under a hard cap, so that a small bomb cannot become gigabytes in memory.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (RFC 1952).
    Gzip,
    /// Brotli (RFC 7932).
    Br,
}

/// Why decompression failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The output would exceed the limit.
    #[error("decompressed content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The input is not valid for the algorithm.
    #[error("compressed content is corrupt: {0}")]
    Corrupt(String),
}

/// Payloads smaller than this are not worth compressing.
pub const MIN_COMPRESS_BYTES: usize = 1024;

/// Compress `data`.
pub fn compress(alg: Compression, data: &[u8]) -> Vec<u8> {
    match alg {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(data);
            enc.finish().unwrap_or_default()
        }
        Compression::Br => {
            let mut out = Vec::new();
            {
                let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                let _ = enc.write_all(data);
            }
            out
        }
    }
}

/// Decompress `data`, refusing to produce more than `limit` bytes. Reads at most `limit + 1` bytes of output, so
/// memory and time stay bounded whatever the input claims.
pub fn decompress(alg: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let reader: Box<dyn Read + '_> = match alg {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
        Compression::Br => Box::new(brotli::Decompressor::new(data, 4096)),
    };
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(|e| DecompressError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both() {
        let text = "hello imfree ".repeat(500);
        for alg in [Compression::Gzip, Compression::Br] {
            let packed = compress(alg, text.as_bytes());
            assert!(packed.len() < text.len() / 5);
            assert_eq!(decompress(alg, &packed, 1 << 20).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 64 << 20];
        for alg in [Compression::Gzip, Compression::Br] {
            let bomb = compress(alg, &zeros);
            assert!(bomb.len() < 200 << 10, "{alg:?} bomb is {} bytes", bomb.len());
            assert_eq!(decompress(alg, &bomb, 1 << 20), Err(DecompressError::TooLarge { limit: 1 << 20 }));
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for alg in [Compression::Gzip, Compression::Br] {
            assert!(matches!(decompress(alg, b"\x1f\x8b garbage", 1024), Err(DecompressError::Corrupt(_))));
        }
    }
}
