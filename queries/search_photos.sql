-- name: search_photos
-- Photos nearest to a query vector by cosine distance, closest first (ties broken by
-- photo_id), with paging: the query behind text, image, combined and crop search, over the
-- search relation photo_search (deleted photos are not in it). Exact: every vector of the
-- model that passes the filters is scored (the filters run before the ranking, so a filter
-- never returns fewer than k rows while k photos match).
-- Filters: clipsql puts "AND <condition>" in place of the line "-- @filters" for each filter
-- set (clipsql.search.filters.FILTERS; `clipsql sql --query search_photos --country X` prints
-- the result); at a console, put your own conditions there. As it is, it filters nothing.
-- Parameters:
--   query_vec     Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model         String             label of the model whose vectors are searched (models.model)
--   k             UInt32             how many photos to return (a page of top-k)
--   offset        UInt32             how many of the nearest photos to skip first (paging: page n has offset n*k)
--   max_distance  Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
SELECT
    t.photo_id AS photo_id,
    t.distance AS distance,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url
FROM
(
    -- The top k + offset on the vectors alone, then the photo columns of those rows only:
    -- carrying them through the ranking made DuckDB 2.3x slower (25,000 photos: 142 vs 60 ms).
    SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance
    FROM photo_search
    WHERE model = {model:String}
      AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
      -- @filters
    ORDER BY distance ASC, photo_id ASC
    LIMIT {k:UInt32} + {offset:UInt32}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
