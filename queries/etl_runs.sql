-- name: etl_runs
-- The last refresh runs, newest first: when, how they ended, and per stage the photos
-- ok / failed / skipped and the seconds spent (load: rows upserted in all tables).
-- Parameters:
--   n  UInt32  how many runs
SELECT run_id, started_at, ended_at, status, error, host, pid, model, source, source_version,
       photo_limit, source_ok, source_failed, source_s, download_ok, download_failed,
       download_skipped, download_s, embed_ok, embed_failed, embed_skipped, embed_s,
       load_rows, load_s, index_s, deleted, purged, seconds
FROM etl_runs FINAL
ORDER BY started_at DESC, run_id DESC
LIMIT {n:UInt32}
