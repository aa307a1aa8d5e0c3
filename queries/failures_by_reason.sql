-- name: failures_by_reason
-- Photos whose last download failed, by reason: how many, whether the failure is permanent
-- (not retried without --retry-failed), the most attempts and the last attempt.
SELECT reason, permanent, count() AS photos, max(attempts) AS max_attempts,
       max(last_attempt_at) AS last_attempt_at
FROM download_status FINAL
WHERE status = 'failed'
GROUP BY reason, permanent
ORDER BY photos DESC, reason ASC
