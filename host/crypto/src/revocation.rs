//! The device revocation list: the user identity key's signed statement of which of the user's devices (by the
//! `device_id` of their [`crate::identity::DeviceCertificate`]) are revoked, and since when.
//!
//! Each new list has a higher `version` and names every device the previous one did (a device is never
//! un-revoked). The relay stores the newest list per user and serves it with the device list; clients verify it with
//! the user identity key they pinned, leave the listed devices out of every encryption, and remember the highest
//! version seen per user, so a relay that serves an older list (to bring a revoked device back) is caught.
//!
//! This module owns the format, its signature and the rules; where the list is stored and how it travels is the
//! relay's and the client's.

use ed25519_dalek::{Signer, SigningKey};

use crate::encoding::{Canonical, Reader};
use crate::error::E2eError;
use crate::identity::{UserIdentity, verify_ed25519};

/// Label of the signed bytes.
pub const REVOCATION_LABEL: &str = "imfree/v1/revocation-list";
/// Version byte of the binary encoding.
pub const REVOCATION_FORMAT: u8 = 1;
/// Most devices one list can name.
pub const MAX_REVOKED_DEVICES: usize = 4096;
/// Fixed part of the encoding: format 1 + identity 32 + version 8 + issued_at 8 + count 4, and the signature 64.
const FIXED_LEN: usize = 1 + 32 + 8 + 8 + 4 + 64;
/// One entry: device id 4 + revoked_at 8.
const ENTRY_LEN: usize = 4 + 8;

/// Why a revocation list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Bytes that are not a revocation list.
    #[error("malformed device revocation list: {0}")]
    Malformed(&'static str),
    /// The list is signed by (or names) another identity than the user's.
    #[error("the device revocation list belongs to another identity than this user's")]
    WrongIdentity,
    /// The signature does not verify.
    #[error("the device revocation list is not signed by the user's identity key")]
    BadSignature,
    /// An older list than one already seen: someone is trying to bring a revoked device back.
    #[error("device revocation list rolled back: version {got} was served, but version {known} was already seen")]
    Rollback {
        /// The highest version seen before.
        known: u64,
        /// The version served now.
        got: u64,
    },
    /// A newer list that no longer names a device the older one revoked.
    #[error("a new device revocation list must keep every device the previous one revoked (device {0} is missing)")]
    Unrevoked(u32),
    /// More devices than a list may name.
    #[error("a device revocation list names at most {MAX_REVOKED_DEVICES} devices")]
    TooMany,
}

/// One revoked device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedDevice {
    /// The `device_id` of the revoked device's certificate.
    pub device_id: u32,
    /// When it was revoked (Unix seconds, the revoking device's clock).
    pub revoked_at: u64,
}

/// A signed device revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// The user's Ed25519 identity key, which signs the list.
    pub user_identity: [u8; 32],
    /// 1 for the first list, then +1 per new list.
    pub version: u64,
    /// When this version was made (Unix seconds).
    pub issued_at: u64,
    /// The revoked devices, in strictly increasing `device_id` order.
    pub revoked: Vec<RevokedDevice>,
    /// Ed25519 signature by `user_identity` over [`RevocationList::signed_bytes`].
    pub signature: [u8; 64],
}

impl RevocationList {
    fn body(&self, c: &mut Canonical) {
        c.bytes(&self.user_identity).u64(self.version).u64(self.issued_at);
        c.u32(u32::try_from(self.revoked.len()).unwrap_or(u32::MAX));
        for r in &self.revoked {
            c.u32(r.device_id).u64(r.revoked_at);
        }
    }

