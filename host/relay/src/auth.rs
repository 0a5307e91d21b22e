//! Turning a completed Noise handshake into an authenticated device session: IK (device key + session token) and
//! XX (password registration or login, with optional TOTP; or a single sign-on login code with its PKCE verifier).
//! Every refusal is an [`ErrorFrame`] with a stable code;
//! no password, token, login code, verifier or TOTP code is ever logged.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use imfree_proto::auth::{IkAuth, XxAuth, XxOp, device_binding_message, sso_challenge, valid_sso_verifier};
use imfree_proto::{ErrorCode, ErrorFrame, PROTOCOL_VERSION, Welcome, validate_user_name};
use imfree_store::{NO_PASSWORD, NewDevice, NewUser, SessionRecord, StoreError, UserId, UserRecord};

use crate::state::{RelayState, now_ms};
use crate::{password, token, totp};

/// A device whose session is authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The account.
    pub user_id: UserId,
    /// The account's name.
    pub user: String,
    /// The device.
    pub device: String,
    /// The welcome frame to send.
    pub welcome: Welcome,
    /// A transfer-only session (IK auth `transfer`): nothing is delivered to it and it does not count as online.
    pub transfer: bool,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(code, message)
}

fn internal(err: StoreError) -> ErrorFrame {
    tracing::error!(error = %err, "store failure during authentication");
    refuse(ErrorCode::Internal, "the relay could not complete authentication; try again")
}

fn revoked() -> ErrorFrame {
    refuse(ErrorCode::DeviceRevoked, "this device was revoked by its owner and can no longer log in; link a new device instead")
}

fn check_clock(state: &RelayState, ts: u64) -> Result<(), ErrorFrame> {
    let window = state.config.limits.handshake_window_secs as i64 * 1000;
    if (now_ms() - ts as i64).abs() > window {
        return Err(refuse(
            ErrorCode::HandshakeReplayed,
            "handshake timestamp is outside the relay's window: check the device clock",
        ));
    }
    Ok(())
}

/// Check an IK auth payload: replay, device key, token. `ephemeral` is message 1's ephemeral key.
pub async fn authenticate_ik(
    state: &Arc<RelayState>,
    device_static: [u8; 32],
    ephemeral: [u8; 32],
    payload: &[u8],
) -> Result<Authenticated, ErrorFrame> {
    let auth: IkAuth = serde_json::from_slice(payload)
        .map_err(|_| refuse(ErrorCode::MalformedFrame, "the handshake payload is not a valid IK auth document"))?;
    if auth.v != PROTOCOL_VERSION {
        return Err(refuse(ErrorCode::UnsupportedVersion, "this relay speaks IMF v1"));
    }
    check_clock(state, auth.ts)?;
    if !state.replay.first_sighting(ephemeral, Instant::now()) {
        return Err(refuse(ErrorCode::HandshakeReplayed, "this handshake message was already used"));
    }
    let unknown = || refuse(ErrorCode::Unauthenticated, "unknown device or session: log in again");
    let device = state.store.device_by_static_key(&device_static).await.map_err(internal)?.ok_or_else(unknown)?;
    if device.id != auth.device || device.user_name != auth.user {
        return Err(unknown());
    }
    if device.revoked_at.is_some() {
        return Err(revoked());
    }
    let session = state.store.session(&token::hash_token(&auth.token)).await.map_err(internal)?.ok_or_else(unknown)?;
    if session.user_id != device.user_id || session.device_id != device.id {
        return Err(unknown());
    }
    if session.revoked_at.is_some() {
        return Err(refuse(ErrorCode::TokenRevoked, "this session was revoked: log in again"));
    }
    if session.expires_at <= now_ms() {
        return Err(refuse(ErrorCode::TokenExpired, "this session has expired: log in again"));
    }
    let user = state.store.user_by_id(device.user_id).await.map_err(internal)?.ok_or_else(unknown)?;
    if user.disabled {
        return Err(refuse(ErrorCode::AccountDisabled, "this account is disabled; contact the operator"));
    }
    let mut who = authenticated(state, user, device.id, None).await?;
    who.transfer = auth.transfer;
    Ok(who)
}

