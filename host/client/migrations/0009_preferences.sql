-- The user's preferences on this device (typing indicators, read receipts): name → value.
CREATE TABLE preferences (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
