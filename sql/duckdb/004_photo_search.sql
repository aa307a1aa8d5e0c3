-- photo_search: the one relation an analyst searches by hand; the DuckDB twin of
-- sql/clickhouse/004_photo_search.sql (same columns, same meaning; see there). DuckDB tables
-- hold one row per key, so no FINAL; searches over it scan exactly.
CREATE OR REPLACE VIEW photo_search AS
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
    CASE
        WHEN p.photo_width IS NULL OR p.photo_height IS NULL THEN NULL
        WHEN p.photo_width > p.photo_height THEN 'landscape'
        WHEN p.photo_width < p.photo_height THEN 'portrait'
        ELSE 'square'
    END AS orientation,
    p.stats_views AS views,
    p.stats_downloads AS downloads,
    p.photo_featured AS featured,
    p.exif_camera_make AS camera_make,
    p.exif_camera_model AS camera_model,
    coalesce(k.keywords, []::VARCHAR[]) AS keywords,
    c.color AS color
FROM photo_embeddings AS e
INNER JOIN photos AS p ON p.photo_id = e.photo_id AND p.is_deleted = 0
LEFT JOIN (SELECT photo_id, list(keyword) AS keywords FROM keywords GROUP BY photo_id) AS k
    ON k.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, arg_max(keyword, (coverage, hex)) AS color FROM colors GROUP BY photo_id) AS c
    ON c.photo_id = e.photo_id;