/// Check an XX auth payload and register or log in.
pub async fn authenticate_xx(
    state: &Arc<RelayState>,
    ip: IpAddr,
    device_static: [u8; 32],
    binding_hash: [u8; 32],
    payload: &[u8],
) -> Result<Authenticated, ErrorFrame> {
    let auth: XxAuth = serde_json::from_slice(payload)
        .map_err(|_| refuse(ErrorCode::MalformedFrame, "the handshake payload is not a valid XX auth document"))?;
    if auth.v != PROTOCOL_VERSION {
        return Err(refuse(ErrorCode::UnsupportedVersion, "this relay speaks IMF v1"));
    }
    check_clock(state, auth.ts)?;
    if let Err(retry) = state.login_rate.check(&ip, Instant::now()) {
        let mut e = refuse(ErrorCode::RateLimited, "too many logins from this address; wait and try again");
        e.retry_after_ms = Some(retry.as_millis() as u64);
        return Err(e);
    }
    // An SSO login names no account: its login code does.
    if auth.op != XxOp::SsoLogin || !auth.user.is_empty() {
        validate_user_name(&auth.user, &state.config.limits.protocol)
            .map_err(|reason| refuse(ErrorCode::InvalidField, format!("user: {reason}")))?;
    }
    let signing_key: [u8; 32] = auth
        .signing_key
        .0
        .as_slice()
        .try_into()
        .map_err(|_| refuse(ErrorCode::InvalidField, "signing_key must be 32 bytes"))?;
    let binding = device_binding_message(imfree_crypto::noise::DEVICE_BINDING_CONTEXT, &binding_hash, &device_static, &auth.user);
    imfree_crypto::device::verify_signature(&signing_key, &binding, &auth.binding_sig.0)
        .map_err(|_| refuse(ErrorCode::HandshakeFailed, "the device binding signature does not verify"))?;
    if auth.device_name.is_empty() || auth.device_name.len() > 64 {
        return Err(refuse(ErrorCode::InvalidField, "device_name must be 1 to 64 characters"));
    }
    // A device key belongs to one account: refuse before creating or touching anything.
    let existing = state.store.device_by_static_key(&device_static).await.map_err(internal)?;
    if existing.as_ref().is_some_and(|d| d.revoked_at.is_some()) {
        return Err(revoked());
    }
    // (An SSO login learns its account from the code; `bind_device` refuses a device of another account then.)
    if let Some(known) = &existing
        && auth.op != XxOp::SsoLogin
        && (known.user_name != auth.user || auth.op == XxOp::Register)
    {
        return Err(refuse(
            ErrorCode::InvalidField,
            "this device is already registered to an account; use a new client home for another account",
        ));
    }
    let user = match auth.op {
        XxOp::Register => register(state, &auth).await?,
        XxOp::Login => login(state, &auth).await?,
        XxOp::SsoLogin => sso_login(state, &auth).await?,
    };
    let device = bind_device(state, &user, existing, device_static, signing_key, &auth.device_name).await?;
    let (token, token_hash) = token::new_session_token();
    let now = now_ms();
    let expires_at = now + (state.config.accounts.session_ttl_secs as i64).saturating_mul(1000);
    state
        .store
        .create_session(&token_hash, &SessionRecord { user_id: user.id, device_id: device.clone(), expires_at, revoked_at: None }, now)
        .await
        .map_err(internal)?;
    let needs_identity = state.store.user_identity(user.id).await.map_err(internal)?.is_none();
    let mut done = authenticated(state, user, device, Some((token.into_string(), expires_at as u64))).await?;
    done.welcome.needs_identity = needs_identity;
    Ok(done)
}

/// The session of an authenticated device, with its `welcome` (a new token only after a password login).
async fn authenticated(
    state: &Arc<RelayState>,
    user: UserRecord,
    device: String,
    token: Option<(String, u64)>,
) -> Result<Authenticated, ErrorFrame> {
    let queued = state.store.queue_len(&device).await.map_err(internal)?;
    let (token, token_expires) = token.unzip();
    Ok(Authenticated {
        user_id: user.id,
        user: user.name.clone(),
        device: device.clone(),
        welcome: Welcome {
            user: user.name,
            device,
            token,
            token_expires,
            queued: queued.max(0) as u64,
            server_time: now_ms() as u64,
            key_challenge: Default::default(),
            prekeys_left: None,
            needs_identity: false,
        },
        transfer: false,
    })
}

