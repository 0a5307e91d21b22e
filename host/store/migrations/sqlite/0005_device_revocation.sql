-- Device revocation (numbered 0005: 0004 is the group tables). Keep it equivalent to the PostgreSQL file.
-- A revoked device can no longer log in or resume; its keys, prekeys and queue are deleted when it is revoked.
ALTER TABLE devices ADD COLUMN revoked_at INTEGER;

-- The newest signed device revocation list per user (opaque to the store; verified by the relay before storing).
CREATE TABLE revocation_lists (
    user_id    INTEGER PRIMARY KEY NOT NULL REFERENCES users (id),
    version    INTEGER NOT NULL,
    list       BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);
