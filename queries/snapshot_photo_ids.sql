-- name: snapshot_photo_ids
-- The photos of the search snapshot (one model's searchable photos, the session's in-memory
-- copy of its rows of photo_search without the vectors) that pass the metadata filters, put
-- in place of "-- @filters" (clipsql.search.filters.FILTERS): the rows a filtered search
-- scores, in-process, over the copy of the vectors (clipsql.search.memory).
-- Runs after: sql/clickhouse/session/build_search_snapshot.sql (in the same session: it builds search_snapshot)
-- Parameters:
--   model  String  label of the model whose snapshot it is (models.model)
SELECT photo_id
FROM search_snapshot
WHERE model = {model:String}
  -- @filters