async fn register(state: &Arc<RelayState>, auth: &XxAuth) -> Result<UserRecord, ErrorFrame> {
    if !state.config.accounts.open_registration {
        return Err(refuse(ErrorCode::RegistrationClosed, "registration is closed on this relay; ask the operator"));
    }
    let policy = state.config.accounts.password.clone();
    let password = zeroize::Zeroizing::new(auth.password.clone());
    let hash = tokio::task::spawn_blocking(move || password::hash_password(&password, &policy))
        .await
        .map_err(|_| refuse(ErrorCode::Internal, "password hashing failed"))?
        .map_err(|e| refuse(ErrorCode::InvalidField, format!("password: {e}")))?;
    let new = NewUser { name: auth.user.clone(), password_hash: hash, created_at: now_ms() };
    let id = match state.store.create_user(&new).await {
        Ok(id) => id,
        Err(StoreError::Conflict(_)) => return Err(refuse(ErrorCode::UserExists, "that user name is taken")),
        Err(e) => return Err(internal(e)),
    };
    state.metrics.logins.get_or_create(&crate::metrics::ResultLabel { result: "registered" }).inc();
    tracing::info!(user = %auth.user, "account registered");
    state.store.user_by_id(id).await.map_err(internal)?.ok_or_else(|| refuse(ErrorCode::Internal, "account vanished"))
}

async fn login(state: &Arc<RelayState>, auth: &XxAuth) -> Result<UserRecord, ErrorFrame> {
    let bad = || refuse(ErrorCode::InvalidCredentials, "wrong user name or password");
    let count = |result: &'static str| state.metrics.logins.get_or_create(&crate::metrics::ResultLabel { result }).inc();
    let Some(user) = state.store.user_by_name(&auth.user).await.map_err(internal)? else {
        let policy = state.config.accounts.password.clone();
        let _ = tokio::task::spawn_blocking(move || password::burn_verify_time(&policy)).await;
        count("failed");
        return Err(bad());
    };
    let now = now_ms();
    if let Some(until) = user.locked_until.filter(|u| *u > now) {
        count("locked");
        let mut e = refuse(ErrorCode::LoginLocked, "too many failed logins; wait before trying again");
        e.retry_after_ms = Some((until - now) as u64);
        return Err(e);
    }
    let phc = user.password_hash.clone();
    let password = zeroize::Zeroizing::new(auth.password.clone());
    let policy = state.config.accounts.password.clone();
    let ok = tokio::task::spawn_blocking(move || {
        if phc == NO_PASSWORD {
            // An account made by single sign-on has no password: refuse it like a wrong one, in the same time.
            password::burn_verify_time(&policy);
            return false;
        }
        password::verify_password(&password, &phc)
    })
    .await
    .unwrap_or(false);
    if !ok {
        let failures = user.failed_logins + 1;
        let delay = state.config.accounts.lockout.delay_after(failures);
        let locked_until = delay.map(|d| now + d.as_millis() as i64);
        state.store.record_login_failure(user.id, locked_until).await.map_err(internal)?;
        count("failed");
        tracing::info!(user = %user.name, failures, "failed login");
        return Err(bad());
    }
    if user.disabled {
        count("disabled");
        return Err(refuse(ErrorCode::AccountDisabled, "this account is disabled; contact the operator"));
    }
    if let Some(secret) = &user.totp_secret {
        let Some(code) = auth.totp.as_deref() else {
            count("totp_required");
            return Err(refuse(ErrorCode::TotpRequired, "this account uses two-factor authentication: give a TOTP code"));
        };
        let Some(step) = totp::verify(secret, code, (now / 1000) as u64, 1) else {
            let failures = user.failed_logins + 1;
            let locked_until = state.config.accounts.lockout.delay_after(failures).map(|d| now + d.as_millis() as i64);
            state.store.record_login_failure(user.id, locked_until).await.map_err(internal)?;
            count("totp_invalid");
            return Err(refuse(ErrorCode::TotpInvalid, "wrong TOTP code"));
        };
        if !state.store.use_totp_step(user.id, step).await.map_err(internal)? {
            count("totp_reused");
            return Err(refuse(ErrorCode::TotpInvalid, "this TOTP code was already used; wait for the next one"));
        }
    }
    state.store.reset_login_failures(user.id).await.map_err(internal)?;
    count("ok");
    Ok(user)
}

