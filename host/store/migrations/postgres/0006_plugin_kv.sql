-- Relay-scope plugins' key-value data, one namespace per plugin (its name). The plugin host enforces each
-- plugin's quota from `kv_usage`.
CREATE TABLE plugin_kv (
    namespace TEXT  NOT NULL,
    key       TEXT  NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (namespace, key)
);
