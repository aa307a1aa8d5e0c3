-- name: isolated_photos
-- Photos farthest from their nearest neighbor (the outliers of a model's vectors): for each
-- photo the cosine distance to its nearest other photo (distance) and that photo
-- (neighbor_id), the most isolated first (ties by photo_id). Deleted photos are left out.
-- Exact and quadratic like near_duplicates: every pair of the pool is scored (about 4 s for
-- 2,000 photos on 2 cores, chdb and DuckDB alike, growing with the square), so the pool is
-- the first n photos by photo_id (Unsplash photo_ids are random: a fair sample).
-- Parameters:
--   model  String  label of the model (models.model)
--   n      UInt32  the pool: the first n searchable photos by photo_id
--   k      UInt32  how many photos to return
WITH pool AS
(
    SELECT photo_id, embedding
    FROM photo_embeddings FINAL
    WHERE model = {model:String}
      AND photo_id NOT IN (SELECT photo_id FROM photos FINAL WHERE is_deleted != 0)
    ORDER BY photo_id ASC
    LIMIT {n:UInt32}
),
nearest AS
(
    SELECT a.photo_id AS photo_id,
           min(cosineDistance(a.embedding, b.embedding)) AS distance,
           argMin(b.photo_id, (cosineDistance(a.embedding, b.embedding), b.photo_id)) AS neighbor_id
    FROM pool AS a
    CROSS JOIN pool AS b
    WHERE a.photo_id != b.photo_id
    GROUP BY a.photo_id
)
SELECT n.photo_id AS photo_id, n.distance AS distance, n.neighbor_id AS neighbor_id,
       p.photo_description AS description, p.photo_url AS photo_url, p.photo_image_url AS photo_image_url
FROM nearest AS n
INNER JOIN photos AS p FINAL ON p.photo_id = n.photo_id
ORDER BY n.distance DESC, n.photo_id ASC
LIMIT {k:UInt32}