/// Redeem an SSO login code: it must be known, unused and unexpired (it is marked used here, once, whatever follows),
/// and the verifier must answer the challenge it was issued for. No TOTP is asked: the identity provider did the
/// second factor. A locked account is not refused here, since the lock only slows down password guessing.
async fn sso_login(state: &Arc<RelayState>, auth: &XxAuth) -> Result<UserRecord, ErrorFrame> {
    let bad = || refuse(ErrorCode::InvalidCredentials, "the login code is unknown, used or expired, or the verifier does not match: sign in again");
    let count = |result: &'static str| state.metrics.logins.get_or_create(&crate::metrics::ResultLabel { result }).inc();
    let code = auth
        .login_code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 256)
        .ok_or_else(|| refuse(ErrorCode::InvalidField, "login_code: an SSO login needs the login code from the sign-in redirect"))?;
    let verifier = auth
        .verifier
        .as_deref()
        .filter(|v| valid_sso_verifier(v))
        .ok_or_else(|| refuse(ErrorCode::InvalidField, "verifier: 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_' and '~'"))?;
    let Some(redeemed) = state.store.redeem_login_code(&token::hash_token(code), now_ms()).await.map_err(internal)? else {
        count("sso_failed");
        return Err(bad());
    };
    if !token::constant_time_eq(sso_challenge(verifier).as_bytes(), redeemed.challenge.as_bytes()) {
        count("sso_failed");
        tracing::info!(user_id = redeemed.user_id, "SSO login code presented with a wrong verifier; the code is spent");
        return Err(bad());
    }
    let user = state.store.user_by_id(redeemed.user_id).await.map_err(internal)?.ok_or_else(bad)?;
    if !auth.user.is_empty() && auth.user != user.name {
        count("sso_failed");
        return Err(bad());
    }
    if user.disabled {
        count("disabled");
        return Err(refuse(ErrorCode::AccountDisabled, "this account is disabled; contact the operator"));
    }
    count("sso_ok");
    tracing::info!(user = %user.name, "SSO login");
    Ok(user)
}

/// The device with this static key for this user (`existing`, already looked up by the caller), registering it if
/// new.
async fn bind_device(
    state: &Arc<RelayState>,
    user: &UserRecord,
    existing: Option<imfree_store::DeviceRecord>,
    static_key: [u8; 32],
    signing_key: [u8; 32],
    name: &str,
) -> Result<String, ErrorFrame> {
    if let Some(existing) = existing {
        if existing.user_id != user.id || existing.signing_key != signing_key {
            return Err(refuse(ErrorCode::HandshakeFailed, "this device key belongs to another account or signing key"));
        }
        return Ok(existing.id);
    }
    let devices = state.store.devices_of(user.id).await.map_err(internal)?;
    if devices.iter().filter(|d| d.revoked_at.is_none()).count() >= state.config.accounts.max_devices {
        return Err(refuse(ErrorCode::TooManyDevices, "this account has the most devices allowed; remove one first"));
    }
    let id = ulid::Ulid::new().to_string();
    let device = NewDevice { id: id.clone(), user_id: user.id, signing_key, static_key, name: name.to_owned(), created_at: now_ms() };
    match state.store.add_device(&device).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(refuse(ErrorCode::HandshakeFailed, "this device key is already registered")),
        Err(e) => return Err(internal(e)),
    }
    state.hub.invalidate_route(&user.name);
    tracing::info!(user = %user.name, device = %id, "device registered");
    Ok(id)
}
