-- The search snapshot: the searchable vectors of one model, with the photo columns a result
-- shows and the filters test (keywords as an array, the dominant color precomputed), copied
-- into a temporary Memory-engine table of this session. Exact search over it reads no
-- MergeTree part, needs no FINAL, no deleted-photo subquery and no join: 25,000 x 512 vectors
-- in ~5 ms instead of ~16 ms (bench/search_breakdown.py).
-- clipsql.snapshot builds it, checks before every search that the tables it copies are
-- unchanged since (their active parts, session/search_snapshot_state.sql) and rebuilds it
-- when they are not; it is gone with the session. queries/search_photos_snapshot.sql and
-- queries/search_photos_unfiltered_snapshot.sql search it.
-- At a console: run this file with --param_model=..., then those queries in the same session.
DROP TEMPORARY TABLE IF EXISTS search_snapshot;
CREATE TEMPORARY TABLE search_snapshot ENGINE = Memory AS
SELECT
    e.photo_id AS photo_id,
    e.model AS model,
    e.embedding AS embedding,
    -- |embedding|, so that a search computes one dot product per row (queries/search_photos_snapshot.sql)
    toFloat32(L2Norm(e.embedding)) AS embedding_norm,
    p.photo_description AS photo_description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url,
    -- the photo columns the filters test (queries/search_photos_snapshot.sql)
    p.photo_location_country AS photo_location_country,
    p.photo_location_city AS photo_location_city,
    p.photographer_username AS photographer_username,
    p.photo_submitted_at AS photo_submitted_at,
    p.photo_width AS photo_width,
    p.photo_height AS photo_height,
    p.photo_aspect_ratio AS photo_aspect_ratio,
    p.stats_views AS stats_views,
    p.stats_downloads AS stats_downloads,
    p.photo_featured AS photo_featured,
    p.exif_camera_make AS exif_camera_make,
    p.exif_camera_model AS exif_camera_model,
    k.keywords AS keywords,
    -- the dominant color: colors.keyword of the largest coverage (ties: the larger hex)
    c.dominant_color AS dominant_color
FROM photo_embeddings AS e FINAL
INNER JOIN photos AS p FINAL ON p.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, groupArray(keyword) AS keywords FROM keywords FINAL GROUP BY photo_id) AS k
    ON k.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, argMax(keyword, (coverage, hex)) AS dominant_color FROM colors FINAL GROUP BY photo_id) AS c
    ON c.photo_id = e.photo_id
WHERE e.model = {model:String} AND p.is_deleted = 0
-- blocks of 4,096 rows (8 MB of vectors): a scan splits them over the threads
SETTINGS max_block_size = 4096, max_insert_block_size = 4096, min_insert_block_size_rows = 4096, min_insert_block_size_bytes = 0;
