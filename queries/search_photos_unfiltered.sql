-- name: search_photos_unfiltered
-- search_photos without its metadata filters, for the searches that set none (clipsql runs
-- it then: ClickHouse plans this shorter text faster). Photos nearest to a query vector by
-- cosine distance, closest first (ties broken by photo_id); exact; deleted photos left out.
-- Its text is search_photos with the filter block and the filter parameters taken out
-- (tests/test_search_queries.py checks that).
-- NULL (clickhouse-client: --param_max_distance='\N') switches the distance bound off.
-- Parameters:
--   query_vec         Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model             String             label of the model whose vectors are searched (models.model)
--   k                 UInt32             how many photos to return (a page of top-k)
--   offset            UInt32             how many of the nearest photos to skip first (paging: page n has offset n*k)
--   max_distance      Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
SELECT
    t.photo_id AS photo_id,
    t.distance AS distance,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url
FROM
(
    -- Top-k on the vectors alone, then the join, which reads photos once (not per vector).
    -- Deleted photos are left out before the ranking and ties at the cut are broken by
    -- photo_id, so exactly k + offset rows reach the join.
    SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance
    FROM photo_embeddings FINAL
    WHERE model = {model:String}
      AND photo_id NOT IN (SELECT photo_id FROM photos FINAL WHERE is_deleted != 0)
      AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
    ORDER BY distance ASC, photo_id ASC
    LIMIT {k:UInt32} + {offset:UInt32}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
SETTINGS vector_search_filter_strategy = 'prefilter'
