-- Counterpart of postgres/0002_queue_autovacuum.sql, which tunes PostgreSQL's autovacuum for the churning queue.
-- SQLite has no autovacuum daemon: nothing to do, but the migration numbers stay in step across backends.
SELECT 1;
