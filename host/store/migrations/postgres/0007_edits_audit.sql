-- Edits and deletions: the envelope that changes an earlier message names it in clear (`refers`), so that the relay
-- can check who may change what. The envelope row (kept, without its payload, for the de-duplication retention) is
-- also what the relay looks the earlier message up in.
ALTER TABLE envelopes ADD COLUMN ref_action TEXT;
ALTER TABLE envelopes ADD COLUMN ref_id TEXT;

-- The audit log: who did what to which message or member, and when — never content. Operators read it with
-- `imfree admin audit`.
CREATE TABLE audit_log (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    actor_device TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    conversation TEXT   NOT NULL,
    message_id   TEXT,
    subject      TEXT
);
CREATE INDEX audit_by_conversation ON audit_log (conversation, seq);
CREATE INDEX audit_by_actor ON audit_log (actor, seq);
CREATE INDEX audit_by_subject ON audit_log (subject, seq);
CREATE INDEX audit_by_time ON audit_log (at);
