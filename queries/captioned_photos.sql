-- name: captioned_photos
-- Searchable photos (not flagged deleted) that have a description and whose image was
-- downloaded into the cache (download_status ok): photo_id and caption (photo_description,
-- else ai_description), the first n by photo_id. The store's own photos as a captioned
-- image set, e.g. for clipsql.evaluate (`clipsql eval`).
-- Parameters:
--   n  UInt32  most photos returned
SELECT p.photo_id AS photo_id, coalesce(nullif(p.photo_description, ''), p.ai_description) AS caption
FROM photos AS p FINAL
WHERE p.is_deleted = 0
  AND p.photo_id IN (SELECT photo_id FROM download_status FINAL WHERE status = 'ok')
  AND coalesce(nullif(p.photo_description, ''), nullif(p.ai_description, '')) IS NOT NULL
ORDER BY p.photo_id ASC
LIMIT {n:UInt32}
