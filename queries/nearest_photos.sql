-- name: nearest_photos
-- Photos nearest to a query vector by cosine distance, closest first (ties broken by
-- photo_id): text -> image search with a text embedding, image -> image with an image one.
-- Deleted photos are left out. Exact: every stored vector of the model is scored.
-- Parameters:
--   query_vec  Array(Float32)  the query embedding, (d,) float32, L2-normalized
--   model      String          label of the model whose vectors are searched (models.model)
--   k          UInt32          how many photos to return (top-k)
SELECT
    e.photo_id AS photo_id,
    cosineDistance(e.embedding, {query_vec:Array(Float32)}) AS distance,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url
FROM photo_embeddings AS e FINAL
INNER JOIN photos AS p FINAL ON p.photo_id = e.photo_id
WHERE e.model = {model:String} AND p.is_deleted = 0
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32}
