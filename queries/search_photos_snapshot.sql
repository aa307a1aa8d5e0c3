-- name: search_photos_snapshot
-- search_photos over the search snapshot: the same rows, from the session's in-memory copy of
-- one model's rows of photo_search (same columns, plus each vector's norm;
-- sql/clickhouse/session/build_search_snapshot.sql, which clipsql runs and keeps current; run
-- it first at a console). Photos nearest to a query vector by cosine distance, closest first
-- (ties broken by photo_id), with paging; exact; no deleted photo. The filters go in place of
-- "-- @filters" as in search_photos (clipsql.search.filters.FILTERS).
-- tests/test_search_parity.py checks it returns what search_photos returns.
-- Runs after: sql/clickhouse/session/build_search_snapshot.sql (in the same session: it builds search_snapshot)
-- Parameters:
--   query_vec     Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model         String             label of the model whose vectors are searched (models.model)
--   k             UInt32             how many photos to return (a page of top-k)
--   offset        UInt32             how many of the nearest photos to skip first (paging: page n has offset n*k)
--   max_distance  Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
SELECT
    photo_id,
    -- = cosineDistance(embedding, query_vec), with |embedding| stored in the snapshot and
    -- |query_vec| a constant: cosineDistance recomputes both norms on every row
    1 - dotProduct(embedding, {query_vec:Array(Float32)})
        / (embedding_norm * L2Norm({query_vec:Array(Float32)})) AS distance,
    description,
    photo_url,
    photo_image_url
FROM search_snapshot
WHERE model = {model:String}
  AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
  -- @filters
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
