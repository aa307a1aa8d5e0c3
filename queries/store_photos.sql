-- name: store_photos
-- Every photo of the store with its image URL and deleted flag: before it writes anything,
-- the refresh compares them with the source (how many photos a run would flag deleted or
-- purge; image-folder photos stored under their old ids).
SELECT photo_id, photo_image_url, is_deleted
FROM photos FINAL
ORDER BY photo_id
