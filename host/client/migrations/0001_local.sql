-- The client's local store: messages as the user sees them (decrypted), and the outbox of envelopes not yet
-- accepted by the relay.
CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    outgoing    INTEGER NOT NULL,
    peer        TEXT    NOT NULL,
    from_user   TEXT    NOT NULL,
    from_device TEXT    NOT NULL,
    to_user     TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    mime        TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    status      TEXT    NOT NULL,
    shown       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_unshown ON messages (shown, seq);
CREATE INDEX messages_peer ON messages (peer, seq);

CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,
    to_user    TEXT    NOT NULL,
    mime       TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE receipts (
    message_id TEXT    NOT NULL,
    from_user  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (message_id, from_user, kind)
);
