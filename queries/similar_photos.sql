-- name: similar_photos
-- Photos most similar to an indexed photo, pure SQL: the query vector is the photo's own
-- stored vector for the model (no model runs). Closest first, ties broken by photo_id; the
-- photo itself is left out, and so are deleted photos (photo_search holds none). Exact, with
-- the same filters ("-- @filters", see search_photos) and paging as search_photos. An unknown
-- photo_id (or one without a vector for the model) is an error on ClickHouse ("Scalar
-- subquery returned empty result") and no rows on DuckDB.
-- Parameters:
--   photo_id      String             the photo whose vector is the query (photos.photo_id)
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
    -- The top k + offset on the vectors alone, then the photo columns of those rows only (as
    -- search_photos). The query vector as photo_vectors.sql reads it: a deleted photo's too.
    SELECT photo_id,
           cosineDistance(embedding, (SELECT embedding FROM photo_embeddings FINAL
                                      WHERE model = {model:String} AND photo_id = {photo_id:String})) AS distance
    FROM photo_search
    WHERE model = {model:String}
      AND photo_id != {photo_id:String}
      AND distance IS NOT NULL  -- DuckDB: an unknown photo_id gives a NULL vector, so no rows
      AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
      -- @filters
    ORDER BY distance ASC, photo_id ASC
    LIMIT {k:UInt32} + {offset:UInt32}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
