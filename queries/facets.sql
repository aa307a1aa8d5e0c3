-- name: facets
-- Facet counts for the analyst: among the top-n photos of a query vector (with the same
-- filters as search_photos: "-- @filters"), how many photos per country, city, photographer,
-- camera_make, keyword and dominant color; the per_facet most frequent values of each
-- facet, most frequent first (ties by value). The facet names are a fixed list in this text.
-- Parameters:
--   query_vec     Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model         String             label of the model whose vectors are searched (models.model)
--   n             UInt32             how many of the nearest photos are counted (top-n)
--   per_facet     UInt32             how many values to return per facet
--   max_distance  Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
WITH top AS
(
    SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance
    FROM photo_search
    WHERE model = {model:String}
      AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
      -- @filters
    ORDER BY distance ASC, photo_id ASC
    LIMIT {n:UInt32}
)
SELECT facet, value, photos
FROM
(
    SELECT facet, value, photos,
           row_number() OVER (PARTITION BY facet ORDER BY photos DESC, value ASC) AS facet_rank
    FROM
    (
        SELECT facet, value, count(*) AS photos
        FROM
        (
            SELECT f.facet AS facet,
                   CASE f.facet
                       WHEN 'country' THEN t.country
                       WHEN 'city' THEN t.city
                       WHEN 'photographer' THEN t.photographer
                       WHEN 'camera_make' THEN t.camera_make
                       WHEN 'color' THEN t.color
                   END AS value
            -- the facet columns of the top photos only: carrying them through the ranking
            -- made DuckDB 1.5x slower (25,000 photos)
            FROM (SELECT country, city, photographer, camera_make, color FROM photo_search
                  WHERE model = {model:String} AND photo_id IN (SELECT photo_id FROM top)) AS t
            CROSS JOIN (SELECT 'country' AS facet UNION ALL SELECT 'city' UNION ALL SELECT 'photographer'
                        UNION ALL SELECT 'camera_make' UNION ALL SELECT 'color') AS f
            UNION ALL
            -- keywords one row each (the relation holds them as an array)
            SELECT 'keyword' AS facet, k.keyword AS value
            FROM keywords AS k FINAL
            WHERE k.photo_id IN (SELECT photo_id FROM top)
        ) AS facet_values
        WHERE value IS NOT NULL AND value != ''
        GROUP BY facet, value
    ) AS counted
) AS ranked
WHERE facet_rank <= {per_facet:UInt32}
ORDER BY facet ASC, photos DESC, value ASC