    /// `"imfree/v1/revocation-list" 0x00 || user_identity 32 || version u64 || issued_at u64 || count u32 ||
    /// (device_id u32 || revoked_at u64) × count`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(REVOCATION_LABEL);
        self.body(&mut c);
        c.0
    }

    /// Sign a list. `revoked` is sorted and de-duplicated by device id (the first time given for an id is kept).
    pub fn sign(identity: &UserIdentity, version: u64, issued_at: u64, mut revoked: Vec<RevokedDevice>) -> Result<Self, RevocationError> {
        revoked.sort_by_key(|r| r.device_id);
        revoked.dedup_by_key(|r| r.device_id);
        if revoked.len() > MAX_REVOKED_DEVICES {
            return Err(RevocationError::TooMany);
        }
        let mut list = RevocationList { user_identity: identity.public_key(), version, issued_at, revoked, signature: [0; 64] };
        let key = SigningKey::from_bytes(&identity.seed());
        list.signature = key.sign(&list.signed_bytes()).to_bytes();
        Ok(list)
    }

    /// The next list after `previous` (or the first, version 1): everything `previous` revoked, and `device_id`
    /// revoked at `now` (unless it already was).
    pub fn revoke(identity: &UserIdentity, previous: Option<&RevocationList>, device_id: u32, now: u64) -> Result<Self, RevocationError> {
        let mut revoked = previous.map(|p| p.revoked.clone()).unwrap_or_default();
        if !revoked.iter().any(|r| r.device_id == device_id) {
            revoked.push(RevokedDevice { device_id, revoked_at: now });
        }
        let version = previous.map_or(1, |p| p.version.saturating_add(1));
        Self::sign(identity, version, now, revoked)
    }

    /// Binary encoding (what the relay stores and serves): `0x01 || user_identity 32 || version u64 || issued_at u64
    /// || count u32 || (device_id u32 || revoked_at u64) × count || signature 64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut c = Canonical::default();
        c.u8(REVOCATION_FORMAT);
        self.body(&mut c);
        c.bytes(&self.signature);
        c.0
    }

    /// Strict decoding of untrusted bytes: known format, at most [`MAX_REVOKED_DEVICES`] entries, device ids strictly
    /// increasing (one encoding per list), no trailing bytes. Nothing is verified here: call [`RevocationList::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, RevocationError> {
        let bad = |e: E2eError| match e {
            E2eError::Malformed(what) => RevocationError::Malformed(what),
            _ => RevocationError::Malformed("list"),
        };
        let mut r = Reader::new(bytes);
        if r.u8("format").map_err(bad)? != REVOCATION_FORMAT {
            return Err(RevocationError::Malformed("unknown format version"));
        }
        let user_identity = r.array("user identity").map_err(bad)?;
        let version = r.u64("version").map_err(bad)?;
        let issued_at = r.u64("issued at").map_err(bad)?;
        let count = r.u32("count").map_err(bad)? as usize;
        if count > MAX_REVOKED_DEVICES {
            return Err(RevocationError::TooMany);
        }
        if bytes.len() != FIXED_LEN + count * ENTRY_LEN {
            return Err(RevocationError::Malformed("length does not match the count"));
        }
        let mut revoked = Vec::with_capacity(count);
        for _ in 0..count {
            let device_id = r.u32("device id").map_err(bad)?;
            let revoked_at = r.u64("revoked at").map_err(bad)?;
            if revoked.last().is_some_and(|p: &RevokedDevice| p.device_id >= device_id) {
                return Err(RevocationError::Malformed("device ids must be strictly increasing"));
            }
            revoked.push(RevokedDevice { device_id, revoked_at });
        }
        let signature = r.array("signature").map_err(bad)?;
        if !r.rest().is_empty() {
            return Err(RevocationError::Malformed("trailing bytes"));
        }
        Ok(RevocationList { user_identity, version, issued_at, revoked, signature })
    }

    /// Check that the list is `identity`'s and signed by it.
    pub fn verify(&self, identity: &[u8; 32]) -> Result<(), RevocationError> {
        if &self.user_identity != identity {
            return Err(RevocationError::WrongIdentity);
        }
        if self.revoked.len() > MAX_REVOKED_DEVICES {
            return Err(RevocationError::TooMany);
        }
        verify_ed25519(identity, &self.signed_bytes(), &self.signature, "revocation list").map_err(|_| RevocationError::BadSignature)
    }

    /// Whether the list may replace `previous` (already verified): a higher version that still names every device
    /// `previous` revoked.
    pub fn follows(&self, previous: &RevocationList) -> Result<(), RevocationError> {
        if self.version <= previous.version {
            return Err(RevocationError::Rollback { known: previous.version, got: self.version });
        }
        match previous.revoked.iter().find(|p| !self.is_revoked(p.device_id)) {
            Some(missing) => Err(RevocationError::Unrevoked(missing.device_id)),
            None => Ok(()),
        }
    }

    /// Whether the device with this certificate id is revoked.
    pub fn is_revoked(&self, device_id: u32) -> bool {
        self.revoked.binary_search_by_key(&device_id, |r| r.device_id).is_ok()
    }
}

