//! TLS to the relay with certificate pinning (trust on first use).
//!
//! Relays usually run with a self-signed certificate, so the client does not consult certificate authorities:
//! it pins the SHA-256 fingerprint of the relay's certificate on first contact and refuses any other certificate
//! afterwards. This module owns that decision and the rustls client configuration; it must not store the pin
//! (the caller persists what [`ObservedCert`] reports) and must not weaken the handshake signature checks, which
//! are what stop a man in the middle who copies the certificate but lacks its key.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER encoding, as lowercase hex without separators (the relay prints the same).
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// The fingerprint of the certificate the server presented most recently on connections made with a config.
///
/// With trust on first use the caller reads it after a successful handshake and pins it. It is recorded before
/// the handshake signature is checked, so only a value read after the connection succeeded proves the server
/// holds the certificate's key; after a failure it is still useful to show the user what was presented.
#[derive(Debug, Default)]
pub struct ObservedCert(Mutex<Option<String>>);

impl ObservedCert {
    /// The last presented fingerprint, if any handshake got as far as the certificate.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, fingerprint: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(fingerprint);
    }
}

/// Accepts exactly the pinned certificate (or, with no pin, any certificate), while verifying handshake
/// signatures with the ring provider as usual.
#[derive(Debug)]
pub struct PinningVerifier {
    /// Normalised pin (lowercase hex, no separators), or `None` for trust on first use.
    pinned: Option<String>,
    observed: Arc<ObservedCert>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinningVerifier {
    /// A verifier for `pinned` (hex, any case, colons allowed) that records presented fingerprints in `observed`.
    pub fn new(pinned: Option<&str>, observed: Arc<ObservedCert>) -> Self {
        Self {
            pinned: pinned.map(normalise_fingerprint),
            observed,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

/// Lowercases and strips `:` and whitespace, so a pin copied from `openssl x509 -fingerprint` output also works.
pub fn normalise_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Compares in time independent of where the first difference is (the client crate has no `subtle`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Name and validity period are deliberately not checked: the pin identifies the relay exactly, and a
        // self-signed certificate reached by IP address or a new host name is the normal case.
        let presented = fingerprint(end_entity.as_ref());
        self.observed.set(presented.clone());
        match &self.pinned {
            None => Ok(ServerCertVerified::assertion()),
            Some(pinned) if constant_time_eq(pinned.as_bytes(), presented.as_bytes()) => {
                Ok(ServerCertVerified::assertion())
            }
            Some(pinned) => Err(rustls::Error::General(format!(
                "server certificate changed: pinned {pinned}, presented {presented}"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Builds a client configuration that pins `pinned` (or trusts on first use when `None`), and the handle where
/// the presented certificate's fingerprint is recorded.
///
/// Build one configuration per pin: when the caller pins a newly observed fingerprint, it should call this
/// again with `Some(fingerprint)` for later connections.
pub fn client_config(pinned: Option<&str>) -> (Arc<ClientConfig>, Arc<ObservedCert>) {
    let observed = Arc::new(ObservedCert::default());
    let verifier = Arc::new(PinningVerifier::new(pinned, Arc::clone(&observed)));
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider always supports the default versions; this cannot fail at run time.
        .expect("ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ServerName<'static> {
        ServerName::try_from("relay.example").expect("valid name")
    }

    fn check(verifier: &PinningVerifier, der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &name(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn fingerprint_format() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn trust_on_first_use_records() {
        let observed = Arc::new(ObservedCert::default());
        let verifier = PinningVerifier::new(None, Arc::clone(&observed));
        assert_eq!(observed.get(), None);
        assert!(check(&verifier, b"any certificate").is_ok());
        assert_eq!(observed.get(), Some(fingerprint(b"any certificate")));
    }

    #[test]
    fn pin_accepts_same_and_rejects_other() {
        let good = fingerprint(b"the relay");
        let observed = Arc::new(ObservedCert::default());
        let verifier = PinningVerifier::new(Some(&good), Arc::clone(&observed));
        assert!(check(&verifier, b"the relay").is_ok());

        let err = check(&verifier, b"an impostor").expect_err("must refuse");
        let bad = fingerprint(b"an impostor");
        assert_eq!(
            err,
            rustls::Error::General(format!(
                "server certificate changed: pinned {good}, presented {bad}"
            ))
        );
        assert_eq!(observed.get(), Some(bad));
    }

    #[test]
    fn pin_is_normalised() {
        let good = fingerprint(b"the relay");
        let colons = good
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let verifier = PinningVerifier::new(
            Some(&format!(" {colons}\n")),
            Arc::new(ObservedCert::default()),
        );
        assert!(check(&verifier, b"the relay").is_ok());
    }

    #[test]
    fn empty_or_short_pin_never_matches() {
        let verifier = PinningVerifier::new(Some(""), Arc::new(ObservedCert::default()));
        assert!(check(&verifier, b"the relay").is_err());
        let verifier = PinningVerifier::new(Some("e3b0"), Arc::new(ObservedCert::default()));
        assert!(check(&verifier, b"").is_err());
    }

    #[test]
    fn config_builds_with_ring_schemes() {
        let (config, observed) = client_config(None);
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(observed.get().is_none());
        let verifier = PinningVerifier::new(None, observed);
        let schemes = verifier.supported_verify_schemes();
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
        assert!(schemes.contains(&SignatureScheme::ED25519));
    }
}
