-- Resumable end-to-end encrypted file transfers of this device. A row survives a crash or a restart, so that running
-- `file send` / `file get` again (or the library calls) continues where the transfer stopped.
--
-- Uploads: the file key and the descriptor are sealed with the home's key store when it has one (like every secret
-- here). `file_len` and `modified_ms` tell whether the file changed since the upload began; a changed file is
-- uploaded afresh under a new id and key, never re-encrypted under the old one.
CREATE TABLE file_uploads (
    file_id     TEXT    PRIMARY KEY NOT NULL,
    message_id  TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    file_len    INTEGER NOT NULL,
    modified_ms INTEGER NOT NULL,
    file_key    BLOB    NOT NULL,
    descriptor  BLOB    NOT NULL,
    -- uploading, sent, abandoned
    status      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX file_uploads_path ON file_uploads (path, recipient, status);

-- Downloads: the partial file `<dest>.imfree-part` holds exactly `next_chunk` verified chunks once they are recorded
-- here (written and fsynced first); a resumed download truncates it to that and continues.
CREATE TABLE file_downloads (
    message_id TEXT    PRIMARY KEY NOT NULL,
    file_id    TEXT    NOT NULL,
    dest       TEXT    NOT NULL,
    next_chunk INTEGER NOT NULL,
    -- downloading, done, failed
    status     TEXT    NOT NULL,
    error      TEXT,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
