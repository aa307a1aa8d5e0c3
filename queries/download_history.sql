-- name: download_history
-- The last download outcome of every photo: the refresh skips permanent failures (HTTP
-- 4xx, undecodable images) unless asked to retry them, and counts attempts.
-- Parameters:
--   status_filter  Nullable(String)  only rows with this status ('ok' or 'failed'); NULL for all
SELECT photo_id, status, reason, permanent, attempts
FROM download_status FINAL
WHERE {status_filter:Nullable(String)} IS NULL OR status = {status_filter:Nullable(String)}
