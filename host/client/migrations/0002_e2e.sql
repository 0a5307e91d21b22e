-- End-to-end state of this device: identity (on the account's first device), certificate, prekey secrets, the
-- replay cache of last-resort set-ups; pairwise sessions; contacts' pinned identity keys.
CREATE TABLE e2e_state (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE e2e_sessions (
    peer_user   TEXT    NOT NULL,
    peer_device TEXT    NOT NULL,
    session     BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (peer_user, peer_device)
);

CREATE TABLE e2e_identities (
    user         TEXT    PRIMARY KEY NOT NULL,
    identity_key BLOB    NOT NULL,
    pinned_at    INTEGER NOT NULL,
    -- A different key the relay presented for this user, not accepted yet: messages to the user are held.
    changed_to   BLOB
);
