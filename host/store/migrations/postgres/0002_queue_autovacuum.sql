-- The queue churns (every row is inserted and soon deleted): vacuum and analyze it far more eagerly than the
-- defaults (20 % / 10 % of the table), so dead rows do not pile up and plans follow its real size.
ALTER TABLE queue SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01);
