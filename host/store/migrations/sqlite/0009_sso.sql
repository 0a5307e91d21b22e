-- Single sign-on: identities at external providers linked to accounts, the profile a directory keeps for an
-- account, and the single-use login codes an SSO plugin issues. Keep it equivalent to migrations/postgres/0009_sso.sql.

-- An (issuer, subject) pair names one person at one provider; it opens one account only. Never matched by email.
CREATE TABLE external_identities (
    issuer     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
) WITHOUT ROWID;
CREATE INDEX external_identities_by_user ON external_identities (user_id);

-- What the directory says about an account: shown to operators, never used to add anyone to an encrypted group.
CREATE TABLE account_profiles (
    user_id      INTEGER PRIMARY KEY NOT NULL REFERENCES users (id),
    display_name TEXT,
    email        TEXT,
    updated_at   INTEGER NOT NULL
);

-- The directory groups mapped onto an account (the plugin's group map), replaced with the profile.
CREATE TABLE account_groups (
    user_id INTEGER NOT NULL REFERENCES users (id),
    name    TEXT    NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;

-- Only the SHA-256 of a code is kept. `challenge` is the client's PKCE S256 challenge (base64url, no padding);
-- `used_at` is set by the one redemption that wins.
CREATE TABLE login_codes (
    code_hash  BLOB    PRIMARY KEY NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    challenge  TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_codes_by_expiry ON login_codes (expires_at);
