-- photo_search: the one relation an analyst searches by hand (issue 13). One row per (model,
-- searchable photo): the vector and every column a result shows or a filter tests, flattened.
-- Deleted photos are not in it; FINAL and the joins are inside, so a query over it needs none:
--
--   SELECT photo_id, description, cosineDistance(embedding, clip_text_embedding('surfing')) AS distance
--   FROM photo_search
--   WHERE model = 'openai/clip-vit-base-patch32' AND country = 'Iceland' AND has(keywords, 'beach')
--   ORDER BY distance LIMIT 10
--
-- A view over FINAL reads is exact: the HNSW index of photo_embeddings is never used through it
-- (the index answers ORDER BY cosineDistance(...) LIMIT k over the table itself).
-- The columns mean what the filters of queries/search_photos.sql test: orientation 'landscape'
-- (width > height), 'portrait' (width < height) or 'square'; color the dominant color (the
-- colors.keyword of the largest coverage, ties by hex; NULL when the photo has no colors);
-- keywords every keyword of the photo ([] when none).
CREATE VIEW IF NOT EXISTS photo_search AS
SELECT
    e.photo_id AS photo_id,
    e.model AS model,
    e.embedding AS embedding,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url,
    p.photo_location_country AS country,
    p.photo_location_city AS city,
    p.photographer_username AS photographer,
    p.photo_submitted_at AS submitted_at,
    p.photo_width AS width,
    p.photo_height AS height,
    p.photo_aspect_ratio AS aspect_ratio,
    multiIf(p.photo_width IS NULL OR p.photo_height IS NULL, NULL,
            p.photo_width > p.photo_height, 'landscape',
            p.photo_width < p.photo_height, 'portrait', 'square') AS orientation,
    p.stats_views AS views,
    p.stats_downloads AS downloads,
    p.photo_featured AS featured,
    p.exif_camera_make AS camera_make,
    p.exif_camera_model AS camera_model,
    k.keywords AS keywords,
    -- a LEFT JOIN's missing row reads as '' here (join_use_nulls = 0): NULL, as in DuckDB
    nullIf(c.color, '') AS color
FROM photo_embeddings AS e FINAL
INNER JOIN (SELECT * FROM photos FINAL WHERE is_deleted = 0) AS p ON p.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, groupArray(keyword) AS keywords FROM keywords FINAL GROUP BY photo_id) AS k
    ON k.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, argMax(keyword, (coverage, hex)) AS color FROM colors FINAL GROUP BY photo_id) AS c
    ON c.photo_id = e.photo_id;
