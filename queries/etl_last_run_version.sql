-- name: etl_last_run_version
-- The highest version any refresh run has used (0 before the first): a new run
-- takes a higher one even if the clock went back, so its upserts win.
SELECT coalesce(max(version), 0) AS version
FROM etl_runs
