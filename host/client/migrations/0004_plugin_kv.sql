-- Key-value data of plugins that run in this client (client scope) or as this bot (bot scope): it stays on this
-- device, never on the relay. One namespace per plugin.
CREATE TABLE plugin_kv (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