/// The rollback check a client makes with the highest version it has seen for a user (`known`, 0 for none): the
/// served list (`None` when the relay served none) must not be older.
pub fn check_not_rolled_back(known: u64, served: Option<&RevocationList>) -> Result<(), RevocationError> {
    let got = served.map_or(0, |l| l.version);
    if got < known {
        return Err(RevocationError::Rollback { known, got });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn lists_round_trip_verify_and_bind_every_field() {
        let user = UserIdentity::generate(&mut OsRng);
        let first = RevocationList::revoke(&user, None, 7, 100).unwrap();
        let second = RevocationList::revoke(&user, Some(&first), 3, 200).unwrap();
        assert_eq!(second.version, 2);
        assert_eq!(second.revoked.iter().map(|r| r.device_id).collect::<Vec<_>>(), [3, 7], "sorted");
        assert!(second.is_revoked(7) && second.is_revoked(3) && !second.is_revoked(4));
        second.follows(&first).unwrap();
        assert_eq!(first.follows(&second), Err(RevocationError::Rollback { known: 2, got: 1 }));
        let bytes = second.encode();
        let decoded = RevocationList::decode(&bytes).unwrap();
        assert_eq!(decoded, second);
        decoded.verify(&user.public_key()).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let refused = match RevocationList::decode(&bad) {
                Ok(l) => l.verify(&user.public_key()).is_err(),
                Err(_) => true,
            };
            assert!(refused, "flipping byte {i} must be caught");
        }
        let other = UserIdentity::generate(&mut OsRng);
        assert_eq!(second.verify(&other.public_key()), Err(RevocationError::WrongIdentity));
        assert_eq!(check_not_rolled_back(2, Some(&first)), Err(RevocationError::Rollback { known: 2, got: 1 }));
        assert_eq!(check_not_rolled_back(1, None), Err(RevocationError::Rollback { known: 1, got: 0 }));
        check_not_rolled_back(2, Some(&second)).unwrap();
    }

    #[test]
    fn a_list_that_drops_a_device_does_not_follow() {
        let user = UserIdentity::generate(&mut OsRng);
        let first = RevocationList::revoke(&user, None, 7, 100).unwrap();
        let dropped = RevocationList::sign(&user, 2, 200, vec![RevokedDevice { device_id: 8, revoked_at: 200 }]).unwrap();
        assert_eq!(dropped.follows(&first), Err(RevocationError::Unrevoked(7)));
    }

    #[test]
    fn untrusted_bytes_are_refused_cleanly() {
        let user = UserIdentity::generate(&mut OsRng);
        let list = RevocationList::revoke(&user, None, 1, 1).unwrap();
        let bytes = list.encode();
        assert!(RevocationList::decode(&[]).is_err());
        assert!(RevocationList::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RevocationList::decode(&longer).is_err());
        let mut huge = bytes.clone();
        huge[49..53].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(RevocationList::decode(&huge), Err(RevocationError::TooMany));
        let mut unsorted = RevocationList::revoke(&user, Some(&list), 2, 2).unwrap();
        unsorted.revoked.swap(0, 1);
        assert!(matches!(RevocationList::decode(&unsorted.encode()), Err(RevocationError::Malformed(_))));
        let mut future = bytes;
        future[0] = 2;
        assert!(matches!(RevocationList::decode(&future), Err(RevocationError::Malformed(_))));
    }
}
