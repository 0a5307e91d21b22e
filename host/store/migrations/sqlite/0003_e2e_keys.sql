-- End-to-end keys (published by devices, verified by the relay) and per-device payloads for E2E envelopes.
CREATE TABLE identities (
    user_id      INTEGER PRIMARY KEY NOT NULL REFERENCES users (id),
    identity_key BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE device_keys (
    device_id       TEXT    PRIMARY KEY NOT NULL,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    certificate     BLOB    NOT NULL,
    signed_prekey   BLOB,
    kem_last_resort BLOB,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX device_keys_by_user ON device_keys (user_id, device_id);

-- kind 0: X25519 one-time prekey; kind 1: ML-KEM one-time prekey. Handed out once, oldest id first.
CREATE TABLE one_time_prekeys (
    device_id TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    key_id    INTEGER NOT NULL,
    body      BLOB    NOT NULL,
    PRIMARY KEY (device_id, kind, key_id)
) WITHOUT ROWID;

-- An E2E envelope carries one ciphertext per device: it lives with the queue entry, not the envelope.
ALTER TABLE queue ADD COLUMN payload BLOB;
