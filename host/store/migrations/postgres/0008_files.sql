-- End-to-end encrypted files: the relay's metadata of each uploaded file. The sealed chunks live under the data dir
-- (files/<id>/<index>), never in the database; the relay cannot read names, types, keys or contents, which travel
-- inside the end-to-end message. `size` is the declared plaintext size: an account's quota counts it from
-- `file.begin` on, so an upload can never outgrow what was reserved.
CREATE TABLE files (
    id         TEXT    PRIMARY KEY,
    owner      BIGINT  NOT NULL REFERENCES users (id),
    size       BIGINT  NOT NULL,
    chunk_size BIGINT  NOT NULL,
    chunks     BIGINT  NOT NULL,
    complete   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX files_owner ON files (owner);
CREATE INDEX files_expiry ON files (expires_at);
