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
}

/// XX message 3: password authentication on first contact.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XxAuth {
    /// Protocol version.
    pub v: u32,
    /// Register or log in.
    pub op: XxOp,
    /// The account.
    pub user: String,
    /// The password.
    pub password: String,
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
    fn debug_hides_secrets() {
        let a = XxAuth {
            v: 1,
            op: XxOp::Login,
            user: "al".into(),
            password: "hunter22".into(),
            totp: Some("123456".into()),
            device_name: "d".into(),
            signing_key: Payload(vec![0; 32]),
            binding_sig: Payload(vec![0; 64]),
            ts: 0,
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("123456"), "{shown}");
        let i = IkAuth { v: 1, user: "al".into(), device: "d".into(), token: "tok-secret".into(), ts: 0 };
        assert!(!format!("{i:?}").contains("tok-secret"));
    }
}
