//! The account directory that relay-scope plugins (the bundled `sso` plugin) use through the `accounts` capability:
//! find the account an external identity is linked to, provision or link one, keep its directory profile, and issue
//! the single-use login code the client then redeems over the IMF handshake (see `auth::sso_login`).
//!
//! It checks account names with the relay's own rules, never links by email, records `account.provision` and
//! `account.link` in the audit log (metadata only: the account, never the identity or profile), and keeps only the
//! SHA-256 of a login code. It must not add anyone to an end-to-end group: directory groups are shown to operators
//! only (a relay that could add members would be the ghost-user attack).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use imfree_plugin_host::{AccountDirectory, AccountError, ExternalIdentity, Profile};
use imfree_proto::{Limits, validate_user_name};
use imfree_store::{AccountProfile, AuditEvent, ExternalIdentityRef, RelayStore, StoreError, UserRecord};
use rand_core::{OsRng, RngCore};

use crate::state::now_ms;
use crate::token;

/// How long a login code is valid: long enough for the browser to hand it to the client, short enough that a code
/// left in a browser history is dead.
pub const LOGIN_CODE_TTL_MS: i64 = 120_000;

/// Who the audit log names as the actor of directory changes: the relay itself, on a plugin's behalf.
pub const DIRECTORY_ACTOR: &str = "relay";

/// Why a directory call failed. The text reaches the plugin (and may reach the browser): it names no secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    /// The request cannot be done: a bad name, a taken name, an identity linked elsewhere, an unknown account.
    #[error("{0}")]
    Invalid(String),
    /// The relay could not do it now (store failure); try again later.
    #[error("{0}")]
    Unavailable(String),
}

fn unavailable(err: StoreError) -> DirectoryError {
    tracing::error!(error = %err, "store failure in the account directory");
    DirectoryError::Unavailable("the relay's store failed; try again".into())
}

/// The relay's account directory, over its store.
#[derive(Clone)]
pub struct RelayAccounts {
    store: Arc<dyn RelayStore>,
    limits: Limits,
}

impl RelayAccounts {
    /// A directory over `store`, checking names against `limits` (the relay's protocol limits).
    pub fn new(store: Arc<dyn RelayStore>, limits: Limits) -> Self {
        RelayAccounts { store, limits }
    }

    /// The account `identity` is linked to.
    pub async fn find_linked(&self, identity: &ExternalIdentityRef) -> Result<Option<String>, DirectoryError> {
        check_identity(identity)?;
        self.store.linked_account(identity).await.map_err(unavailable)
    }

