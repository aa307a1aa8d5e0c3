-- Runs still 'running' when a new run holds the store's lock were killed: mark them
-- 'interrupted', at the new run's version.
INSERT INTO etl_runs
SELECT * REPLACE ('interrupted' AS status, {run_version:UInt64} AS version)
FROM (SELECT * FROM etl_runs FINAL WHERE status = 'running' AND version < {run_version:UInt64});
