-- name: photos_by_year
-- Searchable photos (not flagged deleted) per year of photo_submitted_at (UTC), oldest
-- first; photos without a submission time counted under a NULL year, last.
SELECT EXTRACT(YEAR FROM toDate(photo_submitted_at)) AS year, count() AS photos
FROM photos FINAL
WHERE is_deleted = 0
GROUP BY EXTRACT(YEAR FROM toDate(photo_submitted_at))
ORDER BY year ASC NULLS LAST
