-- name: photos_by_camera
-- Searchable photos (not flagged deleted) per camera (exif_camera_make, exif_camera_model),
-- most photos first (ties by make, then model; NULL = not in the EXIF data, last).
-- Parameters:
--   n  UInt32  how many cameras to return
SELECT exif_camera_make AS camera_make, exif_camera_model AS camera_model, count() AS photos
FROM photos FINAL
WHERE is_deleted = 0
GROUP BY exif_camera_make, exif_camera_model
ORDER BY photos DESC, camera_make ASC NULLS LAST, camera_model ASC NULLS LAST
LIMIT {n:UInt32}
