//! The relay's Noise static key: made on first start, kept in the data dir (mode 0600), pinned by every client.
//! Losing or replacing it makes every client refuse the relay until its user accepts the new key.

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

/// File name of the key under the data dir.
pub const KEY_FILE: &str = "relay-noise.key";

/// Load the key, or make and store one. Returns the secret and whether it was generated now.
pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<(Zeroizing<[u8; 32]>, bool)> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let text = std::str::from_utf8(&bytes).map_err(|_| anyhow::anyhow!("{} is not a hex key", path.display()))?;
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), secret.as_mut())
                .map_err(|_| anyhow::anyhow!("{} must hold 64 hex digits (a 32-byte X25519 key)", path.display()))?;
            Ok((secret, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let (secret, _) = imfree_crypto::noise::generate_static_keypair()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path)?;
            file.write_all(Zeroizing::new(hex::encode(secret.as_ref())).as_bytes())?;
            file.sync_all()?;
            Ok((secret, true))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}
