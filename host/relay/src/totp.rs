//! Time-based one-time passwords (RFC 6238) for second-factor login.
//!
//! Owns secret generation, the `otpauth://` enrolment URI, code generation and windowed verification. It must not
//! store secrets or remember used steps: replay protection (refusing a step that was already accepted) belongs to
//! the caller, which records the step returned by [`verify`] in the store.

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

/// Length of one time step in seconds; what every authenticator app uses by default.
pub const STEP_SECONDS: u64 = 30;
/// Digits in a code; what every authenticator app uses by default.
pub const DIGITS: usize = 6;
/// Length of a generated secret in bytes (160 bits, the RFC 4226 recommendation for HMAC-SHA-1).
pub const SECRET_LEN: usize = 20;
/// Largest accepted clock-skew window in steps either side, so a misconfigured caller cannot make one
/// verification compute thousands of HMACs (or accept a huge window of codes).
pub const MAX_SKEW_STEPS: u64 = 10;

/// The HMAC hash underlying a TOTP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1: the only one most authenticator apps support, and the one [`verify`] uses.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    fn to_totp_rs(self) -> Algorithm {
        match self {
            Self::Sha1 => Algorithm::SHA1,
            Self::Sha256 => Algorithm::SHA256,
            Self::Sha512 => Algorithm::SHA512,
        }
    }
}

/// Returns a fresh random secret of [`SECRET_LEN`] bytes from the operating system's CSPRNG.
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// Encodes `secret` as RFC 4648 base32 without padding, the form authenticator apps accept for manual entry.
pub fn secret_to_base32(secret: &[u8]) -> String {
    match Secret::Raw(secret.to_vec()).to_encoded() {
        Secret::Encoded(encoded) => encoded,
        // `to_encoded` on a raw secret always yields the encoded form; this arm only satisfies the type.
        Secret::Raw(_) => String::new(),
    }
}

/// Decode a base32 secret (RFC 4648, padding and case ignored), as authenticator apps accept it.
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text.chars().filter(|c| *c != '=' && !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    totp_rs::Secret::Encoded(cleaned).to_bytes().ok()
}


/// Builds the `otpauth://totp/…` URI (usually shown as a QR code) that enrols `secret` in an authenticator app.
///
/// `issuer` and `account` are percent-encoded, so names with spaces, colons or non-ASCII characters are safe.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account),
        secret = secret_to_base32(secret),
    )
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Computes the code for `unix_seconds` (RFC 6238 generator).
///
/// `digits` is clamped to 1..=9 and `step_seconds` to at least 1, because the underlying generator would
/// overflow or divide by zero outside those ranges; real deployments use 6 or 8 digits and 30 s.
pub fn code_at(
    secret: &[u8],
    algorithm: TotpAlgorithm,
    digits: usize,
    step_seconds: u64,
    unix_seconds: u64,
) -> String {
    let digits = digits.clamp(1, 9);
    let step_seconds = step_seconds.max(1);
    // `new_unchecked` because RFC test secrets and legacy enrolments may be shorter than totp-rs's 128-bit minimum.
    TOTP::new_unchecked(
        algorithm.to_totp_rs(),
        digits,
        0,
        step_seconds,
        secret.to_vec(),
    )
    .generate(unix_seconds)
}

/// Returns the step number (T in RFC 6238) containing `unix_seconds`, for [`STEP_SECONDS`]-long steps.
pub fn step_of(unix_seconds: u64) -> i64 {
    // u64::MAX / 30 fits in i64, so the conversion cannot fail; saturate anyway rather than panic.
    i64::try_from(unix_seconds / STEP_SECONDS).unwrap_or(i64::MAX)
}

