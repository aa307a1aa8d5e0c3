-- The search snapshot in a DuckDB temporary table (see sql/clickhouse/session/ for what it
-- is). DuckDB stores do not search through it (DuckDB has no cheap way to tell that a table
-- changed); it exists so that the snapshot query files run on DuckDB too (the parity test).
DROP TABLE IF EXISTS temp.search_snapshot;
CREATE TEMP TABLE search_snapshot AS
SELECT
    e.photo_id AS photo_id,
    e.model AS model,
    e.embedding AS embedding,
    -- |embedding|, so that a search computes one dot product per row (queries/search_photos_snapshot.sql)
    CAST(sqrt(list_dot_product(e.embedding, e.embedding)) AS FLOAT) AS embedding_norm,
    p.photo_description AS photo_description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url,
    -- the photo columns the filters test (queries/search_photos_snapshot.sql)
    p.photo_location_country AS photo_location_country,
    p.photo_location_city AS photo_location_city,
    p.photographer_username AS photographer_username,
    p.photo_submitted_at AS photo_submitted_at,
    p.photo_width AS photo_width,
    p.photo_height AS photo_height,
    p.photo_aspect_ratio AS photo_aspect_ratio,
    p.stats_views AS stats_views,
    p.stats_downloads AS stats_downloads,
    p.photo_featured AS photo_featured,
    p.exif_camera_make AS exif_camera_make,
    p.exif_camera_model AS exif_camera_model,
    k.keywords AS keywords,
    -- the dominant color: colors.keyword of the largest coverage (ties: the larger hex)
    c.dominant_color AS dominant_color
FROM photo_embeddings AS e
INNER JOIN photos AS p ON p.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, list(keyword) AS keywords FROM keywords GROUP BY photo_id) AS k
    ON k.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, arg_max(keyword, (coverage, hex)) AS dominant_color FROM colors GROUP BY photo_id) AS c
    ON c.photo_id = e.photo_id
WHERE e.model = $model AND p.is_deleted = 0;
