//! PQXDH session set-up after Signal's specification (revision 3): four X25519 agreements and an ML-KEM-768
//! encapsulation, combined with HKDF-SHA-256. imfree additionally hashes the whole set-up transcript (both
//! identities, every key id and public key, the ephemeral key and the KEM ciphertext) into the HKDF info, and puts
//! the transcript hash into the session's associated data, so that no part of the set-up can be swapped without
//! the session key changing.
//!
//! This module only derives keys; [`crate::ratchet::Session`] runs it, and deletes nothing itself: the responder
//! learns which prekeys were used ([`ConsumedPrekeys`]) and the caller deletes them once the first message has
//! decrypted.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::device::DeviceKeys;
use crate::encoding::{Canonical, Reader, b64, b64_vec};
use crate::error::E2eError;
use crate::identity::DeviceCertificate;
use crate::kdf::{
    PQXDH_F, PQXDH_INFO, PQXDH_TRANSCRIPT_LABEL, REPLAY_LABEL, X25519Peer, hkdf_sha256, sha256, x25519, x25519_public,
};
use crate::kem;
use crate::prekeys::{ConsumedPrekeys, KemPrekeyKind, PrekeyBundle, PrekeySecrets};

/// Label of the session associated data.
pub const SESSION_AD_LABEL: &str = "imfree/v1/session-ad";

/// What the initiator sends with its first messages so that the responder can derive the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PqxdhHeader {
    /// The initiator's device certificate (its user identity and device keys).
    pub initiator: DeviceCertificate,
    /// The initiator's ephemeral X25519 key (EK_A).
    #[serde(with = "b64")]
    pub ephemeral: [u8; 32],
    /// The responder's signed prekey used.
    pub signed_prekey_id: u32,
    /// The responder's one-time X25519 prekey used, if the bundle had one.
    pub one_time_prekey_id: Option<u32>,
    /// The responder's ML-KEM prekey used.
    pub kem_prekey_id: u32,
    /// Whether that was a one-time or the last-resort ML-KEM prekey.
    pub kem_prekey_kind: KemPrekeyKind,
    /// The ML-KEM-768 ciphertext (1088 bytes).
    #[serde(with = "b64_vec")]
    pub kem_ciphertext: Vec<u8>,
}

impl PqxdhHeader {
    /// Binary layout (docs/crypto.md): certificate (user 32 || device id u32 || signing 32 || agreement 32 ||
    /// issued_at u64 || signature 64) || ephemeral 32 || signed prekey id u32 || 0x00 | 0x01 || one-time id u32 ||
    /// kem kind u8 || kem id u32 || ciphertext 1088.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let c = &self.initiator;
        out.extend_from_slice(&c.user_identity);
        out.extend_from_slice(&c.device_id.to_be_bytes());
        out.extend_from_slice(&c.signing_key);
        out.extend_from_slice(&c.agreement_key);
        out.extend_from_slice(&c.issued_at.to_be_bytes());
        out.extend_from_slice(&c.signature);
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.signed_prekey_id.to_be_bytes());
        match self.one_time_prekey_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        out.push(self.kem_prekey_kind.code());
        out.extend_from_slice(&self.kem_prekey_id.to_be_bytes());
        out.extend_from_slice(&self.kem_ciphertext);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, E2eError> {
        let initiator = DeviceCertificate {
            user_identity: r.array("certificate")?,
            device_id: r.u32("certificate")?,
            signing_key: r.array("certificate")?,
            agreement_key: r.array("certificate")?,
            issued_at: r.u64("certificate")?,
            signature: r.array("certificate")?,
        };
        let ephemeral = r.array("ephemeral key")?;
        let signed_prekey_id = r.u32("signed prekey id")?;
        let one_time_prekey_id = match r.u8("one-time prekey flag")? {
            0 => None,
            1 => Some(r.u32("one-time prekey id")?),
            _ => return Err(E2eError::Malformed("one-time prekey flag")),
        };
        let kem_prekey_kind = match r.u8("ML-KEM prekey kind")? {
            1 => KemPrekeyKind::OneTime,
            2 => KemPrekeyKind::LastResort,
            _ => return Err(E2eError::Malformed("ML-KEM prekey kind")),
        };
        let kem_prekey_id = r.u32("ML-KEM prekey id")?;
        let kem_ciphertext = r.take(kem::CIPHERTEXT_LEN, "ML-KEM ciphertext")?.to_vec();
        Ok(PqxdhHeader {
            initiator,
            ephemeral,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_id,
            kem_prekey_kind,
            kem_ciphertext,
        })
    }

    /// SHA-256 of the binary encoding: how a session recognises its own set-up.
    pub fn digest(&self) -> [u8; 32] {
        let mut out = Vec::with_capacity(1400);
        self.encode(&mut out);
        sha256(&out)
    }
}

