//! Prekeys: what a device publishes through the relay so that others can start sessions while it is offline, the
//! signatures that bind them to the device, the upload with its proof of possession, and the device-local store of
//! their secrets.
//!
//! - signed X25519 prekey: id, creation time (for rotation), signed by the device signing key;
//! - one-time X25519 prekeys: unsigned, as in Signal (a relay that swaps one only makes the set-up behave as if none
//!   were left); the upload's proof covers them;
//! - ML-KEM-768 prekeys, one-time and a last-resort one, each signed (PQXDH requires it: nothing else authenticates
//!   a KEM key).

use std::collections::BTreeMap;

use curve25519_dalek::edwards::CompressedEdwardsY;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::device::DeviceKeys;
use crate::encoding::{Canonical, b64, b64_vec};
use crate::error::E2eError;
use crate::identity::{BatchItem, DeviceCertificate, is_low_order_x25519, verify_ed25519, verify_ed25519_batch};
use crate::kdf::{sha256, x25519_public};
use crate::kem::{self, KemKeyPair};

/// Label of a signed X25519 prekey's signed bytes.
pub const SIGNED_PREKEY_LABEL: &str = "imfree/v1/signed-prekey";
/// Label of an ML-KEM prekey's signed bytes.
pub const KEM_PREKEY_LABEL: &str = "imfree/v1/kem-prekey";
/// Label of the key-upload proof.
pub const KEY_UPLOAD_LABEL: &str = "imfree/v1/key-upload";
/// Most one-time prekeys of either kind in one upload.
pub const MAX_UPLOAD_PREKEYS: usize = 200;

/// A device's medium-term X25519 prekey, rotated on a schedule (docs/crypto.md: 7 days, secret kept 30 more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPrekey {
    /// Id, unique among the device's signed prekeys.
    pub id: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// X25519 public key.
    #[serde(with = "b64")]
    pub public: [u8; 32],
    /// Ed25519 signature by the device signing key over [`SignedPrekey::signed_bytes`].
    #[serde(with = "b64")]
    pub signature: [u8; 64],
}

impl SignedPrekey {
    /// `"imfree/v1/signed-prekey" 0x00 || id (u32 BE) || created_at (u64 BE) || public`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(SIGNED_PREKEY_LABEL);
        c.u32(self.id).u64(self.created_at).bytes(&self.public);
        c.0
    }

    /// Check the signature by `device_signing_key` and that the key is not a low-order point.
    pub fn verify(&self, device_signing_key: &[u8; 32]) -> Result<(), E2eError> {
        verify_ed25519(device_signing_key, &self.signed_bytes(), &self.signature, "signed prekey")?;
        if is_low_order_x25519(&self.public) {
            return Err(E2eError::InvalidKey("signed prekey is a low-order point"));
        }
        Ok(())
    }
}

/// A one-time X25519 prekey (handed out once by the relay, deleted by the device when used).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimePrekey {
    /// Id, unique among the device's one-time X25519 prekeys.
    pub id: u32,
    /// X25519 public key.
    #[serde(with = "b64")]
    pub public: [u8; 32],
}

/// Whether an ML-KEM prekey is used once or is the last resort when the one-time ones run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KemPrekeyKind {
    /// Used for one session set-up, then deleted.
    OneTime,
    /// Reused until rotated; first messages made with it go through the replay cache.
    LastResort,
}

impl KemPrekeyKind {
    /// Its byte in signed and hashed encodings: 1 one-time, 2 last resort.
    pub fn code(self) -> u8 {
        match self {
            KemPrekeyKind::OneTime => 1,
            KemPrekeyKind::LastResort => 2,
        }
    }
}

