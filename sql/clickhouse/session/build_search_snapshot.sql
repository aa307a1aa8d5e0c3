-- The search snapshot: one model's rows of photo_search (sql/clickhouse/004_photo_search.sql:
-- the searchable photos, flat, with the same column names, so the filter conditions of
-- clipsql.search.filters run on both) without the vectors, copied into a temporary
-- Memory-engine table of this session. The vectors go into the searching process itself
-- (queries/snapshot_vectors.sql, clipsql.search.memory), which scores them; a filtered search
-- asks this table which photos pass (queries/snapshot_photo_ids.sql): no MergeTree part, no
-- FINAL and no join per search. clipsql.snapshot builds it, checks before every search that
-- the tables it copies are unchanged since and rebuilds it when they are not; it is gone with
-- the session. At a console: run this file with --param_model=..., then those queries in the
-- same session.
DROP TEMPORARY TABLE IF EXISTS search_snapshot;
CREATE TEMPORARY TABLE search_snapshot ENGINE = Memory AS
SELECT * EXCEPT (embedding)
FROM photo_search
WHERE model = {model:String};
