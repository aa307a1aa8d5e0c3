-- name: search_photos_ann
-- Approximate search with exact re-scoring: the HNSW index of the model's width (the table
-- photo_embeddings_ann_<dim>, sql/clickhouse/vector_index/create_ann_table.sql) proposes the
-- `candidates` nearest vectors, their distances are recomputed exactly from the stored
-- vectors (vector_search_with_rescoring), and the top-k by exact distance are returned,
-- ties broken by photo_id. Faster than search_photos on big stores, but approximate: a photo
-- the index misses is not returned. It takes no metadata filters (clipsql runs the exact
-- search_photos when a filter is set); deleted photos are dropped from the candidates.
-- Parameters:
--   ann_table     Identifier         photo_embeddings_ann_<d>, d the model's width (models.dim); ClickHouse only
--   query_vec     Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model         String             label of the model whose vectors are searched (models.model)
--   candidates    UInt32             how many candidates the index proposes (over-fetch, e.g. 10 * (k + offset))
--   k             UInt32             how many photos to return (a page of top-k)
--   offset        UInt32             how many of the nearest photos to skip first (paging)
--   max_distance  Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
SELECT
    t.photo_id AS photo_id,
    t.distance AS distance,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url
FROM
(
    SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance
    FROM {ann_table:Identifier} FINAL
    WHERE model = {model:String}
    ORDER BY distance ASC
    LIMIT {candidates:UInt32}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
WHERE p.is_deleted = 0
  AND ({max_distance:Nullable(Float32)} IS NULL OR t.distance <= {max_distance:Nullable(Float32)})
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
SETTINGS vector_search_with_rescoring = 1