/// A signed ML-KEM-768 prekey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KemPrekey {
    /// Id, unique among the device's ML-KEM prekeys (both kinds share the id space).
    pub id: u32,
    /// One-time or last resort.
    pub kind: KemPrekeyKind,
    /// Unix seconds.
    pub created_at: u64,
    /// Encapsulation key, 1184 bytes.
    #[serde(with = "b64_vec")]
    pub public: Vec<u8>,
    /// Ed25519 signature by the device signing key over [`KemPrekey::signed_bytes`].
    #[serde(with = "b64")]
    pub signature: [u8; 64],
}

impl KemPrekey {
    /// `"imfree/v1/kem-prekey" 0x00 || kind (1 byte) || id (u32 BE) || created_at (u64 BE) || public (1184 bytes)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(KEM_PREKEY_LABEL);
        c.u8(self.kind.code()).u32(self.id).u64(self.created_at).bytes(&self.public);
        c.0
    }

    /// Check the signature by `device_signing_key` and the FIPS 203 key check.
    pub fn verify(&self, device_signing_key: &[u8; 32]) -> Result<(), E2eError> {
        kem::validate_public_key(&self.public)?;
        verify_ed25519(device_signing_key, &self.signed_bytes(), &self.signature, "ML-KEM prekey")
    }
}

/// What the relay serves for one device: enough for one PQXDH set-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyBundle {
    /// The device's certificate from its user identity.
    pub certificate: DeviceCertificate,
    /// The current signed prekey.
    pub signed_prekey: SignedPrekey,
    /// A one-time X25519 prekey, while any are left.
    pub one_time_prekey: Option<OneTimePrekey>,
    /// A one-time ML-KEM prekey, or the last-resort one when none are left.
    pub kem_prekey: KemPrekey,
}

impl PrekeyBundle {
    /// Check every signature and key. The caller must still compare `certificate.user_identity` with the identity
    /// key it has pinned for the contact.
    ///
    /// The three signatures (device certificate, signed prekey, ML-KEM prekey) are checked together in one batch
    /// ([`crate::identity`]'s batched Ed25519 check: about half the cost of three separate checks). If the batch
    /// fails, or anything it needs is unusable, they are checked one by one as [`PrekeyBundle::verify_each`] does,
    /// so the error names the first thing wrong exactly as before.
    pub fn verify(&self) -> Result<(), E2eError> {
        if !self.signatures_verify_batched() {
            return self.verify_each();
        }
        // The signatures are good (and the device signing key parsed for them): what remains are verify_each's
        // key checks, in its order.
        if is_low_order_x25519(&self.certificate.agreement_key) {
            return Err(E2eError::InvalidKey("device agreement key is a low-order point"));
        }
        if is_low_order_x25519(&self.signed_prekey.public) {
            return Err(E2eError::InvalidKey("signed prekey is a low-order point"));
        }
        kem::validate_public_key(&self.kem_prekey.public)?;
        self.check_one_time_prekey()
    }

    /// The three signatures in one batch; `false` if any is bad or a key does not parse.
    fn signatures_verify_batched(&self) -> bool {
        let cert = &self.certificate;
        let (Some(user), Some(device)) =
            (CompressedEdwardsY(cert.user_identity).decompress(), CompressedEdwardsY(cert.signing_key).decompress())
        else {
            return false;
        };
        let (cert_bytes, spk_bytes, kem_bytes) =
            (cert.signed_bytes(), self.signed_prekey.signed_bytes(), self.kem_prekey.signed_bytes());
        verify_ed25519_batch(&[
            BatchItem { public: &cert.user_identity, point: &user, message: &cert_bytes, signature: &cert.signature },
            BatchItem {
                public: &cert.signing_key,
                point: &device,
                message: &spk_bytes,
                signature: &self.signed_prekey.signature,
            },
            BatchItem {
                public: &cert.signing_key,
                point: &device,
                message: &kem_bytes,
                signature: &self.kem_prekey.signature,
            },
        ])
    }

