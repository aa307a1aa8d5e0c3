-- name: embeddings_with_metadata
-- The stored vectors of a model with the metadata that colors a map of them: one row per
-- searchable photo (not flagged deleted), at most n, by photo_id (Unsplash photo_ids are
-- random, so the first n are a fair sample). year is of photo_submitted_at (UTC); color is
-- the dominant color (colors.keyword of the largest coverage), NULL without colors.
-- Parameters:
--   model  String  label of the model (models.model)
--   n      UInt32  most photos returned
SELECT e.photo_id AS photo_id, e.embedding AS embedding,
       p.photo_description AS description, p.photo_url AS photo_url, p.photo_image_url AS photo_image_url,
       p.photo_location_country AS country, p.photo_location_city AS city,
       p.photographer_username AS photographer, p.exif_camera_make AS camera_make,
       EXTRACT(YEAR FROM toDate(p.photo_submitted_at)) AS year, p.photo_featured AS featured,
       d.color AS color
FROM photo_embeddings AS e FINAL
INNER JOIN photos AS p FINAL ON p.photo_id = e.photo_id
LEFT JOIN
(
    SELECT photo_id, argMax(keyword, (coverage, hex)) AS color
    FROM colors FINAL
    GROUP BY photo_id
) AS d ON d.photo_id = e.photo_id
WHERE e.model = {model:String} AND p.is_deleted = 0
ORDER BY photo_id ASC
LIMIT {n:UInt32}