    /// Whether an account named `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, DirectoryError> {
        Ok(self.store.user_by_name(name).await.map_err(unavailable)?.is_some())
    }

    /// Create the account `name` (no password: it logs in through a linked identity only), linked to `identity`,
    /// with `profile`, in one transaction.
    pub async fn provision(&self, name: &str, identity: &ExternalIdentityRef, profile: &AccountProfile) -> Result<(), DirectoryError> {
        validate_user_name(name, &self.limits).map_err(|reason| DirectoryError::Invalid(format!("account name {name:?}: {reason}")))?;
        check_identity(identity)?;
        let profile = check_profile(profile)?;
        let now = now_ms();
        match self.store.provision_user(name, identity, &profile, now).await {
            Ok(_) => {}
            Err(StoreError::Conflict(what)) => {
                return Err(DirectoryError::Invalid(if what.starts_with("user name") {
                    format!("the account name {name:?} is taken")
                } else {
                    "this identity is already linked to an account".into()
                }));
            }
            Err(e) => return Err(unavailable(e)),
        }
        self.audit("account.provision", name, now).await;
        tracing::info!(user = %name, "account provisioned by single sign-on");
        Ok(())
    }

    /// Link `identity` to the existing account `name`.
    pub async fn link(&self, name: &str, identity: &ExternalIdentityRef) -> Result<(), DirectoryError> {
        check_identity(identity)?;
        let now = now_ms();
        match self.store.link_identity(name, identity, now).await {
            Ok(true) => {}
            Ok(false) => return Err(DirectoryError::Invalid(format!("no account named {name:?}"))),
            Err(StoreError::Conflict(_)) => return Err(DirectoryError::Invalid("this identity is already linked to an account".into())),
            Err(e) => return Err(unavailable(e)),
        }
        self.audit("account.link", name, now).await;
        tracing::info!(user = %name, "external identity linked");
        Ok(())
    }

    /// Replace the profile kept for `name`.
    pub async fn update_profile(&self, name: &str, profile: &AccountProfile) -> Result<(), DirectoryError> {
        let profile = check_profile(profile)?;
        if self.store.set_profile(name, &profile, now_ms()).await.map_err(unavailable)? {
            Ok(())
        } else {
            Err(DirectoryError::Invalid(format!("no account named {name:?}")))
        }
    }

    /// A single-use login code for `name`, valid for [`LOGIN_CODE_TTL_MS`], bound to `client_challenge` (PKCE S256:
    /// base64url of the SHA-256 of the client's verifier, no padding). The code is 256 random bits; only its SHA-256
    /// is stored.
    pub async fn issue_login_code(&self, name: &str, client_challenge: &str) -> Result<String, DirectoryError> {
        if !valid_challenge(client_challenge) {
            return Err(DirectoryError::Invalid("the client challenge must be 43 characters of base64url (SHA-256, no padding)".into()));
        }
        let user = self.active_user(name).await?;
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let code = URL_SAFE_NO_PAD.encode(bytes);
        let now = now_ms();
        self.store
            .create_login_code(&token::hash_token(&code), user.id, client_challenge, now + LOGIN_CODE_TTL_MS, now)
            .await
            .map_err(unavailable)?;
        Ok(code)
    }

    /// End every session of `name`; returns how many ended.
    pub async fn revoke_sessions(&self, name: &str) -> Result<u32, DirectoryError> {
        let Some(user) = self.store.user_by_name(name).await.map_err(unavailable)? else {
            return Err(DirectoryError::Invalid(format!("no account named {name:?}")));
        };
        let n = self.store.revoke_user_sessions(user.id, now_ms()).await.map_err(unavailable)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn active_user(&self, name: &str) -> Result<UserRecord, DirectoryError> {
        match self.store.user_by_name(name).await.map_err(unavailable)? {
            None => Err(DirectoryError::Invalid(format!("no account named {name:?}"))),
            Some(u) if u.disabled => Err(DirectoryError::Invalid(format!("the account {name:?} is disabled; contact the operator"))),
            Some(u) => Ok(u),
        }
    }

    async fn audit(&self, action: &str, name: &str, at: i64) {
        let event = AuditEvent {
            at,
            actor: DIRECTORY_ACTOR.into(),
            actor_device: String::new(),
            action: action.into(),
            conversation: format!("account:{name}"),
            message_id: None,
            subject: Some(name.into()),
        };
        // The change itself is committed; a lost audit line is logged rather than undoing it.
        if let Err(e) = self.store.append_audit(&[event]).await {
            tracing::error!(error = %e, action, user = %name, "could not record a directory change in the audit log");
        }
    }
}

/// What relay-scope plugins reach through the `accounts` capability: the methods above, with the WIT types.
#[async_trait::async_trait]
impl AccountDirectory for RelayAccounts {
    async fn find_linked(&self, identity: &ExternalIdentity) -> Result<Option<String>, AccountError> {
        RelayAccounts::find_linked(self, &identity_ref(identity)).await.map_err(Into::into)
    }

    async fn exists(&self, name: &str) -> Result<bool, AccountError> {
        RelayAccounts::exists(self, name).await.map_err(Into::into)
    }

