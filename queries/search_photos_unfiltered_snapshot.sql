-- name: search_photos_unfiltered_snapshot
-- search_photos_unfiltered over the search snapshot (see search_photos_snapshot): photos
-- nearest to a query vector by cosine distance, closest first (ties broken by photo_id);
-- exact; the snapshot holds no deleted photo. Its text is search_photos_snapshot with the
-- filter block and the filter parameters taken out (tests/test_search_queries.py checks that).
-- NULL (clickhouse-client: --param_max_distance='\N') switches the distance bound off.
-- Runs after: sql/clickhouse/session/build_search_snapshot.sql (in the same session: it builds search_snapshot)
-- Parameters:
--   query_vec         Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model             String             label of the model whose vectors are searched (models.model)
--   k                 UInt32             how many photos to return (a page of top-k)
--   offset            UInt32             how many of the nearest photos to skip first (paging: page n has offset n*k)
--   max_distance      Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
SELECT
    photo_id,
    -- = cosineDistance(embedding, query_vec), with |embedding| stored in the snapshot and
    -- |query_vec| a constant: cosineDistance recomputes both norms on every row
    1 - dotProduct(embedding, {query_vec:Array(Float32)})
        / (embedding_norm * L2Norm({query_vec:Array(Float32)})) AS distance,
    photo_description AS description,
    photo_url,
    photo_image_url
FROM search_snapshot
WHERE model = {model:String}
  AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
