-- name: farthest_photos
-- Photos farthest from a vector by cosine distance, farthest first (ties by photo_id):
-- with the centroid of a model's vectors (their mean, L2-normalized) as the vector, the
-- least typical photos of the store. Deleted photos are left out.
-- Parameters:
--   query_vec  Array(Float32)  the vector, (d,) float32, e.g. the normalized centroid
--   model      String          label of the model whose vectors are ranked (models.model)
--   k          UInt32          how many photos to return
SELECT t.photo_id AS photo_id, t.distance AS distance, p.photo_description AS description,
       p.photo_url AS photo_url, p.photo_image_url AS photo_image_url
FROM
(
    SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance
    FROM photo_embeddings FINAL
    WHERE model = {model:String}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
WHERE p.is_deleted = 0
ORDER BY t.distance DESC, t.photo_id ASC
LIMIT {k:UInt32}
