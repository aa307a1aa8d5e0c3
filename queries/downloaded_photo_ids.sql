-- name: downloaded_photo_ids
-- Photos whose last download succeeded: each should have its image in the store's cache
-- (`clipsql status` counts those whose file is gone; the next refresh fetches them again).
SELECT photo_id
FROM download_status FINAL
WHERE status = 'ok'
ORDER BY photo_id
