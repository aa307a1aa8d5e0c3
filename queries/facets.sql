-- name: facets
-- Facet counts for the analyst: among the top-n photos of a query vector (with the same
-- optional filters as search_photos), how many photos per country, city, photographer,
-- camera_make, keyword and dominant color; the per_facet most frequent values of each
-- facet, most frequent first (ties by value). The facet names are a fixed list in this text.
-- NULL (clickhouse-client: --param_x='\N') or [] switches a filter off.
-- Parameters:
--   query_vec         Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model             String             label of the model whose vectors are searched (models.model)
--   n                 UInt32             how many of the nearest photos are counted (top-n)
--   per_facet         UInt32             how many values to return per facet
--   max_distance      Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
--   country           Nullable(String)   only photos taken in this country (photo_location_country, exact); \N for any
--   city              Nullable(String)   only photos taken in this city (photo_location_city, exact); \N for any
--   photographer      Nullable(String)   only photos by this photographer (photographer_username, exact); \N for any
--   submitted_from    Nullable(Date)     only photos submitted on or after this UTC date; \N for no bound
--   submitted_to      Nullable(Date)     only photos submitted on or before this UTC date; \N for no bound
--   orientation       Nullable(String)   'landscape' (width > height), 'portrait' (width < height) or 'square' (equal); \N for any
--   min_aspect_ratio  Nullable(Float32)  only photos with photo_aspect_ratio (width / height) >= this; \N for no bound
--   max_aspect_ratio  Nullable(Float32)  only photos with photo_aspect_ratio (width / height) <= this; \N for no bound
--   min_width         Nullable(UInt32)   only photos at least this many pixels wide (photo_width); \N for no bound
--   min_height        Nullable(UInt32)   only photos at least this many pixels high (photo_height); \N for no bound
--   min_views         Nullable(UInt64)   only photos with at least this many views (stats_views); \N for no bound
--   min_downloads     Nullable(UInt64)   only photos with at least this many downloads (stats_downloads); \N for no bound
--   featured          Nullable(Bool)     only featured (true) or only not featured (false) photos; \N for any
--   camera_make       Nullable(String)   only photos taken with this camera make (exif_camera_make, exact); \N for any
--   camera_model      Nullable(String)   only photos taken with this camera model (exif_camera_model, exact); \N for any
--   keywords_any      Array(String)      only photos tagged with at least one of these keywords; [] for any
--   keywords_all      Array(String)      only photos tagged with every one of these keywords; [] for any
--   color             Nullable(String)   only photos whose dominant color (colors.keyword of the largest coverage) is this; \N for any
--   has_description   Nullable(Bool)     only photos with (true) or without (false) a photo_description; \N for any
WITH top AS
(
    SELECT t.photo_id AS photo_id
    FROM
    (
        SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance
        FROM photo_embeddings FINAL
        WHERE model = {model:String}
          AND photo_id NOT IN (SELECT photo_id FROM photos FINAL WHERE is_deleted != 0)
          AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
      -- filters: begin (the same text in every query file; tests/test_search_queries.py checks it)
      AND (
          (    {country:Nullable(String)} IS NULL AND {city:Nullable(String)} IS NULL
           AND {photographer:Nullable(String)} IS NULL
           AND {submitted_from:Nullable(Date)} IS NULL AND {submitted_to:Nullable(Date)} IS NULL
           AND {orientation:Nullable(String)} IS NULL
           AND {min_aspect_ratio:Nullable(Float32)} IS NULL AND {max_aspect_ratio:Nullable(Float32)} IS NULL
           AND {min_width:Nullable(UInt32)} IS NULL AND {min_height:Nullable(UInt32)} IS NULL
           AND {min_views:Nullable(UInt64)} IS NULL AND {min_downloads:Nullable(UInt64)} IS NULL
           AND {featured:Nullable(Bool)} IS NULL
           AND {camera_make:Nullable(String)} IS NULL AND {camera_model:Nullable(String)} IS NULL
           AND length({keywords_any:Array(String)}) = 0 AND length({keywords_all:Array(String)}) = 0
           AND {color:Nullable(String)} IS NULL AND {has_description:Nullable(Bool)} IS NULL)
          OR photo_id IN (
              SELECT photo_id FROM photos FINAL
              WHERE ({country:Nullable(String)} IS NULL OR photo_location_country = {country:Nullable(String)})
                AND ({city:Nullable(String)} IS NULL OR photo_location_city = {city:Nullable(String)})
                AND ({photographer:Nullable(String)} IS NULL OR photographer_username = {photographer:Nullable(String)})
                AND ({submitted_from:Nullable(Date)} IS NULL OR toDate(photo_submitted_at) >= {submitted_from:Nullable(Date)})
                AND ({submitted_to:Nullable(Date)} IS NULL OR toDate(photo_submitted_at) <= {submitted_to:Nullable(Date)})
                AND ({orientation:Nullable(String)} IS NULL
                     OR ({orientation:Nullable(String)} = 'landscape' AND photo_width > photo_height)
                     OR ({orientation:Nullable(String)} = 'portrait' AND photo_width < photo_height)
                     OR ({orientation:Nullable(String)} = 'square' AND photo_width = photo_height))
                AND ({min_aspect_ratio:Nullable(Float32)} IS NULL OR photo_aspect_ratio >= {min_aspect_ratio:Nullable(Float32)})
                AND ({max_aspect_ratio:Nullable(Float32)} IS NULL OR photo_aspect_ratio <= {max_aspect_ratio:Nullable(Float32)})
                AND ({min_width:Nullable(UInt32)} IS NULL OR photo_width >= {min_width:Nullable(UInt32)})
                AND ({min_height:Nullable(UInt32)} IS NULL OR photo_height >= {min_height:Nullable(UInt32)})
                AND ({min_views:Nullable(UInt64)} IS NULL OR stats_views >= {min_views:Nullable(UInt64)})
                AND ({min_downloads:Nullable(UInt64)} IS NULL OR stats_downloads >= {min_downloads:Nullable(UInt64)})
                AND ({featured:Nullable(Bool)} IS NULL OR photo_featured = {featured:Nullable(Bool)})
                AND ({camera_make:Nullable(String)} IS NULL OR exif_camera_make = {camera_make:Nullable(String)})
                AND ({camera_model:Nullable(String)} IS NULL OR exif_camera_model = {camera_model:Nullable(String)})
                AND ({has_description:Nullable(Bool)} IS NULL
                     OR (photo_description IS NOT NULL AND photo_description != '') = {has_description:Nullable(Bool)})
                AND (length({keywords_any:Array(String)}) = 0 OR photo_id IN (
                        SELECT photo_id FROM keywords FINAL WHERE has({keywords_any:Array(String)}, keyword)))
                AND (length({keywords_all:Array(String)}) = 0 OR photo_id IN (
                        SELECT photo_id FROM keywords FINAL WHERE has({keywords_all:Array(String)}, keyword)
                        GROUP BY photo_id
                        HAVING count(DISTINCT keyword) = length(arrayDistinct({keywords_all:Array(String)}))))
                AND ({color:Nullable(String)} IS NULL OR photo_id IN (
                        SELECT photo_id FROM colors FINAL GROUP BY photo_id
                        HAVING argMax(keyword, (coverage, hex)) = {color:Nullable(String)}))))
      -- filters: end
        ORDER BY distance ASC, photo_id ASC
        LIMIT {n:UInt32}
    ) AS t
    INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
    ORDER BY t.distance ASC, t.photo_id ASC
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
                       WHEN 'country' THEN p.photo_location_country
                       WHEN 'city' THEN p.photo_location_city
                       WHEN 'photographer' THEN p.photographer_username
                       WHEN 'camera_make' THEN p.exif_camera_make
                   END AS value
            FROM photos AS p FINAL
            CROSS JOIN (SELECT 'country' AS facet UNION ALL SELECT 'city' UNION ALL SELECT 'photographer'
                        UNION ALL SELECT 'camera_make') AS f
            WHERE p.photo_id IN (SELECT photo_id FROM top)
            UNION ALL
            SELECT 'keyword' AS facet, k.keyword AS value
            FROM keywords AS k FINAL
            WHERE k.photo_id IN (SELECT photo_id FROM top)
            UNION ALL
            SELECT 'color' AS facet, argMax(c.keyword, (c.coverage, c.hex)) AS value
            FROM colors AS c FINAL
            WHERE c.photo_id IN (SELECT photo_id FROM top)
            GROUP BY c.photo_id
        ) AS facet_values
        WHERE value IS NOT NULL AND value != ''
        GROUP BY facet, value
    ) AS counted
) AS ranked
WHERE facet_rank <= {per_facet:UInt32}
ORDER BY facet ASC, photos DESC, value ASC