/// The result of a PQXDH run, the same on both sides.
pub struct PqxdhSecret {
    /// SK: the Double Ratchet's first root key.
    pub root_key: Zeroizing<[u8; 32]>,
    /// The session associated data: label || initiator identity || initiator agreement key || responder identity ||
    /// responder agreement key || transcript hash.
    pub associated_data: Vec<u8>,
    /// The transcript hash.
    pub transcript: [u8; 32],
}

/// The initiator's output.
pub struct InitiatorOutput {
    /// Header to send with every message until the responder answers.
    pub header: PqxdhHeader,
    /// Shared keys.
    pub secret: PqxdhSecret,
    /// The responder's signed prekey, its first ratchet key.
    pub responder_ratchet_key: [u8; 32],
    /// The same key converted for agreement (the first DH-ratchet step uses it a third time).
    pub responder_ratchet_peer: X25519Peer,
}

/// The responder's output.
pub struct ResponderOutput {
    /// Shared keys.
    pub secret: PqxdhSecret,
    /// The signed prekey secret, the responder's first ratchet key pair.
    pub signed_prekey_secret: Zeroizing<[u8; 32]>,
    /// Its public key (SPK_B).
    pub signed_prekey_public: [u8; 32],
    /// What to delete once the first message decrypts.
    pub consumed: ConsumedPrekeys,
    /// For a last-resort ML-KEM prekey: the replay-cache key of this set-up.
    pub replay_key: Option<[u8; 32]>,
}

struct TranscriptInput<'a> {
    initiator: &'a DeviceCertificate,
    responder: &'a DeviceCertificate,
    signed_prekey: (u32, [u8; 32]),
    one_time_prekey: Option<(u32, [u8; 32])>,
    kem_prekey: (KemPrekeyKind, u32, &'a [u8]),
    ephemeral: [u8; 32],
    kem_ciphertext: &'a [u8],
}

/// TH = SHA-256(label 0x00 || IdA || SigA || IKA || IdB || SigB || IKB || spk id || SPKB || 0x00 | 0x01 || opk id
/// || OPKB || kem kind || kem id || SHA-256(PQPKB) || EKA || CT).
fn transcript(t: &TranscriptInput<'_>) -> [u8; 32] {
    let mut c = Canonical::labelled(PQXDH_TRANSCRIPT_LABEL);
    for cert in [t.initiator, t.responder] {
        c.bytes(&cert.user_identity).bytes(&cert.signing_key).bytes(&cert.agreement_key);
    }
    c.u32(t.signed_prekey.0).bytes(&t.signed_prekey.1);
    match t.one_time_prekey {
        None => c.u8(0),
        Some((id, public)) => c.u8(1).u32(id).bytes(&public),
    };
    c.u8(t.kem_prekey.0.code()).u32(t.kem_prekey.1).bytes(&sha256(t.kem_prekey.2));
    c.bytes(&t.ephemeral).bytes(t.kem_ciphertext);
    sha256(&c.0)
}

fn derive(dhs: &[&[u8; 32]], kem_secret: &[u8; 32], t: &TranscriptInput<'_>) -> PqxdhSecret {
    let th = transcript(t);
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
    ikm.extend_from_slice(&PQXDH_F);
    for dh in dhs {
        ikm.extend_from_slice(&dh[..]);
    }
    ikm.extend_from_slice(kem_secret);
    let root_key = hkdf_sha256::<32>(&[0u8; 32], &ikm, &[PQXDH_INFO, &th]);
    let mut ad = Canonical::labelled(SESSION_AD_LABEL);
    ad.bytes(&t.initiator.user_identity)
        .bytes(&t.initiator.agreement_key)
        .bytes(&t.responder.user_identity)
        .bytes(&t.responder.agreement_key)
        .bytes(&th);
    PqxdhSecret { root_key, associated_data: ad.0, transcript: th }
}

