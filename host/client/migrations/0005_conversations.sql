-- Replies, edits, deletions and reactions.
--
-- An edit, deletion or reaction arrives as a message of its own: its row (with `ref_action` and `ref_id`) is what
-- `recv` shows once, and its effect is applied to the message it names — in the same transaction, and only when its
-- sender may make that change. One that arrives before the message it names waits, and is applied when that message
-- arrives.
ALTER TABLE messages ADD COLUMN reply_to TEXT;
-- 'edit', 'delete' or 'react' on a change row.
ALTER TABLE messages ADD COLUMN ref_action TEXT;
ALTER TABLE messages ADD COLUMN ref_id TEXT;
-- On a deletion: 1 when a group admin deleted someone else's message (checked against the verified membership log
-- before the row was stored).
ALTER TABLE messages ADD COLUMN by_admin INTEGER NOT NULL DEFAULT 0;
-- On a message: when its shown content was last replaced by an edit, and whether it was deleted (its body is then
-- empty and its versions are gone).
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
-- Users mentioned, as a JSON array.
ALTER TABLE messages ADD COLUMN mentions TEXT;
CREATE INDEX messages_by_ref ON messages (ref_id) WHERE ref_id IS NOT NULL;

-- Every version of an edited message, the original first: the edit history.
CREATE TABLE message_versions (
    message_id  TEXT    NOT NULL,
    envelope_id TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    mime        TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    PRIMARY KEY (message_id, envelope_id)
);

-- Reactions: one row per (message, user, emoji), the latest add or removal by time (so a reordered pair ends right).
-- `peer` is the conversation the reaction came in: a reaction only counts on a message of that same conversation.
CREATE TABLE reactions (
    message_id TEXT    NOT NULL,
    user       TEXT    NOT NULL,
    emoji      TEXT    NOT NULL,
    peer       TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    removed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, user, emoji)
);

-- The clear reference an outgoing edit or deletion carries to the relay.
ALTER TABLE outbox ADD COLUMN ref_action TEXT;
ALTER TABLE outbox ADD COLUMN ref_id TEXT;

-- The clear reference a group delivery came with (checked against the one inside when the message is opened).
ALTER TABLE group_inbox ADD COLUMN ref_action TEXT;
ALTER TABLE group_inbox ADD COLUMN ref_id TEXT;