/// Checks `code` against steps now-skew..=now+skew (SHA-1, 6 digits, 30 s) in constant time per candidate;
/// returns the matching step.
///
/// Anything that is not exactly [`DIGITS`] ASCII digits is refused before any HMAC is computed. `skew_steps` is
/// capped at [`MAX_SKEW_STEPS`]. Every candidate in the window is computed and compared even after a match, so
/// the time taken does not reveal which step matched. The caller must refuse a step it has already accepted.
pub fn verify(secret: &[u8], code: &str, unix_seconds: u64, skew_steps: u64) -> Option<i64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let skew = i64::try_from(skew_steps.min(MAX_SKEW_STEPS)).unwrap_or(0);
    let now = step_of(unix_seconds);
    let mut matched = None;
    for step in now.saturating_sub(skew)..=now.saturating_add(skew) {
        // Steps before the epoch do not exist.
        let Ok(step_u64) = u64::try_from(step) else {
            continue;
        };
        let Some(at) = step_u64.checked_mul(STEP_SECONDS) else {
            continue;
        };
        let candidate = code_at(secret, TotpAlgorithm::Sha1, DIGITS, STEP_SECONDS, at);
        if bool::from(candidate.as_bytes().ct_eq(code.as_bytes())) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 Appendix B, all rows: (time, algorithm, expected 8-digit code).
    const RFC6238: &[(u64, TotpAlgorithm, &str)] = &[
        (59, TotpAlgorithm::Sha1, "94287082"),
        (59, TotpAlgorithm::Sha256, "46119246"),
        (59, TotpAlgorithm::Sha512, "90693936"),
        (1_111_111_109, TotpAlgorithm::Sha1, "07081804"),
        (1_111_111_109, TotpAlgorithm::Sha256, "68084774"),
        (1_111_111_109, TotpAlgorithm::Sha512, "25091201"),
        (1_111_111_111, TotpAlgorithm::Sha1, "14050471"),
        (1_111_111_111, TotpAlgorithm::Sha256, "67062674"),
        (1_111_111_111, TotpAlgorithm::Sha512, "99943326"),
        (1_234_567_890, TotpAlgorithm::Sha1, "89005924"),
        (1_234_567_890, TotpAlgorithm::Sha256, "91819424"),
        (1_234_567_890, TotpAlgorithm::Sha512, "93441116"),
        (2_000_000_000, TotpAlgorithm::Sha1, "69279037"),
        (2_000_000_000, TotpAlgorithm::Sha256, "90698825"),
        (2_000_000_000, TotpAlgorithm::Sha512, "38618901"),
        (20_000_000_000, TotpAlgorithm::Sha1, "65353130"),
        (20_000_000_000, TotpAlgorithm::Sha256, "77737706"),
        (20_000_000_000, TotpAlgorithm::Sha512, "47863826"),
    ];

    fn seed(algorithm: TotpAlgorithm) -> &'static [u8] {
        match algorithm {
            TotpAlgorithm::Sha1 => SEED_SHA1,
            TotpAlgorithm::Sha256 => SEED_SHA256,
            TotpAlgorithm::Sha512 => SEED_SHA512,
        }
    }

    #[test]
    fn rfc6238_appendix_b() {
        assert_eq!(RFC6238.len(), 18);
        for &(time, algorithm, expected) in RFC6238 {
            assert_eq!(
                code_at(seed(algorithm), algorithm, 8, 30, time),
                expected,
                "{algorithm:?} at T={time}"
            );
        }
    }

    #[test]
    fn step_numbers() {
        assert_eq!(step_of(0), 0);
        assert_eq!(step_of(29), 0);
        assert_eq!(step_of(30), 1);
        assert_eq!(step_of(59), 1);
        assert_eq!(step_of(1_111_111_109), 37_037_036);
        assert_eq!(
            step_of(u64::MAX),
            i64::try_from(u64::MAX / 30).expect("fits")
        );
    }

    #[test]
    fn verify_accepts_window_and_returns_step() {
        let secret = generate_secret();
        let now = 1_700_000_015;
        let step = step_of(now);
        let code_now = code_at(&secret, TotpAlgorithm::Sha1, 6, 30, now);
        assert_eq!(code_now.len(), 6);
        assert_eq!(verify(&secret, &code_now, now, 1), Some(step));

        let code_prev = code_at(&secret, TotpAlgorithm::Sha1, 6, 30, now - 30);
        let code_next = code_at(&secret, TotpAlgorithm::Sha1, 6, 30, now + 30);
        let code_far = code_at(&secret, TotpAlgorithm::Sha1, 6, 30, now + 90);
        // A random secret could collide on one 6-digit code; skip the rare case rather than flake.
        if code_prev != code_now && code_next != code_now && code_far != code_now {
            assert_eq!(verify(&secret, &code_prev, now, 1), Some(step - 1));
            assert_eq!(verify(&secret, &code_next, now, 1), Some(step + 1));
            assert_eq!(verify(&secret, &code_prev, now, 0), None);
            if code_far != code_prev && code_far != code_next {
                assert_eq!(verify(&secret, &code_far, now, 1), None);
            }
        }
    }

    #[test]
    fn verify_rejects_malformed_input() {
        let secret = SEED_SHA1;
        let now = 59;
        let good = code_at(secret, TotpAlgorithm::Sha1, 6, 30, now);
        assert_eq!(good, "287082"); // RFC row truncated to 6 digits
        assert_eq!(verify(secret, &good, now, 0), Some(1));
        for bad in [
            "",
            "28708",
            "2870822",
            "28708a",
            " 287082",
            "287082 ",
            "２８７０８２",
            "-28708",
            "+28708",
        ] {
            assert_eq!(verify(secret, bad, now, 1), None, "{bad:?}");
        }
    }

    #[test]
    fn verify_near_epoch_and_huge_skew_do_not_panic() {
        let secret = SEED_SHA1;
        let code = code_at(secret, TotpAlgorithm::Sha1, 6, 30, 0);
        assert_eq!(verify(secret, &code, 0, 5), Some(0));
        assert_eq!(
            verify(secret, "000000", u64::MAX, u64::MAX),
            verify(secret, "000000", u64::MAX, MAX_SKEW_STEPS)
        );
    }

    #[test]
    fn code_at_clamps_instead_of_panicking() {
        assert_eq!(code_at(SEED_SHA1, TotpAlgorithm::Sha1, 20, 0, 59).len(), 9);
        assert_eq!(code_at(SEED_SHA1, TotpAlgorithm::Sha1, 0, 30, 59).len(), 1);
        assert_eq!(code_at(b"", TotpAlgorithm::Sha1, 6, 30, 59).len(), 6);
    }

    #[test]
    fn secrets_and_base32() {
        let a = generate_secret();
        assert_eq!(a.len(), 20);
        assert_ne!(a, generate_secret());
        // RFC 4648 test vector, without padding.
        assert_eq!(secret_to_base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            secret_to_base32(SEED_SHA1),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn otpauth_uri_is_encoded() {
        let uri = otpauth_uri(SEED_SHA1, "imfree relay", "alice@example.org:x/é");
        assert_eq!(
            uri,
            "otpauth://totp/imfree%20relay:alice%40example.org%3Ax%2F%C3%A9\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=imfree%20relay&algorithm=SHA1&digits=6&period=30"
        );
    }
}
