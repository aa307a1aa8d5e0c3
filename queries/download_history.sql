-- name: download_history
-- The last download outcome of some photos: the refresh skips permanent failures (HTTP
-- 4xx, undecodable images) unless asked to retry them, waits out the backoff of transient
-- ones (last_attempt_at + base * 2^(attempts - 1)), and counts attempts.
-- Parameters:
--   photo_ids  Array(String)  the photos asked about (one chunk of the refresh)
SELECT photo_id, status, reason, permanent, attempts, last_attempt_at
FROM download_status FINAL
WHERE photo_id IN {photo_ids:Array(String)}
