//! Request signatures, Slack's scheme with our header names: `X-Imfree-Request-Timestamp: <unix seconds>` and
//! `X-Imfree-Signature: v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`. The same scheme signs every
//! outgoing delivery and verifies incoming requests to hooks created with `--verify`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-imfree-request-timestamp";
/// Header carrying `v0=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-imfree-signature";
/// Header carrying the delivery's idempotency id: the same for every attempt of one delivery.
pub const DELIVERY_HEADER: &str = "x-imfree-delivery-id";

/// `v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("v0={}", hex(&mac(secret, timestamp, body)))
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(format!("v0:{timestamp}:").as_bytes());
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// A header is missing or not in the expected form.
    Missing,
    /// The timestamp is further from now than the window allows (a replay, or a skewed clock).
    Stale,
    /// The signature does not match.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => "missing or malformed signature headers",
            SignatureError::Stale => "timestamp outside the allowed window",
            SignatureError::Mismatch => "signature does not match",
        })
    }
}

/// Check a request signed as [`sign`] does: the timestamp within `window_s` of `now_s` (either side), and the
/// signature equal in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: u64,
    window_s: u64,
) -> Result<(), SignatureError> {
    let ts: u64 = timestamp.and_then(|t| t.trim().parse().ok()).ok_or(SignatureError::Missing)?;
    let given = signature
        .and_then(|s| s.trim().strip_prefix("v0="))
        .and_then(unhex)
        .ok_or(SignatureError::Missing)?;
    if ts.abs_diff(now_s) > window_s {
        return Err(SignatureError::Stale);
    }
    if constant_time_eq(&mac(secret, ts, body), &given) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// Equality that takes the same time wherever the first difference is (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 of `data`, lower-case hex (how incoming hook secrets are stored).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parse hex (either case); `None` on odd length or a non-hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_documented_example() {
        // Slack's "Verifying requests from Slack" example: same construction (v0:ts:body, HMAC-SHA256, hex).
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(sign(secret, 1531420618, body), "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503");
    }

    #[test]
    fn verify_accepts_own_signature_and_refuses_tampering() {
        let sig = sign(b"k", 1000, b"{}");
        assert_eq!(verify(b"k", Some("1000"), Some(&sig), b"{}", 1100, 300), Ok(()));
        assert_eq!(verify(b"k", Some("1000"), Some(&sig), b"{ }", 1100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", Some("1000"), Some(&sig), b"{}", 1100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"k", Some("1001"), Some(&sig), b"{}", 1100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"k", Some("1000"), Some(&sig), b"{}", 1301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(b"k", Some("1000"), Some(&sig), b"{}", 699, 300), Err(SignatureError::Stale));
        assert_eq!(verify(b"k", None, Some(&sig), b"{}", 1000, 300), Err(SignatureError::Missing));
        assert_eq!(verify(b"k", Some("1000"), None, b"{}", 1000, 300), Err(SignatureError::Missing));
        assert_eq!(verify(b"k", Some("1000"), Some("v1=00"), b"{}", 1000, 300), Err(SignatureError::Missing));
        assert_eq!(verify(b"k", Some("x"), Some(&sig), b"{}", 1000, 300), Err(SignatureError::Missing));
        assert_eq!(verify(b"k", Some("1000"), Some("v0=zz"), b"{}", 1000, 300), Err(SignatureError::Missing));
    }

    #[test]
    fn hex_round_trip_and_constant_time_eq() {
        assert_eq!(unhex(&hex(&[0, 1, 0xab, 0xff])), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(unhex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(unhex("abc"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
