-- Full-text search over this device's decrypted text messages (SQLite FTS5; see src/search.rs and
-- docs/architecture.md, "Local search").
--
-- What is searchable is defined once, by the view `message_text`: text/plain and text/markdown bodies (a MIME
-- parameter such as "; charset=utf-8" and case are ignored), not empty, and not a local notice or a tombstone
-- (status 'undecodable', 'event', 'warning', 'refused' or 'deleted'; `deleted` set). Rows that carry a change of
-- another message (`ref_action`: an edit's new text, a deletion, a reaction; migration 0005) are not indexed: an
-- edit is applied by UPDATEing the edited message's body, which re-indexes that row, so the newest text is found
-- once, under the message it belongs to. A deletion empties the body and sets `deleted`: out of the index.
--
-- The index is an external-content FTS5 table over that view: it stores the tokens (the inverted index), not a
-- second copy of the text; snippets are cut from the view. STX and ETX (char(2), char(3)) are blanked in the view
-- because the search uses them as the highlight marks of snippets, so a message cannot forge a highlight.
-- The conversation and the sender are indexed too, each as one hex token (exact, whatever the name holds), so that
-- `--in` and `--from` narrow a search inside the index (a merge of two sorted lists) instead of row by row.
CREATE VIEW message_text AS
SELECT seq,
       replace(replace(CAST(body AS TEXT), char(2), ' '), char(3), ' ') AS body,
       hex(peer) AS conversation,
       hex(from_user) AS sender
FROM messages
WHERE lower(trim(CASE WHEN instr(mime, ';') > 0 THEN substr(mime, 1, instr(mime, ';') - 1) ELSE mime END))
          IN ('text/plain', 'text/markdown')
  AND status NOT IN ('undecodable', 'event', 'warning', 'refused', 'deleted')
  AND deleted = 0
  AND ref_action IS NULL
  AND length(body) > 0;

-- unicode61 with remove_diacritics 2: words split on Unicode letter/number boundaries, case-folded, and "café"
-- found by "cafe" (2 also folds the diacritics that 1 misses). prefix = '2 3': `wo*` and `wor*` read a prefix index
-- instead of merging every word that starts so. No trigram tokenizer: it triples the index and gives no word
-- boundaries for ranking; its one gain (substrings, unsegmented scripts such as Chinese) is noted as a limit.
CREATE VIRTUAL TABLE message_search USING fts5(
    body,
    conversation,
    sender,
    content = 'message_text',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);

-- A deleted or edited message's old words are removed from the index's pages at once, instead of being masked by a
-- delete marker until segments merge: deleting a message for privacy should take its words off the disk too.
INSERT INTO message_search (message_search, rank) VALUES ('secure-delete', 1);

-- Backfill: stores that already hold messages are indexed now.
INSERT INTO message_search (message_search) VALUES ('rebuild');

-- Kept in sync by triggers, whoever writes `messages`. An external-content index forgets a row only when it is
-- given the exact text it indexed, so the old text is read from the view BEFORE the row changes.
CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search (rowid, body, conversation, sender)
    SELECT seq, body, conversation, sender FROM message_text WHERE seq = new.seq;
END;

CREATE TRIGGER message_search_update_before BEFORE UPDATE OF body, mime, status, peer, from_user, deleted, ref_action ON messages
WHEN old.body IS NOT new.body OR old.mime IS NOT new.mime OR old.status IS NOT new.status
  OR old.peer IS NOT new.peer OR old.from_user IS NOT new.from_user
  OR old.deleted IS NOT new.deleted OR old.ref_action IS NOT new.ref_action BEGIN
    INSERT INTO message_search (message_search, rowid, body, conversation, sender)
    SELECT 'delete', seq, body, conversation, sender FROM message_text WHERE seq = old.seq;
END;

CREATE TRIGGER message_search_update_after AFTER UPDATE OF body, mime, status, peer, from_user, deleted, ref_action ON messages
WHEN old.body IS NOT new.body OR old.mime IS NOT new.mime OR old.status IS NOT new.status
  OR old.peer IS NOT new.peer OR old.from_user IS NOT new.from_user
  OR old.deleted IS NOT new.deleted OR old.ref_action IS NOT new.ref_action BEGIN
    INSERT INTO message_search (rowid, body, conversation, sender)
    SELECT seq, body, conversation, sender FROM message_text WHERE seq = new.seq;
END;

CREATE TRIGGER message_search_delete BEFORE DELETE ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, body, conversation, sender)
    SELECT 'delete', seq, body, conversation, sender FROM message_text WHERE seq = old.seq;
END;
