-- name: search_photos_snapshot
-- search_photos over the search snapshot: the same rows, from the session's in-memory copy of
-- one model's searchable vectors (sql/clickhouse/session/build_search_snapshot.sql, which
-- clipsql runs and keeps current; run it first at a console). Photos nearest to a query vector
-- by cosine distance, closest first (ties broken by photo_id), with optional metadata filters
-- and paging; exact; the snapshot holds no deleted photo. The filters test the snapshot's copy
-- of the photo columns, keywords and dominant color, so no other table is read.
-- tests/test_search_parity.py checks it returns what search_photos returns.
-- NULL (clickhouse-client: --param_x='\N') or [] switches a filter off.
-- Runs after: sql/clickhouse/session/build_search_snapshot.sql (in the same session: it builds search_snapshot)
-- Parameters:
--   query_vec         Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model             String             label of the model whose vectors are searched (models.model)
--   k                 UInt32             how many photos to return (a page of top-k)
--   offset            UInt32             how many of the nearest photos to skip first (paging: page n has offset n*k)
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
SELECT
    photo_id,
    -- = cosineDistance(embedding, query_vec), with |embedding| stored in the snapshot and
    -- |query_vec| a constant: cosineDistance recomputes both norms on every row
    1 - dotProduct(embedding, {query_vec:Array(Float32)})
        / (embedding_norm * L2Norm({query_vec:Array(Float32)})) AS distance,
    photo_description AS description,
    photo_url,
    photo_image_url
FROM search_snapshot
WHERE model = {model:String}
  AND ({max_distance:Nullable(Float32)} IS NULL OR distance <= {max_distance:Nullable(Float32)})
  -- filters: begin (search_photos' conditions on photos, here on the snapshot's copy of those
  -- columns; tests/test_search_queries.py checks the two alike)
  AND ({country:Nullable(String)} IS NULL OR photo_location_country = {country:Nullable(String)})
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
  AND (length({keywords_any:Array(String)}) = 0 OR hasAny(keywords, {keywords_any:Array(String)}))
  AND (length({keywords_all:Array(String)}) = 0 OR hasAll(keywords, {keywords_all:Array(String)}))
  AND ({color:Nullable(String)} IS NULL OR dominant_color = {color:Nullable(String)})
  -- filters: end
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
