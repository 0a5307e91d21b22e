//! Safety numbers: what two users compare (read aloud, or scan as a QR code) to be sure that the identity keys their
//! clients pinned are each other's. After Signal's numeric fingerprint: each side's key and stable name are hashed
//! 5200 times with SHA-512; the first 30 bytes of each give 30 digits; the two halves are sorted, so both users see
//! the same 60 digits. This module owns only the computation; pinning and the identity-change warning are the
//! client's.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::error::E2eError;

/// Version prefix of the iterated hash (u16 BE), as in Signal's numeric fingerprint.
pub const FINGERPRINT_VERSION: u16 = 0;
/// SHA-512 iterations per side (Signal's value: raises the cost of searching for a key with a colliding number).
pub const ITERATIONS: u32 = 5200;
/// Version byte of the scannable (QR) payload.
pub const QR_VERSION: u8 = 1;
/// Length of the scannable payload: version, then two 32-byte fingerprints.
pub const QR_LEN: usize = 1 + 32 + 32;

/// The safety number of a pair of users, seen from the local user's side.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    local: [u8; 32],
    remote: [u8; 32],
}

impl std::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SafetyNumber").field(&self.display()).finish()
    }
}

/// The iterated hash of one side: `H_0 = SHA-512(version u16 BE || key || stable id)`,
/// `H_i = SHA-512(H_{i-1} || key)`, 5200 hashes in all.
pub fn fingerprint(identity_key: &[u8; 32], stable_id: &str) -> [u8; 64] {
    let mut hash: [u8; 64] = Sha512::new()
        .chain_update(FINGERPRINT_VERSION.to_be_bytes())
        .chain_update(identity_key)
        .chain_update(stable_id.as_bytes())
        .finalize()
        .into();
    for _ in 1..ITERATIONS {
        hash = Sha512::new().chain_update(hash).chain_update(identity_key).finalize().into();
    }
    hash
}

/// 30 digits from the first 30 bytes: six 5-byte big-endian chunks, each mod 100000, zero-padded to 5 digits.
fn digits30(hash: &[u8; 64]) -> String {
    let mut out = String::with_capacity(30);
    for chunk in hash[..30].chunks_exact(5) {
        let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", v % 100_000));
    }
    out
}

impl SafetyNumber {
    /// The safety number between the local user (`local_id`, e.g. `alice@example.org`, and its pinned user identity
    /// key) and a contact. Both users get the same digits. Costs 2 × 5200 SHA-512: compute once per contact key.
    pub fn new(local_id: &str, local_key: &[u8; 32], remote_id: &str, remote_key: &[u8; 32]) -> Self {
        let local_hash = fingerprint(local_key, local_id);
        let remote_hash = fingerprint(remote_key, remote_id);
        let (l, r) = (digits30(&local_hash), digits30(&remote_hash));
        let digits = if l <= r { l + &r } else { r + &l };
        let mut local = [0u8; 32];
        let mut remote = [0u8; 32];
        local.copy_from_slice(&local_hash[..32]);
        remote.copy_from_slice(&remote_hash[..32]);
        SafetyNumber { digits, local, remote }
    }

    /// The 60 digits, without spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The 12 groups of 5 digits.
    pub fn groups(&self) -> Vec<&str> {
        (0..12).map(|i| &self.digits[i * 5..i * 5 + 5]).collect()
    }

    /// The digits as shown to the user: 12 groups of 5 separated by spaces.
    pub fn display(&self) -> String {
        self.groups().join(" ")
    }

    /// The scannable payload this side shows: `version (1) || local fingerprint (32) || remote fingerprint (32)`,
    /// the fingerprints being the first 32 bytes of each side's iterated hash. 65 bytes: fits a small QR code.
    pub fn qr_payload(&self) -> [u8; QR_LEN] {
        let mut out = [0u8; QR_LEN];
        out[0] = QR_VERSION;
        out[1..33].copy_from_slice(&self.local);
        out[33..].copy_from_slice(&self.remote);
        out
    }

    /// Compare a payload scanned from the contact's screen with this side's view: their "local" must be our
    /// "remote" and the reverse. `Ok(true)` when both keys match; `Ok(false)` when they differ (a key was swapped
    /// or one side has an outdated key: show the mismatch); `Err` for a payload that is not a safety-number code.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool, E2eError> {
        if scanned.len() != QR_LEN {
            return Err(E2eError::Malformed("safety number payload length"));
        }
        if scanned[0] != QR_VERSION {
            return Err(E2eError::Malformed("safety number payload version"));
        }
        let theirs_local = scanned[1..33].ct_eq(&self.remote);
        let theirs_remote = scanned[33..].ct_eq(&self.local);
        Ok(bool::from(theirs_local & theirs_remote))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_see_the_same_number_and_scans_match() {
        let (ka, kb) = ([1u8; 32], [2u8; 32]);
        let a = SafetyNumber::new("alice@example.org", &ka, "bob@example.org", &kb);
        let b = SafetyNumber::new("bob@example.org", &kb, "alice@example.org", &ka);
        assert_eq!(a.digits(), b.digits());
        assert_eq!(a.digits().len(), 60);
        assert!(a.digits().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(a.groups().len(), 12);
        assert_eq!(a.display().len(), 71);
        assert!(a.matches_scanned(&b.qr_payload()).unwrap());
        assert!(b.matches_scanned(&a.qr_payload()).unwrap());
        // Scanning one's own code is not a match.
        assert!(!a.matches_scanned(&a.qr_payload()).unwrap());
        // A swapped key changes the number and fails the scan.
        let m = SafetyNumber::new("bob@example.org", &[3u8; 32], "alice@example.org", &ka);
        assert_ne!(m.digits(), a.digits());
        assert!(!a.matches_scanned(&m.qr_payload()).unwrap());
        assert!(a.matches_scanned(&[1u8; 10]).is_err());
        let mut bad = b.qr_payload();
        bad[0] = 9;
        assert!(a.matches_scanned(&bad).is_err());
    }
}