/// Initiator side: verify the bundle (certificate, prekey signatures, keys), then derive. Draws from `rng`, in
/// this order: the ephemeral X25519 secret (32 bytes), the ML-KEM encapsulation randomness m (32 bytes). The caller
/// must have compared `bundle.certificate.user_identity` with the contact's pinned identity key.
pub fn initiate(
    rng: &mut impl CryptoRngCore,
    my_certificate: &DeviceCertificate,
    my_keys: &DeviceKeys,
    bundle: &PrekeyBundle,
) -> Result<InitiatorOutput, E2eError> {
    bundle.verify()?;
    if my_certificate.agreement_key != my_keys.static_public() {
        return Err(E2eError::InvalidKey("own certificate does not match own device keys"));
    }
    let mut ek = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(ek.as_mut());
    let mut m = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(m.as_mut());
    let ek_public = x25519_public(&ek);
    let identity = my_keys.static_secret();
    let responder = &bundle.certificate;
    let spk = &bundle.signed_prekey;

    // SPK_B takes part in two agreements: convert it once.
    let spk_peer = X25519Peer::new(&spk.public);
    let dh1 = spk_peer.agree(&identity)?;
    let dh2 = x25519(&ek, &responder.agreement_key)?;
    let dh3 = spk_peer.agree(&ek)?;
    let dh4 = match &bundle.one_time_prekey {
        Some(otpk) => Some(x25519(&ek, &otpk.public)?),
        None => None,
    };
    let (ct, ss) = kem::encapsulate(&bundle.kem_prekey.public, *m)?;

    let t = TranscriptInput {
        initiator: my_certificate,
        responder,
        signed_prekey: (spk.id, spk.public),
        one_time_prekey: bundle.one_time_prekey.as_ref().map(|o| (o.id, o.public)),
        kem_prekey: (bundle.kem_prekey.kind, bundle.kem_prekey.id, &bundle.kem_prekey.public),
        ephemeral: ek_public,
        kem_ciphertext: &ct,
    };
    let mut dhs: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
    if let Some(dh4) = &dh4 {
        dhs.push(dh4);
    }
    let secret = derive(&dhs, &ss, &t);
    let header = PqxdhHeader {
        initiator: my_certificate.clone(),
        ephemeral: ek_public,
        signed_prekey_id: spk.id,
        one_time_prekey_id: bundle.one_time_prekey.as_ref().map(|o| o.id),
        kem_prekey_id: bundle.kem_prekey.id,
        kem_prekey_kind: bundle.kem_prekey.kind,
        kem_ciphertext: ct,
    };
    Ok(InitiatorOutput { header, secret, responder_ratchet_key: spk.public, responder_ratchet_peer: spk_peer })
}

/// Responder side: verify the initiator's certificate, look up the named prekeys, derive. Deletes nothing: see
/// [`ResponderOutput::consumed`] and [`ResponderOutput::replay_key`]. The caller must decide whether it trusts
/// `header.initiator.user_identity` (pinned key, or first contact).
pub fn respond(
    my_certificate: &DeviceCertificate,
    my_keys: &DeviceKeys,
    prekeys: &impl PrekeySecrets,
    header: &PqxdhHeader,
) -> Result<ResponderOutput, E2eError> {
    header.initiator.verify()?;
    let spk = prekeys
        .signed_prekey(header.signed_prekey_id)
        .ok_or(E2eError::UnknownPrekey { kind: "signed", id: header.signed_prekey_id })?;
    let otpk = match header.one_time_prekey_id {
        Some(id) => Some((id, prekeys.one_time_prekey(id).ok_or(E2eError::UnknownPrekey { kind: "one-time", id })?)),
        None => None,
    };
    let (kem_pair, kem_kind) = prekeys
        .kem_prekey(header.kem_prekey_id)
        .ok_or(E2eError::UnknownPrekey { kind: "ML-KEM", id: header.kem_prekey_id })?;
    if kem_kind != header.kem_prekey_kind {
        return Err(E2eError::UnknownPrekey { kind: "ML-KEM", id: header.kem_prekey_id });
    }
    let identity = my_keys.static_secret();
    let ika = &header.initiator.agreement_key;
    // EK_A takes part in three agreements: convert it once.
    let ek_peer = X25519Peer::new(&header.ephemeral);
    let dh1 = x25519(&spk.secret, ika)?;
    let dh2 = ek_peer.agree(&identity)?;
    let dh3 = ek_peer.agree(&spk.secret)?;
    let dh4 = match &otpk {
        Some((_, otpk)) => Some(ek_peer.agree(&otpk.secret)?),
        None => None,
    };
    let ss = kem_pair.decapsulate(&header.kem_ciphertext)?;

    let t = TranscriptInput {
        initiator: &header.initiator,
        responder: my_certificate,
        signed_prekey: (header.signed_prekey_id, spk.public),
        one_time_prekey: otpk.as_ref().map(|(id, otpk)| (*id, otpk.public)),
        kem_prekey: (kem_kind, header.kem_prekey_id, kem_pair.public_key()),
        ephemeral: header.ephemeral,
        kem_ciphertext: &header.kem_ciphertext,
    };
    let mut dhs: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
    if let Some(dh4) = &dh4 {
        dhs.push(dh4);
    }
    let secret = derive(&dhs, &ss, &t);
    let replay_key = (kem_kind == KemPrekeyKind::LastResort).then(|| {
        let mut c = Canonical::labelled(REPLAY_LABEL);
        c.u32(header.kem_prekey_id).bytes(&header.ephemeral).bytes(&header.kem_ciphertext);
        sha256(&c.0)
    });
    Ok(ResponderOutput {
        secret,
        signed_prekey_public: spk.public,
        signed_prekey_secret: spk.secret,
        consumed: ConsumedPrekeys {
            one_time_prekey: header.one_time_prekey_id,
            kem_one_time_prekey: (kem_kind == KemPrekeyKind::OneTime).then_some(header.kem_prekey_id),
        },
        replay_key,
    })
}
