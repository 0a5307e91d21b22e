//! Single sign-on on the relay's side: identities at external providers (an OpenID Connect issuer and subject) linked
//! to accounts, the profile a directory keeps for an account (display name, email, mapped groups), and the
//! single-use login codes that let a client finish an SSO login over the IMF handshake.
//!
//! What it must not touch: the provider protocol (the sso plugin runs it) and end-to-end groups (directory groups
//! are shown to operators only; a relay that could add members to an encrypted group would be the ghost-user
//! attack). A code is stored as its SHA-256 only, and redeemed by one conditional UPDATE, so two relays racing for the
//! same code cannot both win.

use crate::common::conflict_or;
use crate::{PgStore, Result, SqliteStore, StoreError, UnixMs, UserId};

/// The password hash of an account made by provisioning: not a PHC string, so no password ever verifies against it.
pub const NO_PASSWORD: &str = "!sso";

/// A person at an identity provider: the OpenID Connect `iss` and `sub`. The pair is what identifies them; an email
/// address never does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalIdentityRef {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The provider's stable subject id for the person.
    pub subject: String,
}

/// What the relay keeps about an account from its directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountProfile {
    /// A display name.
    pub display_name: Option<String>,
    /// A verified email address.
    pub email: Option<String>,
    /// Directory groups, as mapped by the sso plugin's settings (sorted, no duplicates).
    pub groups: Vec<String>,
}

/// A login code that was redeemed: whose it is and the challenge the client must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemedCode {
    /// The account the code logs in to.
    pub user_id: UserId,
    /// The client's PKCE S256 challenge (base64url of SHA-256 of the verifier, no padding).
    pub challenge: String,
}

/// Linked identities, directory profiles and login codes, implemented by both backends (and part of every
/// [`crate::RelayStore`]).
#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// The name of the account `identity` is linked to.
    async fn linked_account(&self, identity: &ExternalIdentityRef) -> Result<Option<String>>;
    /// Create the account `name` with no usable password ([`NO_PASSWORD`]), link `identity` to it and store
    /// `profile`, in one transaction. `Conflict` (and nothing created) if the name is taken or the identity is
    /// linked already.
    async fn provision_user(&self, name: &str, identity: &ExternalIdentityRef, profile: &AccountProfile, at: UnixMs) -> Result<UserId>;
    /// Link `identity` to the existing account `name`. `Ok(false)` if there is no such account; `Conflict` if the
    /// identity is linked already (to any account, this one included).
    async fn link_identity(&self, name: &str, identity: &ExternalIdentityRef, at: UnixMs) -> Result<bool>;
    /// The identities linked to an account, oldest first.
    async fn identities_of(&self, user: UserId) -> Result<Vec<ExternalIdentityRef>>;
    /// Replace the profile of the account `name`. `Ok(false)` if there is no such account.
    async fn set_profile(&self, name: &str, profile: &AccountProfile, at: UnixMs) -> Result<bool>;
    /// The profile of an account, if one was ever stored.
    async fn profile(&self, user: UserId) -> Result<Option<AccountProfile>>;
    /// Store a login code under its SHA-256, for `user`, bound to the client's `challenge`.
    async fn create_login_code(&self, code_hash: &[u8; 32], user: UserId, challenge: &str, expires_at: UnixMs, at: UnixMs) -> Result<()>;
    /// Mark the code with this hash used, if it is known, unused and unexpired at `now`, and return what it was
    /// issued for. One conditional UPDATE: of two redemptions of one code, however raced, exactly one gets `Some`.
    async fn redeem_login_code(&self, code_hash: &[u8; 32], now: UnixMs) -> Result<Option<RedeemedCode>>;
    /// Forget login codes that expired before `before`; returns how many.
    async fn prune_login_codes(&self, before: UnixMs) -> Result<u64>;
}

/// Directory groups as stored: sorted, without duplicates or empty names.
fn normal_groups(groups: &[String]) -> Vec<String> {
    let mut g: Vec<String> = groups.iter().filter(|g| !g.is_empty()).cloned().collect();
    g.sort();
    g.dedup();
    g
}

