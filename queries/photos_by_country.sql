-- name: photos_by_country
-- Searchable photos (not flagged deleted) per photo_location_country, most photos first
-- (ties by country; photos without a country counted as NULL, listed last among ties).
-- Parameters:
--   n  UInt32  how many countries to return
SELECT photo_location_country AS country, count() AS photos
FROM photos FINAL
WHERE is_deleted = 0
GROUP BY photo_location_country
ORDER BY photos DESC, country ASC NULLS LAST
LIMIT {n:UInt32}
