-- name: run_vector_count
-- Vectors a refresh run stored (its rows carry the run's version): what its etl_runs row
-- reports as embedded, read back from the table so an interrupted run counts only what
-- was saved.
-- Parameters:
--   run_version  UInt64  the run's version (queries/etl_runs.sql)
SELECT count() AS n
FROM photo_embeddings FINAL
WHERE version = {run_version:UInt64}
