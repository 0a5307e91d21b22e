-- End-to-end keys (published by devices, verified by the relay) and per-device payloads for E2E envelopes.
CREATE TABLE identities (
    user_id      BIGINT PRIMARY KEY REFERENCES users (id),
    identity_key BYTEA  NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE device_keys (
    device_id       TEXT   PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    certificate     BYTEA  NOT NULL,
    signed_prekey   BYTEA,
    kem_last_resort BYTEA,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX device_keys_by_user ON device_keys (user_id, device_id);

-- kind 0: X25519 one-time prekey; kind 1: ML-KEM one-time prekey. Handed out once, oldest id first.
CREATE TABLE one_time_prekeys (
    device_id TEXT     NOT NULL,
    kind      SMALLINT NOT NULL,
    key_id    BIGINT   NOT NULL,
    body      BYTEA    NOT NULL,
    PRIMARY KEY (device_id, kind, key_id)
);

-- An E2E envelope carries one ciphertext per device: it lives with the queue entry, not the envelope.
ALTER TABLE queue ADD COLUMN payload BYTEA;