    /// The same checks as [`PrekeyBundle::verify`], each signature on its own with `verify_strict`; the first
    /// failure is the error.
    pub fn verify_each(&self) -> Result<(), E2eError> {
        self.certificate.verify()?;
        self.signed_prekey.verify(&self.certificate.signing_key)?;
        self.kem_prekey.verify(&self.certificate.signing_key)?;
        self.check_one_time_prekey()
    }

    fn check_one_time_prekey(&self) -> Result<(), E2eError> {
        if let Some(otpk) = &self.one_time_prekey
            && is_low_order_x25519(&otpk.public)
        {
            return Err(E2eError::InvalidKey("one-time prekey is a low-order point"));
        }
        Ok(())
    }
}

/// A device's prekey upload to the relay, with proof that the certified device made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpload {
    /// The uploading device's certificate.
    pub certificate: DeviceCertificate,
    /// A new signed prekey, if rotating.
    pub signed_prekey: Option<SignedPrekey>,
    /// New one-time X25519 prekeys.
    pub one_time_prekeys: Vec<OneTimePrekey>,
    /// New ML-KEM prekeys (one-time, and a last-resort one when rotating it).
    pub kem_prekeys: Vec<KemPrekey>,
    /// Ed25519 signature by the device signing key over [`KeyUpload::proof_bytes`] with the relay's challenge.
    #[serde(with = "b64")]
    pub proof: [u8; 64],
}

impl KeyUpload {
    /// Make and sign an upload. `challenge` is a fresh value from the relay for this connection (so that an old
    /// upload cannot be replayed to re-add used one-time prekeys).
    pub fn sign(
        device: &DeviceKeys,
        certificate: DeviceCertificate,
        signed_prekey: Option<SignedPrekey>,
        one_time_prekeys: Vec<OneTimePrekey>,
        kem_prekeys: Vec<KemPrekey>,
        challenge: &[u8],
    ) -> Self {
        let mut upload = KeyUpload { certificate, signed_prekey, one_time_prekeys, kem_prekeys, proof: [0u8; 64] };
        upload.proof = device.sign(&upload.proof_bytes(challenge));
        upload
    }

    /// `"imfree/v1/key-upload" 0x00 || challenge (u32 BE length, bytes) || SHA-256(certificate signed bytes) ||
    /// signed prekey (0x00 | 0x01 || its signed bytes hash) || count (u32 BE) || (id || public)* ||
    /// count (u32 BE) || SHA-256(kem prekey signed bytes)*`.
    pub fn proof_bytes(&self, challenge: &[u8]) -> Vec<u8> {
        let mut c = Canonical::labelled(KEY_UPLOAD_LABEL);
        c.var(challenge).bytes(&sha256(&self.certificate.signed_bytes()));
        match &self.signed_prekey {
            None => c.u8(0),
            Some(spk) => c.u8(1).bytes(&sha256(&spk.signed_bytes())),
        };
        c.u32(self.one_time_prekeys.len() as u32);
        for otpk in &self.one_time_prekeys {
            c.u32(otpk.id).bytes(&otpk.public);
        }
        c.u32(self.kem_prekeys.len() as u32);
        for kpk in &self.kem_prekeys {
            c.bytes(&sha256(&kpk.signed_bytes()));
        }
        c.0
    }