    async fn provision(&self, name: &str, identity: &ExternalIdentity, profile: &Profile) -> Result<(), AccountError> {
        RelayAccounts::provision(self, name, &identity_ref(identity), &account_profile(profile)).await.map_err(Into::into)
    }

    async fn link(&self, name: &str, identity: &ExternalIdentity) -> Result<(), AccountError> {
        RelayAccounts::link(self, name, &identity_ref(identity)).await.map_err(Into::into)
    }

    async fn update_profile(&self, name: &str, profile: &Profile) -> Result<(), AccountError> {
        RelayAccounts::update_profile(self, name, &account_profile(profile)).await.map_err(Into::into)
    }

    async fn issue_login_code(&self, name: &str, client_challenge: &str) -> Result<String, AccountError> {
        RelayAccounts::issue_login_code(self, name, client_challenge).await.map_err(Into::into)
    }

    async fn revoke_sessions(&self, name: &str) -> Result<u32, AccountError> {
        RelayAccounts::revoke_sessions(self, name).await.map_err(Into::into)
    }
}

impl From<DirectoryError> for AccountError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Invalid(m) => AccountError::Invalid(m),
            DirectoryError::Unavailable(m) => AccountError::Unavailable(m),
        }
    }
}

fn identity_ref(identity: &ExternalIdentity) -> ExternalIdentityRef {
    ExternalIdentityRef { issuer: identity.issuer.clone(), subject: identity.subject.clone() }
}

fn account_profile(profile: &Profile) -> AccountProfile {
    AccountProfile { display_name: profile.display_name.clone(), email: profile.email.clone(), groups: profile.groups.clone() }
}

/// Lengths the store accepts for an identity's parts and profile fields; the limits keep a misbehaving plugin from
/// filling the database.
const MAX_IDENTITY_LEN: usize = 512;
const MAX_PROFILE_FIELD_LEN: usize = 256;
const MAX_GROUPS: usize = 256;

fn check_identity(identity: &ExternalIdentityRef) -> Result<(), DirectoryError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= MAX_IDENTITY_LEN && !s.chars().any(char::is_control);
    if ok(&identity.issuer) && ok(&identity.subject) {
        Ok(())
    } else {
        Err(DirectoryError::Invalid(format!("an identity's issuer and subject are 1 to {MAX_IDENTITY_LEN} bytes without control characters")))
    }
}

fn check_profile(profile: &AccountProfile) -> Result<AccountProfile, DirectoryError> {
    let field = |s: &Option<String>, what: &str| match s {
        Some(v) if v.len() > MAX_PROFILE_FIELD_LEN || v.chars().any(char::is_control) => {
            Err(DirectoryError::Invalid(format!("{what}: at most {MAX_PROFILE_FIELD_LEN} bytes, no control characters")))
        }
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other.clone()),
    };
    if profile.groups.len() > MAX_GROUPS
        || profile.groups.iter().any(|g| g.len() > MAX_PROFILE_FIELD_LEN || g.chars().any(char::is_control))
    {
        return Err(DirectoryError::Invalid(format!(
            "groups: at most {MAX_GROUPS}, each at most {MAX_PROFILE_FIELD_LEN} bytes without control characters"
        )));
    }
    Ok(AccountProfile {
        display_name: field(&profile.display_name, "display name")?,
        email: field(&profile.email, "email")?,
        groups: profile.groups.clone(),
    })
}

