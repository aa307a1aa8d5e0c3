-- name: metadata_coverage
-- How many searchable photos (not flagged deleted) have each metadata field: a source
-- without countries, keywords or colors (an image folder, a bare release) shows 0 there,
-- so the notebooks say why a filter or facet on it finds nothing.
SELECT count() AS photos,
       count(nullif(photo_location_country, '')) AS country,
       count(nullif(photo_location_city, '')) AS city,
       count(nullif(photographer_username, '')) AS photographer,
       count(nullif(exif_camera_make, '')) AS camera_make,
       count(nullif(exif_camera_model, '')) AS camera_model,
       count(coalesce(nullif(exif_camera_make, ''), nullif(exif_camera_model, ''))) AS camera,
       count(photo_submitted_at) AS year,
       count(photo_featured) AS featured,
       count(nullif(photo_description, '')) AS description,
       count(coalesce(nullif(photo_description, ''), nullif(ai_description, ''))) AS caption,
       (SELECT count(DISTINCT photo_id) FROM keywords FINAL
        WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE is_deleted = 0)
          AND keyword IS NOT NULL AND keyword != '') AS keyword,
       (SELECT count(DISTINCT photo_id) FROM colors FINAL
        WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE is_deleted = 0)
          AND keyword IS NOT NULL AND keyword != '') AS color
FROM photos FINAL
WHERE is_deleted = 0
