-- name: near_duplicates
-- Pairs of photos whose vectors are closer than a cosine-distance threshold (near-duplicate
-- and burst shots), closest pair first (ties broken by the two photo_ids), each pair once
-- (photo_id_a < photo_id_b). Exact and quadratic: every pair of photos that pass the filters
-- ("-- @filters", see search_photos) is scored (about 1.3 s for 2,000 photos on 2 cores,
-- growing with the square of the count), so narrow big stores with the filters.
-- Deleted photos are left out (photo_search holds none).
-- Parameters:
--   model         String   label of the model whose vectors are compared (models.model)
--   max_distance  Float32  only pairs with a cosine distance <= this (0..2), e.g. 0.05
--   k             UInt32   how many pairs to return (a page)
--   offset        UInt32   how many of the closest pairs to skip first (paging)
WITH pool AS
(
    SELECT photo_id, embedding
    FROM photo_search
    WHERE model = {model:String}
      -- @filters
)
SELECT
    a.photo_id AS photo_id_a,
    b.photo_id AS photo_id_b,
    cosineDistance(a.embedding, b.embedding) AS distance
FROM pool AS a
CROSS JOIN pool AS b
WHERE a.photo_id < b.photo_id
  AND cosineDistance(a.embedding, b.embedding) <= {max_distance:Float32}
ORDER BY distance ASC, photo_id_a ASC, photo_id_b ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
