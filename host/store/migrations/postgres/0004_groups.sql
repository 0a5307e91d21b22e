-- Group membership logs. The relay stores each signed entry as the client made it and the member set that the log
-- leaves, for routing group messages and answering `group.log`; clients verify the entries themselves.
CREATE TABLE group_log (
    group_id   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    entry      BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq)
);

-- Everyone the log has ever named as a member; `active` = a member now. Former members may still read the log
-- (to see their own removal), only current ones receive group messages.
CREATE TABLE group_members (
    group_id TEXT    NOT NULL,
    user_id  BIGINT  NOT NULL REFERENCES users (id),
    active   BOOLEAN NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);
