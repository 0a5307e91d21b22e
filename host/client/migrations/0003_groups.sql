-- Groups this device takes part in: the membership log as verified here (replayed state and every head hash, for
-- fork and rollback checks), this device's sender-key session, and to whom the current sending chain was sent.
CREATE TABLE e2e_groups (
    group_id    TEXT    PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL DEFAULT '',
    state       BLOB    NOT NULL,
    session     BLOB,
    distributed BLOB    NOT NULL,
    -- 'active', 'left' (no longer a member), or 'refused: <why>' when the relay served a log that does not verify.
    status      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Group work that arrived and was acknowledged but is handled after the delivery batch (it may need the
-- membership log from the relay): group messages (ciphertext), membership updates and sender keys from pairwise
-- messages. A handled row keeps its envelope id (so a redelivery is recognised) and loses its body.
CREATE TABLE group_inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    group_id    TEXT    NOT NULL,
    from_user   TEXT    NOT NULL,
    from_device TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    -- For pairwise items: the sender's identity key and certificate device id, from the authenticated session.
    sender_identity BLOB,
    sender_device   INTEGER,
    done        INTEGER NOT NULL DEFAULT 0
);