fn identity_conflict(err: sqlx::Error) -> StoreError {
    conflict_or(err, "external identity (already linked to an account)")
}

#[async_trait::async_trait]
impl IdentityStore for SqliteStore {
    async fn linked_account(&self, identity: &ExternalIdentityRef) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT u.name FROM external_identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = ?1 AND i.subject = ?2",
        )
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn provision_user(&self, name: &str, identity: &ExternalIdentityRef, profile: &AccountProfile, at: UnixMs) -> Result<UserId> {
        let mut tx = self.begin_write().await?;
        let id: UserId = sqlx::query_scalar("INSERT INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3) RETURNING id")
            .bind(name)
            .bind(NO_PASSWORD)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, &format!("user name {name:?}")))?;
        sqlx::query("INSERT INTO external_identities (issuer, subject, user_id, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(identity_conflict)?;
        sqlite_put_profile(&mut tx, id, profile, at).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn link_identity(&self, name: &str, identity: &ExternalIdentityRef, at: UnixMs) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let Some(id): Option<UserId> = sqlx::query_scalar("SELECT id FROM users WHERE name = ?1").bind(name).fetch_optional(&mut *tx).await? else {
            return Ok(false);
        };
        sqlx::query("INSERT INTO external_identities (issuer, subject, user_id, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(identity_conflict)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn identities_of(&self, user: UserId) -> Result<Vec<ExternalIdentityRef>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT issuer, subject FROM external_identities WHERE user_id = ?1 ORDER BY created_at, issuer, subject")
                .bind(user)
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|(issuer, subject)| ExternalIdentityRef { issuer, subject }).collect())
    }

    async fn set_profile(&self, name: &str, profile: &AccountProfile, at: UnixMs) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let Some(id): Option<UserId> = sqlx::query_scalar("SELECT id FROM users WHERE name = ?1").bind(name).fetch_optional(&mut *tx).await? else {
            return Ok(false);
        };
        sqlite_put_profile(&mut tx, id, profile, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn profile(&self, user: UserId) -> Result<Option<AccountProfile>> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT display_name, email FROM account_profiles WHERE user_id = ?1").bind(user).fetch_optional(&self.reader).await?;
        let Some((display_name, email)) = row else { return Ok(None) };
        let groups = sqlx::query_scalar("SELECT name FROM account_groups WHERE user_id = ?1 ORDER BY name").bind(user).fetch_all(&self.reader).await?;
        Ok(Some(AccountProfile { display_name, email, groups }))
    }

    async fn create_login_code(&self, code_hash: &[u8; 32], user: UserId, challenge: &str, expires_at: UnixMs, at: UnixMs) -> Result<()> {
        sqlx::query("INSERT INTO login_codes (code_hash, user_id, challenge, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(&code_hash[..])
            .bind(user)
            .bind(challenge)
            .bind(expires_at)
            .bind(at)
            .execute(&self.writer)
            .await
            .map_err(|e| conflict_or(e, "login code"))?;
        Ok(())
    }

    async fn redeem_login_code(&self, code_hash: &[u8; 32], now: UnixMs) -> Result<Option<RedeemedCode>> {
        let row: Option<(UserId, String)> = sqlx::query_as(
            "UPDATE login_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING user_id, challenge",
        )
        .bind(&code_hash[..])
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(|(user_id, challenge)| RedeemedCode { user_id, challenge }))
    }

    async fn prune_login_codes(&self, before: UnixMs) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM login_codes WHERE expires_at < ?1").bind(before).execute(&self.writer).await?.rows_affected())
    }
}

