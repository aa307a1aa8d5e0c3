-- The search snapshot: one model's rows of photo_search (sql/clickhouse/004_photo_search.sql:
-- the searchable photos, flat, with the same column names, so the filter conditions of
-- clipsql.search.filters run on both) and each vector's norm, copied into a temporary
-- Memory-engine table of this session. Exact search over it reads no MergeTree part, needs no
-- FINAL and no join: 25,000 x 512 vectors in ~5 ms instead of ~16 ms (bench/search_breakdown.py).
-- clipsql.snapshot builds it, checks before every search that the tables it copies are
-- unchanged since (their active parts, session/search_snapshot_state.sql) and rebuilds it
-- when they are not; it is gone with the session. queries/search_photos_snapshot.sql searches it.
-- At a console: run this file with --param_model=..., then that query in the same session.
DROP TEMPORARY TABLE IF EXISTS search_snapshot;
CREATE TEMPORARY TABLE search_snapshot ENGINE = Memory AS
SELECT
    *,
    -- |embedding|, so that a search computes one dot product per row (queries/search_photos_snapshot.sql)
    toFloat32(L2Norm(embedding)) AS embedding_norm
FROM photo_search
WHERE model = {model:String}
-- blocks of 4,096 rows (8 MB of vectors): a scan splits them over the threads
SETTINGS max_block_size = 4096, max_insert_block_size = 4096, min_insert_block_size_rows = 4096, min_insert_block_size_bytes = 0;
