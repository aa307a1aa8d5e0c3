-- name: color_counts
-- Dominant colors among searchable photos (not flagged deleted): a photo's dominant color
-- is the colors.keyword of its largest coverage (as the search filter `color` defines it);
-- how many photos have each, most first, ties by color. Photos without colors are not counted.
-- Parameters:
--   n  UInt32  how many colors to return
WITH dominant AS
(
    SELECT photo_id, argMax(keyword, (coverage, hex)) AS color
    FROM colors FINAL
    WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE is_deleted = 0)
    GROUP BY photo_id
)
SELECT color, count() AS photos
FROM dominant
WHERE color IS NOT NULL AND color != ''
GROUP BY color
ORDER BY photos DESC, color ASC
LIMIT {n:UInt32}