/// A PKCE S256 challenge: 43 base64url characters (a SHA-256 without padding).
fn valid_challenge(c: &str) -> bool {
    c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use imfree_proto::auth::sso_challenge;
    use imfree_store::SqliteStore;

    async fn directory() -> (tempfile::TempDir, RelayAccounts, Arc<dyn RelayStore>) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn RelayStore> = Arc::new(SqliteStore::open(&dir.path().join("relay.db")).await.expect("store"));
        (dir, RelayAccounts::new(Arc::clone(&store), Limits::default()), store)
    }

    fn idp(sub: &str) -> ExternalIdentityRef {
        ExternalIdentityRef { issuer: "https://idp.example".into(), subject: sub.into() }
    }

    #[tokio::test]
    async fn provision_checks_names_and_audits() {
        let (_dir, d, store) = directory().await;
        let e = d.provision("Not Valid", &idp("1"), &AccountProfile::default()).await.unwrap_err();
        assert!(matches!(e, DirectoryError::Invalid(ref m) if m.contains("account name")), "{e:?}");
        d.provision("alice", &idp("1"), &AccountProfile { groups: vec!["staff".into()], ..Default::default() }).await.unwrap();
        assert_eq!(d.find_linked(&idp("1")).await.unwrap().as_deref(), Some("alice"));
        assert!(d.exists("alice").await.unwrap());
        let e = d.provision("alice", &idp("2"), &AccountProfile::default()).await.unwrap_err();
        assert_eq!(e, DirectoryError::Invalid("the account name \"alice\" is taken".into()));
        let e = d.provision("bob", &idp("1"), &AccountProfile::default()).await.unwrap_err();
        assert_eq!(e, DirectoryError::Invalid("this identity is already linked to an account".into()));
        d.link("alice", &idp("3")).await.unwrap();
        assert!(d.link("nobody", &idp("4")).await.is_err());

        let log = store.audit_log(&imfree_store::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
        let actions: Vec<_> = log.iter().map(|r| (r.event.action.as_str(), r.event.subject.as_deref())).collect();
        assert_eq!(actions, vec![("account.link", Some("alice")), ("account.provision", Some("alice"))]);
    }

    #[tokio::test]
    async fn the_plugin_host_trait_reaches_the_same_directory() {
        let (_dir, d, store) = directory().await;
        let directory: Arc<dyn AccountDirectory> = Arc::new(d);
        let id = ExternalIdentity { issuer: "https://idp.example".into(), subject: "9".into() };
        let profile = Profile { display_name: Some("Dee".into()), email: None, groups: vec!["ops".into()] };
        directory.provision("dee", &id, &profile).await.unwrap();
        assert_eq!(directory.find_linked(&id).await.unwrap().as_deref(), Some("dee"));
        let e = directory.provision("dee", &id, &profile).await.unwrap_err();
        assert!(matches!(e, AccountError::Invalid(_)), "{e:?}");
        let user = store.user_by_name("dee").await.unwrap().unwrap();
        assert_eq!(store.profile(user.id).await.unwrap().unwrap().groups, vec!["ops".to_owned()]);
        assert_eq!(directory.revoke_sessions("dee").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn login_codes_are_random_hashed_and_bound_to_the_challenge() {
        let (_dir, d, store) = directory().await;
        d.provision("alice", &idp("1"), &AccountProfile::default()).await.unwrap();
        let challenge = sso_challenge(&"v".repeat(43));
        assert!(d.issue_login_code("alice", "not-a-challenge").await.is_err());
        assert!(d.issue_login_code("nobody", &challenge).await.is_err());
        let a = d.issue_login_code("alice", &challenge).await.unwrap();
        let b = d.issue_login_code("alice", &challenge).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 32, "256 random bits");
        let redeemed = store.redeem_login_code(&token::hash_token(&a), now_ms()).await.unwrap().expect("stored under its hash");
        assert_eq!(redeemed.challenge, challenge);
        assert!(store.redeem_login_code(&token::hash_token(&a), now_ms()).await.unwrap().is_none());
        // Valid for two minutes, no longer.
        assert!(store.redeem_login_code(&token::hash_token(&b), now_ms() + LOGIN_CODE_TTL_MS + 1).await.unwrap().is_none());
        store.set_user_disabled("alice", true).await.unwrap();
        assert!(d.issue_login_code("alice", &challenge).await.is_err(), "no code for a disabled account");
    }
}