    /// What the relay checks before storing anything: the certificate, the proof over `challenge`, every prekey
    /// signature and key, the counts, and that no id repeats within the upload.
    pub fn verify(&self, challenge: &[u8]) -> Result<(), E2eError> {
        if self.one_time_prekeys.len() > MAX_UPLOAD_PREKEYS || self.kem_prekeys.len() > MAX_UPLOAD_PREKEYS {
            return Err(E2eError::TooMany("prekeys in one upload"));
        }
        self.certificate.verify()?;
        let signer = &self.certificate.signing_key;
        verify_ed25519(signer, &self.proof_bytes(challenge), &self.proof, "key upload")?;
        if let Some(spk) = &self.signed_prekey {
            spk.verify(signer)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for otpk in &self.one_time_prekeys {
            if !seen.insert(otpk.id) {
                return Err(E2eError::Malformed("repeated one-time prekey id"));
            }
            if is_low_order_x25519(&otpk.public) {
                return Err(E2eError::InvalidKey("one-time prekey is a low-order point"));
            }
        }
        seen.clear();
        for kpk in &self.kem_prekeys {
            if !seen.insert(kpk.id) {
                return Err(E2eError::Malformed("repeated ML-KEM prekey id"));
            }
            kpk.verify(signer)?;
        }
        Ok(())
    }
}

/// An X25519 prekey as the responder holds it: the secret, and the public key it published (kept beside the secret
/// so that a set-up does not recompute it).
pub struct X25519Prekey {
    /// The secret.
    pub secret: Zeroizing<[u8; 32]>,
    /// Its public key, `x25519_public(secret)`.
    pub public: [u8; 32],
}

/// The secrets a responder looks up by the ids a first message names.
pub trait PrekeySecrets {
    /// The signed prekey's X25519 key pair.
    fn signed_prekey(&self, id: u32) -> Option<X25519Prekey>;
    /// A one-time X25519 prekey's key pair, if still held.
    fn one_time_prekey(&self, id: u32) -> Option<X25519Prekey>;
    /// An ML-KEM prekey, if still held.
    fn kem_prekey(&self, id: u32) -> Option<(&KemKeyPair, KemPrekeyKind)>;
}

/// The prekeys a successful first message used up: the caller deletes them from its store (and the relay has
/// already handed them out), so that the same first message can never be accepted again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedPrekeys {
    /// The one-time X25519 prekey, if one was used.
    pub one_time_prekey: Option<u32>,
    /// The one-time ML-KEM prekey, if one was used (the last-resort one is never consumed).
    pub kem_one_time_prekey: Option<u32>,
}

/// A device's prekey secrets, in memory; serialisable for the encrypted key store. One implementation of
/// [`PrekeySecrets`]; a client may keep them elsewhere.
#[derive(Default, Serialize, Deserialize)]
pub struct LocalPrekeys {
    signed: BTreeMap<u32, StoredSecret>,
    one_time: BTreeMap<u32, StoredSecret>,
    kem: BTreeMap<u32, StoredKem>,
    #[serde(skip)]
    kem_expanded: BTreeMap<u32, KemKeyPair>,
    next_signed_id: u32,
    next_one_time_id: u32,
    next_kem_id: u32,
}

/// An X25519 prekey secret as stored: `{created_at, secret}`. The public key is derived when the secret is made or
/// loaded and never stored, so the stored form is unchanged.
#[derive(Serialize, Deserialize)]
#[serde(from = "StoredSecretFields")]
struct StoredSecret {
    created_at: u64,
    #[serde(with = "b64")]
    secret: [u8; 32],
    #[serde(skip)]
    public: [u8; 32],
}

impl StoredSecret {
    fn new(created_at: u64, secret: [u8; 32]) -> Self {
        StoredSecret { created_at, public: x25519_public(&secret), secret }
    }

    fn pair(&self) -> X25519Prekey {
        X25519Prekey { secret: Zeroizing::new(self.secret), public: self.public }
    }
}

impl Drop for StoredSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// What [`StoredSecret`] is read from.
#[derive(Deserialize)]
struct StoredSecretFields {
    created_at: u64,
    #[serde(with = "b64")]
    secret: [u8; 32],
}

