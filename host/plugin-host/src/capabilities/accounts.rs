//! `accounts`: the relay's accounts for identity plugins (SSO) through the embedder's [`crate::AccountDirectory`]:
//! find the account linked to an external identity, provision or link one, update its profile, issue a single-use
//! login code bound to the client's PKCE challenge, end its sessions. Needs `accounts` requested and granted; only
//! the relay implements it (elsewhere every call is `invalid`).

use wasmtime::component::{HasSelf, Linker};

use crate::capability::Capability;
use crate::services::AccountError;
use crate::state::{PluginContext, PluginState};
use crate::wit::latest::imfree::plugin::accounts;
use crate::wit::latest::imfree::plugin::types::{ExternalIdentity, HostError, Profile};

/// Longest issuer, subject, name, claim or group the host passes on; a provider's token is untrusted input.
const MAX_FIELD: usize = 1_024;
/// Most directory groups kept per account.
const MAX_GROUPS: usize = 256;

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    accounts::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

fn account_error(e: AccountError) -> HostError {
    match e {
        AccountError::Invalid(m) => HostError::Invalid(m),
        AccountError::Unavailable(m) => HostError::Unavailable(m),
    }
}

fn field(what: &str, value: &str) -> Result<(), HostError> {
    if value.is_empty() || value.len() > MAX_FIELD {
        return Err(HostError::Invalid(format!("{what} must be 1 to {MAX_FIELD} bytes")));
    }
    Ok(())
}

fn admit(ctx: &PluginContext) -> Result<(), HostError> {
    ctx.require(Capability::Accounts)
}

fn check_identity(identity: &ExternalIdentity) -> Result<(), HostError> {
    field("issuer", &identity.issuer)?;
    field("subject", &identity.subject)
}

fn check_profile(profile: &Profile) -> Result<(), HostError> {
    for (what, value) in [("display name", &profile.display_name), ("email", &profile.email)] {
        if let Some(v) = value {
            field(what, v)?;
        }
    }
    if profile.groups.len() > MAX_GROUPS {
        return Err(HostError::Invalid(format!("at most {MAX_GROUPS} groups per account")));
    }
    profile.groups.iter().try_for_each(|g| field("group", g))
}

impl accounts::Host for PluginState {
    async fn find_linked(&mut self, identity: ExternalIdentity) -> wasmtime::Result<Result<Option<String>, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            check_identity(&identity)?;
            ctx.services.accounts.find_linked(&identity).await.map_err(account_error)
        }
        .await)
    }

    async fn exists(&mut self, name: String) -> wasmtime::Result<Result<bool, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            field("account name", &name)?;
            ctx.services.accounts.exists(&name).await.map_err(account_error)
        }
        .await)
    }

    async fn provision(
        &mut self,
        name: String,
        identity: ExternalIdentity,
        profile: Profile,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            field("account name", &name)?;
            check_identity(&identity)?;
            check_profile(&profile)?;
            ctx.services.accounts.provision(&name, &identity, &profile).await.map_err(account_error)
        }
        .await)
    }

    async fn link(&mut self, name: String, identity: ExternalIdentity) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            field("account name", &name)?;
            check_identity(&identity)?;
            ctx.services.accounts.link(&name, &identity).await.map_err(account_error)
        }
        .await)
    }

    async fn update_profile(&mut self, name: String, profile: Profile) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            field("account name", &name)?;
            check_profile(&profile)?;
            ctx.services.accounts.update_profile(&name, &profile).await.map_err(account_error)
        }
        .await)
    }

    async fn issue_login_code(
        &mut self,
        name: String,
        client_challenge: String,
    ) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            field("account name", &name)?;
            // RFC 7636: an S256 challenge is 43 base64url characters.
            if client_challenge.len() != 43
                || !client_challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(HostError::Invalid(
                    "the client challenge must be an S256 PKCE challenge (43 base64url characters)".into(),
                ));
            }
            ctx.services.accounts.issue_login_code(&name, &client_challenge).await.map_err(account_error)
        }
        .await)
    }

    async fn revoke_sessions(&mut self, name: String) -> wasmtime::Result<Result<u32, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            field("account name", &name)?;
            ctx.services.accounts.revoke_sessions(&name).await.map_err(account_error)
        }
        .await)
    }
}