async fn sqlite_put_profile(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, id: UserId, profile: &AccountProfile, at: UnixMs) -> Result<()> {
    sqlx::query(
        "INSERT INTO account_profiles (user_id, display_name, email, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, email = excluded.email, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(&profile.display_name)
    .bind(&profile.email)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM account_groups WHERE user_id = ?1").bind(id).execute(&mut **tx).await?;
    for group in normal_groups(&profile.groups) {
        sqlx::query("INSERT INTO account_groups (user_id, name) VALUES (?1, ?2)").bind(id).bind(group).execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl IdentityStore for PgStore {
    async fn linked_account(&self, identity: &ExternalIdentityRef) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT u.name FROM external_identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
        )
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn provision_user(&self, name: &str, identity: &ExternalIdentityRef, profile: &AccountProfile, at: UnixMs) -> Result<UserId> {
        let mut tx = self.pool.begin().await?;
        let id: UserId = sqlx::query_scalar("INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(name)
            .bind(NO_PASSWORD)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, &format!("user name {name:?}")))?;
        sqlx::query("INSERT INTO external_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(identity_conflict)?;
        pg_put_profile(&mut tx, id, profile, at).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn link_identity(&self, name: &str, identity: &ExternalIdentityRef, at: UnixMs) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(id): Option<UserId> = sqlx::query_scalar("SELECT id FROM users WHERE name = $1").bind(name).fetch_optional(&mut *tx).await? else {
            return Ok(false);
        };
        sqlx::query("INSERT INTO external_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(identity_conflict)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn identities_of(&self, user: UserId) -> Result<Vec<ExternalIdentityRef>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT issuer, subject FROM external_identities WHERE user_id = $1 ORDER BY created_at, issuer, subject")
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(issuer, subject)| ExternalIdentityRef { issuer, subject }).collect())
    }

    async fn set_profile(&self, name: &str, profile: &AccountProfile, at: UnixMs) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: two profile updates of one account replace the groups one after the other.
        let Some(id): Option<UserId> =
            sqlx::query_scalar("SELECT id FROM users WHERE name = $1 FOR UPDATE").bind(name).fetch_optional(&mut *tx).await?
        else {
            return Ok(false);
        };
        pg_put_profile(&mut tx, id, profile, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn profile(&self, user: UserId) -> Result<Option<AccountProfile>> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT display_name, email FROM account_profiles WHERE user_id = $1").bind(user).fetch_optional(&self.pool).await?;
        let Some((display_name, email)) = row else { return Ok(None) };
        let groups = sqlx::query_scalar("SELECT name FROM account_groups WHERE user_id = $1 ORDER BY name").bind(user).fetch_all(&self.pool).await?;
        Ok(Some(AccountProfile { display_name, email, groups }))
    }

    async fn create_login_code(&self, code_hash: &[u8; 32], user: UserId, challenge: &str, expires_at: UnixMs, at: UnixMs) -> Result<()> {
        sqlx::query("INSERT INTO login_codes (code_hash, user_id, challenge, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&code_hash[..])
            .bind(user)
            .bind(challenge)
            .bind(expires_at)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "login code"))?;
        Ok(())
    }

    async fn redeem_login_code(&self, code_hash: &[u8; 32], now: UnixMs) -> Result<Option<RedeemedCode>> {
        // Under READ COMMITTED a second UPDATE waits for the first's row lock, then re-checks `used_at IS NULL` on the
        // committed row and matches nothing.
        let row: Option<(UserId, String)> = sqlx::query_as(
            "UPDATE login_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id, challenge",
        )
        .bind(&code_hash[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, challenge)| RedeemedCode { user_id, challenge }))
    }

    async fn prune_login_codes(&self, before: UnixMs) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM login_codes WHERE expires_at < $1").bind(before).execute(&self.pool).await?.rows_affected())
    }
}

async fn pg_put_profile(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, id: UserId, profile: &AccountProfile, at: UnixMs) -> Result<()> {
    sqlx::query(
        "INSERT INTO account_profiles (user_id, display_name, email, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name, email = EXCLUDED.email, updated_at = EXCLUDED.updated_at",
    )
    .bind(id)
    .bind(&profile.display_name)
    .bind(&profile.email)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM account_groups WHERE user_id = $1").bind(id).execute(&mut **tx).await?;
    let groups = normal_groups(&profile.groups);
    if !groups.is_empty() {
        sqlx::query("INSERT INTO account_groups (user_id, name) SELECT $1, UNNEST($2::TEXT[])").bind(id).bind(&groups).execute(&mut **tx).await?;
    }
    Ok(())
}
