-- name: photos_not_in_run
-- Photos whose newest row is older than a refresh run: the run read its whole source and
-- did not see them, so they are gone from it (is_deleted says whether already flagged).
-- Parameters:
--   run_version  UInt64  the run's version (photos it saw carry it)
SELECT photo_id, is_deleted
FROM photos FINAL
WHERE version < {run_version:UInt64}
ORDER BY photo_id
