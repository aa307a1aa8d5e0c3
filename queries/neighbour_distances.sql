-- name: neighbour_distances
-- How far apart a model's vectors are, per model of the store, to pick a max_distance or a
-- near-duplicate threshold for that model (docs/evaluation.md): for a sample of each model's
-- photos, the cosine distance (0..2) to the nearest other photo of the same model (nearest_*)
-- and to the k-th nearest (kth_*), each summarized as the quantiles p1, p5, p25, p50, p75
-- and p95 over the sampled photos. One row per model with at least two photos, by model;
-- photos = the model's vectors, sampled = the photos measured. The k-th columns are NULL
-- when the model has k photos or fewer.
-- Quantile q = the nearest-rank value: the distance at rank ceil(q x sampled) of the sorted
-- sample (Hyndman & Fan 1996, "Sample quantiles in statistical packages", definition 1, the
-- inverse of the empirical distribution function; numpy method='inverted_cdf'), compared in
-- integers (100 x rank >= percent x sampled) so no float rounding moves a rank.
-- The sample: each model's first `sample` photos in the order of MD5(photo_id), a fixed
-- pseudo-random order, then photo_id (ClickHouse sorts the 16 MD5 bytes, DuckDB their
-- lower-case hex text: the same order, so both engines measure the same photos). Every
-- sampled photo is scored against every photo of its model: sample x photos distances per
-- model (about 1 s for 200 x 2,000 on 2 cores). Deleted photos are left out.
-- Parameters:
--   sample  UInt32  photos measured per model (a bounded, deterministic sample), e.g. 500
--   k       UInt32  the rank of the farther neighbour (the k-th nearest other photo), e.g. 10
WITH
    vectors AS
    (
        SELECT model, photo_id, embedding
        FROM photo_embeddings FINAL
        WHERE photo_id NOT IN (SELECT photo_id FROM photos FINAL WHERE is_deleted != 0)
    ),
    sampled AS
    (
        SELECT model, photo_id, embedding
        FROM
        (
            SELECT model, photo_id, embedding,
                   row_number() OVER (PARTITION BY model ORDER BY MD5(photo_id) ASC, photo_id ASC) AS position
            FROM vectors
        ) AS ordered
        WHERE position <= {sample:UInt32}
    ),
    neighbours AS
    (
        SELECT model, photo_id, distance,
               row_number() OVER (PARTITION BY model, photo_id ORDER BY distance ASC, other_id ASC) AS neighbour
        FROM
        (
            SELECT s.model AS model, s.photo_id AS photo_id, o.photo_id AS other_id,
                   cosineDistance(s.embedding, o.embedding) AS distance
            FROM sampled AS s
            INNER JOIN vectors AS o ON o.model = s.model
            WHERE o.photo_id != s.photo_id
        ) AS pairs
    ),
    per_photo AS
    (
        SELECT model, photo_id,
               min(CASE WHEN neighbour = 1 THEN distance END) AS nearest,
               min(CASE WHEN neighbour = {k:UInt32} THEN distance END) AS kth
        FROM neighbours
        WHERE neighbour = 1 OR neighbour = {k:UInt32}
        GROUP BY model, photo_id
    ),
    ranked AS
    (
        SELECT model, nearest, kth,
               CAST(row_number() OVER (PARTITION BY model ORDER BY nearest ASC, photo_id ASC) AS BIGINT) AS nearest_rank,
               CAST(row_number() OVER (PARTITION BY model ORDER BY kth ASC, photo_id ASC) AS BIGINT) AS kth_rank,
               CAST(count() OVER (PARTITION BY model) AS BIGINT) AS n
        FROM per_photo
    ),
    sizes AS
    (
        SELECT model, CAST(count() AS BIGINT) AS photos
        FROM vectors
        GROUP BY model
    )
SELECT
    r.model AS model,
    z.photos AS photos,
    CAST(count() AS BIGINT) AS sampled,
    CAST({k:UInt32} AS BIGINT) AS k,
    min(CASE WHEN 100 * nearest_rank >= 1 * n THEN nearest END) AS nearest_p1,
    min(CASE WHEN 100 * nearest_rank >= 5 * n THEN nearest END) AS nearest_p5,
    min(CASE WHEN 100 * nearest_rank >= 25 * n THEN nearest END) AS nearest_p25,
    min(CASE WHEN 100 * nearest_rank >= 50 * n THEN nearest END) AS nearest_p50,
    min(CASE WHEN 100 * nearest_rank >= 75 * n THEN nearest END) AS nearest_p75,
    min(CASE WHEN 100 * nearest_rank >= 95 * n THEN nearest END) AS nearest_p95,
    min(CASE WHEN 100 * kth_rank >= 1 * n THEN kth END) AS kth_p1,
    min(CASE WHEN 100 * kth_rank >= 5 * n THEN kth END) AS kth_p5,
    min(CASE WHEN 100 * kth_rank >= 25 * n THEN kth END) AS kth_p25,
    min(CASE WHEN 100 * kth_rank >= 50 * n THEN kth END) AS kth_p50,
    min(CASE WHEN 100 * kth_rank >= 75 * n THEN kth END) AS kth_p75,
    min(CASE WHEN 100 * kth_rank >= 95 * n THEN kth END) AS kth_p95
FROM ranked AS r
INNER JOIN sizes AS z ON z.model = r.model
GROUP BY r.model, z.photos
ORDER BY r.model ASC
