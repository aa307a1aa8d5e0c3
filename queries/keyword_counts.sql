-- name: keyword_counts
-- The most frequent keywords (keywords.keyword) among searchable photos (not flagged
-- deleted): how many photos carry each, most first, ties by keyword.
-- Parameters:
--   n  UInt32  how many keywords to return
SELECT keyword, count() AS photos
FROM keywords FINAL
WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE is_deleted = 0)
GROUP BY keyword
ORDER BY photos DESC, keyword ASC
LIMIT {n:UInt32}
