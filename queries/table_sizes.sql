-- name: table_sizes
-- Rows in each table of the store as reads see them (one per key), and the photos that
-- search can return (not flagged deleted).
SELECT table_name, row_count
FROM (
    SELECT 1 AS position, 'photos' AS table_name, count() AS row_count FROM photos FINAL
    UNION ALL SELECT 2, 'photos (not deleted)', count() FROM photos FINAL WHERE is_deleted = 0
    UNION ALL SELECT 3, 'photo_embeddings', count() FROM photo_embeddings FINAL
    UNION ALL SELECT 4, 'models', count() FROM models FINAL
    UNION ALL SELECT 5, 'download_status', count() FROM download_status FINAL
    UNION ALL SELECT 6, 'keywords', count() FROM keywords FINAL
    UNION ALL SELECT 7, 'collections', count() FROM collections FINAL
    UNION ALL SELECT 8, 'colors', count() FROM colors FINAL
    UNION ALL SELECT 9, 'conversions', count() FROM conversions FINAL
    UNION ALL SELECT 10, 'etl_runs', count() FROM etl_runs FINAL
) AS sizes
ORDER BY position
