//! The auth payloads carried inside the IMF Noise handshake (see `imfree_crypto::noise`): IK message 1 carries
//! [`IkAuth`]; XX message 3 carries [`XxAuth`]. They are encrypted by Noise; the relay answers with `welcome` or
//! `error` as the first transport frame.

use serde::{Deserialize, Serialize};

use crate::Payload;

/// IK message 1: a known device reconnecting with its session token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkAuth {
    /// Protocol version.
    pub v: u32,
    /// The account.
    pub user: String,
    /// The device id the relay assigned.
    pub device: String,
    /// The session token from `welcome`.
    pub token: String,
    /// The device's clock (Unix ms); the relay refuses messages outside its replay window.
    pub ts: u64,
    /// A session for file transfers and sending only (a second connection of a device whose main session is
    /// busy): the relay delivers nothing to it — no live deliveries, no queue — and does not count it as online, so
    /// it cannot take a message away from the device's main session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
}

impl std::fmt::Debug for IkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkAuth").field("user", &self.user).field("device", &self.device).finish_non_exhaustive()
    }
}

/// What an XX handshake asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XxOp {
    /// Create the account and register this device.
    Register,
    /// Log in to an existing account, registering this device if it is new.
    Login,
    /// Finish a single sign-on login: `login_code` (issued by the relay's sso plugin after the identity provider
    /// signed the user in) and `verifier` (whose SHA-256, base64url without padding, is the challenge the code was
    /// issued for) stand in for the password; `user` is empty (the code names the account) and `password` is
    /// ignored. Registers this device if it is new, like `login`.
    SsoLogin,
}

/// XX message 3: password (or single sign-on login code) authentication on first contact.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XxAuth {
    /// Protocol version.
    pub v: u32,
    /// Register, log in, or finish an SSO login.
    pub op: XxOp,
    /// The account (empty for [`XxOp::SsoLogin`]: the login code names it).
    #[serde(default)]
    pub user: String,
    /// The password (empty for [`XxOp::SsoLogin`]).
    #[serde(default)]
    pub password: String,
    /// [`XxOp::SsoLogin`]: the single-use login code from the sso plugin's redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_code: Option<String>,
    /// [`XxOp::SsoLogin`]: the PKCE verifier (RFC 7636: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`) whose
    /// challenge the code was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// A current TOTP code, when the account has 2FA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// A name for this device ("laptop").
    pub device_name: String,
    /// The device's Ed25519 public key (32 bytes).
    pub signing_key: Payload,
    /// Ed25519 signature by `signing_key` over `"imfree device binding v1" || handshake hash || static key ||
    /// user`: proof that whoever holds the Noise static key also holds the signing key.
    pub binding_sig: Payload,
    /// The device's clock (Unix ms).
    pub ts: u64,
}

impl std::fmt::Debug for XxAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XxAuth").field("op", &self.op).field("user", &self.user).finish_non_exhaustive()
    }
}

/// The challenge of a PKCE verifier (RFC 7636 S256): base64url of its SHA-256, without padding. An SSO login code is
/// issued for the challenge and redeemed with the verifier.
pub fn sso_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` has the shape RFC 7636 gives a PKCE code verifier: 43 to 128 characters of
/// `A-Z a-z 0-9 - . _ ~`.
pub fn valid_sso_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The message a device signs to bind its signing key to an XX handshake.
pub fn device_binding_message(context: &[u8], handshake_hash: &[u8; 32], static_key: &[u8; 32], user: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 64 + user.len());
    m.extend_from_slice(context);
    m.extend_from_slice(handshake_hash);
    m.extend_from_slice(static_key);
    m.extend_from_slice(user.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sso_challenge_is_rfc7636_s256() {
        // RFC 7636, appendix B.
        assert_eq!(sso_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(valid_sso_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!valid_sso_verifier("short"));
        assert!(!valid_sso_verifier(&"a".repeat(129)));
        assert!(!valid_sso_verifier(&format!("{}=", "a".repeat(43))));
    }

    #[test]
    fn sso_login_needs_no_user_or_password() {
        let a: XxAuth = serde_json::from_str(
            r#"{"v":1,"op":"sso_login","login_code":"c","verifier":"v","device_name":"d","signing_key":"","binding_sig":"","ts":1}"#,
        )
        .expect("sso_login without user and password");
        assert_eq!((a.op, a.user.as_str(), a.password.as_str()), (XxOp::SsoLogin, "", ""));
        assert_eq!((a.login_code.as_deref(), a.verifier.as_deref()), (Some("c"), Some("v")));
    }

    #[test]
    fn debug_hides_secrets() {
        let a = XxAuth {
            v: 1,
            op: XxOp::Login,
            user: "al".into(),
            password: "hunter22".into(),
            totp: Some("123456".into()),
            login_code: Some("code-secret".into()),
            verifier: Some("verifier-secret".into()),
            device_name: "d".into(),
            signing_key: Payload(vec![0; 32]),
            binding_sig: Payload(vec![0; 64]),
            ts: 0,
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("123456"), "{shown}");
        assert!(!shown.contains("code-secret") && !shown.contains("verifier-secret"), "{shown}");
        let i = IkAuth { v: 1, user: "al".into(), device: "d".into(), token: "tok-secret".into(), ts: 0, transfer: false };
        assert!(!format!("{i:?}").contains("tok-secret"));
    }
}