impl Drop for StoredSecretFields {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl From<StoredSecretFields> for StoredSecret {
    fn from(fields: StoredSecretFields) -> Self {
        StoredSecret::new(fields.created_at, fields.secret)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKem {
    kind: KemPrekeyKind,
    created_at: u64,
    #[serde(with = "b64")]
    seed: [u8; 64],
}

impl Drop for StoredKem {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

impl LocalPrekeys {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild the expanded ML-KEM keys after deserialising.
    pub fn expand(&mut self) {
        self.kem_expanded = self.kem.iter().map(|(id, k)| (*id, KemKeyPair::from_seed(k.seed))).collect();
    }

    /// Make a new signed prekey (rotation): older ones stay until [`LocalPrekeys::retire_signed_before`].
    pub fn new_signed_prekey(&mut self, rng: &mut impl CryptoRngCore, device: &DeviceKeys, now: u64) -> SignedPrekey {
        let id = self.next_signed_id;
        self.next_signed_id = self.next_signed_id.wrapping_add(1);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let stored = StoredSecret::new(now, secret);
        zeroize::Zeroize::zeroize(&mut secret);
        let mut spk = SignedPrekey { id, created_at: now, public: stored.public, signature: [0u8; 64] };
        spk.signature = device.sign(&spk.signed_bytes());
        self.signed.insert(id, stored);
        spk
    }

    /// Make `count` one-time X25519 prekeys.
    pub fn new_one_time_prekeys(&mut self, rng: &mut impl CryptoRngCore, count: usize, now: u64) -> Vec<OneTimePrekey> {
        (0..count)
            .map(|_| {
                let id = self.next_one_time_id;
                self.next_one_time_id = self.next_one_time_id.wrapping_add(1);
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                let stored = StoredSecret::new(now, secret);
                zeroize::Zeroize::zeroize(&mut secret);
                let public = stored.public;
                self.one_time.insert(id, stored);
                OneTimePrekey { id, public }
            })
            .collect()
    }

    /// Make an ML-KEM prekey of the given kind, signed by the device.
    pub fn new_kem_prekey(
        &mut self,
        rng: &mut impl CryptoRngCore,
        device: &DeviceKeys,
        kind: KemPrekeyKind,
        now: u64,
    ) -> KemPrekey {
        let id = self.next_kem_id;
        self.next_kem_id = self.next_kem_id.wrapping_add(1);
        let pair = KemKeyPair::generate(rng);
        let mut kpk = KemPrekey { id, kind, created_at: now, public: pair.public_key().to_vec(), signature: [0u8; 64] };
        kpk.signature = device.sign(&kpk.signed_bytes());
        self.kem.insert(id, StoredKem { kind, created_at: now, seed: *pair.seed() });
        self.kem_expanded.insert(id, pair);
        kpk
    }

    /// Delete what a first message used.
    pub fn consume(&mut self, consumed: &ConsumedPrekeys) {
        if let Some(id) = consumed.one_time_prekey {
            self.one_time.remove(&id);
        }
        if let Some(id) = consumed.kem_one_time_prekey {
            self.kem.remove(&id);
            self.kem_expanded.remove(&id);
        }
    }

    /// Delete signed prekeys made before `cutoff` (unix seconds), keeping the newest one whatever its age.
    pub fn retire_signed_before(&mut self, cutoff: u64) {
        let newest = self.signed.iter().max_by_key(|(_, s)| s.created_at).map(|(id, _)| *id);
        self.signed.retain(|id, s| Some(*id) == newest || s.created_at >= cutoff);
    }

    /// Delete last-resort ML-KEM prekeys made before `cutoff`, keeping the newest one; the replay cache entries for
    /// a deleted key can go with it.
    pub fn retire_last_resort_before(&mut self, cutoff: u64) {
        let newest = self
            .kem
            .iter()
            .filter(|(_, k)| k.kind == KemPrekeyKind::LastResort)
            .max_by_key(|(_, k)| k.created_at)
            .map(|(id, _)| *id);
        let expanded = &mut self.kem_expanded;
        self.kem.retain(|id, k| {
            let keep = k.kind == KemPrekeyKind::OneTime || Some(*id) == newest || k.created_at >= cutoff;
            if !keep {
                expanded.remove(id);
            }
            keep
        });
    }

    /// How many one-time prekeys of each kind are left (X25519, ML-KEM), to decide when to replenish.
    pub fn one_time_counts(&self) -> (usize, usize) {
        (self.one_time.len(), self.kem.values().filter(|k| k.kind == KemPrekeyKind::OneTime).count())
    }
}

impl PrekeySecrets for LocalPrekeys {
    fn signed_prekey(&self, id: u32) -> Option<X25519Prekey> {
        self.signed.get(&id).map(StoredSecret::pair)
    }
    fn one_time_prekey(&self, id: u32) -> Option<X25519Prekey> {
        self.one_time.get(&id).map(StoredSecret::pair)
    }
    fn kem_prekey(&self, id: u32) -> Option<(&KemKeyPair, KemPrekeyKind)> {
        let kind = self.kem.get(&id)?.kind;
        self.kem_expanded.get(&id).map(|pair| (pair, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UserIdentity;
    use rand_core::OsRng;

    fn device() -> (UserIdentity, DeviceKeys, DeviceCertificate) {
        let user = UserIdentity::generate(&mut OsRng);
        let dev = DeviceKeys::generate();
        let cert = user.certify_device(1, &dev, 100);
        (user, dev, cert)
    }

    #[test]
    fn bundle_and_upload_verify_and_refuse_tampering() {
        let (_, dev, cert) = device();
        let mut store = LocalPrekeys::new();
        let spk = store.new_signed_prekey(&mut OsRng, &dev, 100);
        let otpks = store.new_one_time_prekeys(&mut OsRng, 3, 100);
        let kpk = store.new_kem_prekey(&mut OsRng, &dev, KemPrekeyKind::OneTime, 100);
        let last = store.new_kem_prekey(&mut OsRng, &dev, KemPrekeyKind::LastResort, 100);
        let upload = KeyUpload::sign(&dev, cert.clone(), Some(spk.clone()), otpks.clone(), vec![kpk.clone(), last], b"c1");
        upload.verify(b"c1").unwrap();
        assert_eq!(upload.verify(b"c2"), Err(E2eError::BadSignature("key upload")));
        let mut swapped = upload.clone();
        swapped.one_time_prekeys[0].public = otpks[1].public;
        assert!(swapped.verify(b"c1").is_err());

        let bundle = PrekeyBundle { certificate: cert, signed_prekey: spk, one_time_prekey: Some(otpks[0].clone()), kem_prekey: kpk };
        bundle.verify().unwrap();
        let json = serde_json::to_string(&bundle).unwrap();
        assert_eq!(serde_json::from_str::<PrekeyBundle>(&json).unwrap(), bundle);
        let mut bad = bundle.clone();
        bad.kem_prekey.kind = KemPrekeyKind::LastResort;
        assert!(bad.verify().is_err());
        let mut bad = bundle.clone();
        bad.signed_prekey.public[0] ^= 1;
        assert!(bad.verify().is_err());
        let mut bad = bundle.clone();
        bad.kem_prekey.public[5] ^= 1;
        assert!(bad.verify().is_err());
        // A key signed by another device of another user does not pass as this device's.
        let (_, other_dev, _) = device();
        let mut other_store = LocalPrekeys::new();
        let mut bad = bundle.clone();
        bad.signed_prekey = other_store.new_signed_prekey(&mut OsRng, &other_dev, 100);
        assert!(bad.verify().is_err());
    }

    /// The batched check and the one-by-one check agree on every bundle, good or bad, and name the same error.
    #[test]
    fn batched_bundle_check_matches_one_by_one() {
        let (user, dev, cert) = device();
        let mut store = LocalPrekeys::new();
        let spk = store.new_signed_prekey(&mut OsRng, &dev, 100);
        let otpk = store.new_one_time_prekeys(&mut OsRng, 1, 100).remove(0);
        let kpk = store.new_kem_prekey(&mut OsRng, &dev, KemPrekeyKind::OneTime, 100);
        let bundle = PrekeyBundle { certificate: cert, signed_prekey: spk, one_time_prekey: Some(otpk), kem_prekey: kpk };
        // A small-order (identity) key, a key that does not decompress, a low-order X25519 key.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let not_a_point = (0..=255u8)
            .map(|b| [b; 32])
            .find(|k| CompressedEdwardsY(*k).decompress().is_none())
            .unwrap();
        type Tampering = Box<dyn Fn(&mut PrekeyBundle)>;
        let tamperings: Vec<Tampering> = vec![
            Box::new(|_| {}),
            Box::new(|b| b.certificate.signature[0] ^= 1),
            Box::new(|b| b.certificate.signature[40] ^= 1),
            Box::new(|b| b.certificate.signature[63] |= 0xf0),
            Box::new(|b| b.certificate.device_id ^= 1),
            Box::new(|b| b.signed_prekey.signature[1] ^= 1),
            Box::new(|b| b.signed_prekey.created_at += 1),
            Box::new(|b| b.kem_prekey.signature[2] ^= 1),
            Box::new(|b| b.kem_prekey.signature[33] ^= 1),
            Box::new(|b| b.kem_prekey.id ^= 1),
            Box::new(|b| b.kem_prekey.public[7] ^= 1),
            Box::new(|b| b.kem_prekey.public.truncate(100)),
            Box::new(|b| b.certificate.agreement_key = [0u8; 32]),
            Box::new(|b| b.signed_prekey.public = [0u8; 32]),
            Box::new(|b| b.one_time_prekey.as_mut().unwrap().public = [0u8; 32]),
            Box::new(move |b| b.certificate.signing_key = identity_point),
            Box::new(move |b| b.certificate.signing_key = not_a_point),
            Box::new(move |b| b.certificate.user_identity = not_a_point),
            // Signatures swapped between the two prekeys.
            Box::new(|b| std::mem::swap(&mut b.signed_prekey.signature, &mut b.kem_prekey.signature)),
        ];
        for (i, tamper) in tamperings.iter().enumerate() {
            let mut b = bundle.clone();
            tamper(&mut b);
            assert_eq!(b.verify(), b.verify_each(), "tampering {i}");
            assert_eq!(b.verify().is_ok(), i == 0, "tampering {i}");
        }
        // A certificate re-signed by the same user over a changed field is fine again.
        let mut b = bundle.clone();
        b.certificate = user.certify_device(2, &dev, 100);
        assert_eq!(b.verify(), Ok(()));
    }

    #[test]
    fn local_store_round_trips_and_consumes() {
        let (_, dev, _) = device();
        let mut store = LocalPrekeys::new();
        store.new_signed_prekey(&mut OsRng, &dev, 100);
        let otpk = store.new_one_time_prekeys(&mut OsRng, 2, 100);
        let kpk = store.new_kem_prekey(&mut OsRng, &dev, KemPrekeyKind::OneTime, 100);
        let json = serde_json::to_string(&store).unwrap();
        let mut again: LocalPrekeys = serde_json::from_str(&json).unwrap();
        again.expand();
        assert_eq!(again.kem_prekey(kpk.id).unwrap().0.public_key().as_slice(), kpk.public.as_slice());
        // The public keys are not stored but derived again on loading.
        assert!(!json.contains("public"));
        let spk = again.signed_prekey(0).unwrap();
        assert_eq!(spk.public, x25519_public(&spk.secret));
        assert_eq!(spk.public, store.signed_prekey(0).unwrap().public);
        assert_eq!(again.one_time_prekey(otpk[1].id).unwrap().public, otpk[1].public);
        again.consume(&ConsumedPrekeys { one_time_prekey: Some(otpk[0].id), kem_one_time_prekey: Some(kpk.id) });
        assert!(again.one_time_prekey(otpk[0].id).is_none());
        assert!(again.kem_prekey(kpk.id).is_none());
        assert_eq!(again.one_time_counts(), (1, 0));
    }
}
