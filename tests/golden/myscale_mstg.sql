-- clipsql store on MyScale (a ClickHouse fork with its own vector indexes), generated from
-- sql/clickhouse/ by clipsql.dialect.myscale_ddl: the same tables and comments, with each HNSW
-- index replaced by MyScale's `VECTOR INDEX ... TYPE MSTG('metric_type=Cosine')` (MSTG on
-- MyScale Cloud, SCANN in the open-source MyScaleDB build). Its Cosine metric makes
-- `distance(embedding, q)` the same 1 - cos(embedding, q) that cosineDistance gives on
-- ClickHouse; MyScale requires the CHECK on the vector length that the tables already have.
-- Text only: clipsql prints it (`clipsql sql --dialect myscale`) and does not run MyScale.

-- Core tables of a clipsql store (ClickHouse >= 25.8 and chdb).
-- Every table is a ReplacingMergeTree keyed by its natural key with a `version` column
-- (the run's start time in ms): an upsert is an insert, a rerun doubles nothing, and
-- reads with FINAL see one row per key.

-- photos: one row per Unsplash photo, every column of photos.tsv typed (UNSPLASH.md).
CREATE TABLE IF NOT EXISTS photos
(
    photo_id String,
    photo_url Nullable(String),
    photo_image_url Nullable(String),
    photo_submitted_at Nullable(DateTime64(3, 'UTC')),
    photo_featured Nullable(Bool),
    photo_width Nullable(UInt32),
    photo_height Nullable(UInt32),
    photo_aspect_ratio Nullable(Float32),
    photo_description Nullable(String),
    photographer_username Nullable(String),
    photographer_first_name Nullable(String),
    photographer_last_name Nullable(String),
    exif_camera_make Nullable(String),
    exif_camera_model Nullable(String),
    exif_iso Nullable(UInt32),
    exif_aperture_value Nullable(Float32),
    exif_focal_length Nullable(Float32),
    exif_exposure_time Nullable(String),
    photo_location_name Nullable(String),
    photo_location_latitude Nullable(Float64),
    photo_location_longitude Nullable(Float64),
    photo_location_country Nullable(String),
    photo_location_city Nullable(String),
    stats_views Nullable(UInt64),
    stats_downloads Nullable(UInt64),
    ai_description Nullable(String),
    ai_primary_landmark_name Nullable(String),
    ai_primary_landmark_latitude Nullable(Float64),
    ai_primary_landmark_longitude Nullable(Float64),
    ai_primary_landmark_confidence Nullable(Float32),
    source_version String,
    is_deleted UInt8 DEFAULT 0,
    version UInt64,
    CONSTRAINT photo_id_not_empty CHECK photo_id != ''
)
ENGINE = ReplacingMergeTree(version)
ORDER BY photo_id;

CREATE TABLE IF NOT EXISTS keywords
(
    photo_id String,
    keyword String,
    ai_service_1_confidence Nullable(Float64),
    ai_service_2_confidence Nullable(Float64),
    suggested_by_user Nullable(Bool),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (photo_id, keyword);

CREATE TABLE IF NOT EXISTS collections
(
    photo_id String,
    collection_id String,
    collection_title Nullable(String),
    photo_collected_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (photo_id, collection_id);

CREATE TABLE IF NOT EXISTS colors
(
    photo_id String,
    hex String,
    red Nullable(UInt8),
    green Nullable(UInt8),
    blue Nullable(UInt8),
    keyword Nullable(String),
    coverage Nullable(Float64),
    score Nullable(Float64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (photo_id, hex);

-- conversions has no key of its own: a row is its whole content.
CREATE TABLE IF NOT EXISTS conversions
(
    converted_at DateTime64(3, 'UTC'),
    conversion_type String,
    keyword String,
    photo_id String,
    anonymous_user_id String,
    conversion_country String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (photo_id, converted_at, conversion_type, keyword, anonymous_user_id, conversion_country);

-- photo_embeddings: one L2-normalized vector per (model, photo_id), of the model's width
-- (models.dim: 512 for CLIP ViT-B/32, 768 for ViT-L/14 or SigLIP base, ...), so models of
-- different widths sit side by side. No vector index here (an HNSW index has one width and
-- would make every plain ORDER BY cosineDistance ... LIMIT k over this table approximate):
-- each width's approximate index lives in its own table, photo_embeddings_ann_<dim>
-- (sql/clickhouse/vector_index/), which every refresh brings up to date from this one.
CREATE TABLE IF NOT EXISTS photo_embeddings
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3),
    version UInt64,
    CONSTRAINT embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (model, photo_id);

-- models: what each stored model label was loaded from, and its dimension.
CREATE TABLE IF NOT EXISTS models
(
    model String,
    model_source String,
    dim UInt16,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY model;

-- download_status: how each photo's image download ended (ok, or failed with a reason).
CREATE TABLE IF NOT EXISTS download_status
(
    photo_id String,
    url String,
    status LowCardinality(String),
    reason LowCardinality(Nullable(String)),
    detail Nullable(String),
    http_status Nullable(UInt16),
    bytes UInt64,
    width Nullable(UInt32),
    height Nullable(UInt32),
    permanent UInt8,
    attempts UInt32,
    last_attempt_at DateTime64(3, 'UTC'),
    version UInt64,
    CONSTRAINT status_known CHECK status IN ('ok', 'failed')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY photo_id;

-- The run log of the ETL refresh, and the completion mark of a model (ClickHouse >= 25.8, chdb).

-- etl_runs: one row per `clipsql refresh` run. A run writes its row when it starts
-- (status 'running') and again when it ends ('ok' or 'failed'); the later write has the
-- higher version. A run killed before its end stays 'running' until the next run, which
-- holds the store's lock and so knows it is dead, marks it 'interrupted'.
-- Counts are photos (load_rows: rows upserted, all tables); seconds are wall-clock.
CREATE TABLE IF NOT EXISTS etl_runs
(
    run_id String,
    started_at DateTime64(3, 'UTC'),
    ended_at Nullable(DateTime64(3, 'UTC')),
    status LowCardinality(String),
    error Nullable(String),
    host String,
    pid UInt32,
    model String,
    model_source String,
    source String,
    source_version String,
    photo_limit Nullable(UInt64),
    source_ok UInt64,
    source_failed UInt64,
    source_s Float64,
    download_ok UInt64,
    download_failed UInt64,
    download_skipped UInt64,
    download_s Float64,
    embed_ok UInt64,
    embed_failed UInt64,
    embed_skipped UInt64,
    embed_s Float64,
    load_rows UInt64,
    load_s Float64,
    index_s Float64,
    deleted UInt64,
    purged UInt64,
    seconds Float64,
    version UInt64,
    CONSTRAINT run_status_known CHECK status IN ('running', 'ok', 'failed', 'interrupted')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY run_id;

-- models.completed_at: when a refresh first ended with every photo of the store that has an
-- image (and is not flagged deleted) embedded with the model; NULL until then. Search
-- defaults to the newest completed model (queries/models.sql).
ALTER TABLE models ADD COLUMN IF NOT EXISTS completed_at Nullable(DateTime64(3, 'UTC'));

-- Evaluation sets of `clipsql eval` (clipsql.evaluate), ClickHouse >= 25.8 and chdb: a
-- captioned image set (Flickr8k, COCO captions) with its own images, captions and vectors,
-- kept apart from the photo tables so an evaluation never mixes with the searched store.
--
-- Every row carries its set's name (eval_set) and the version of the load that wrote it
-- (the load's start in ms since the epoch). A load writes eval_sets last: its version
-- points at the last complete load, and the queries (queries/eval_*.sql) read only rows of
-- that version. So a rerun replaces a set by name: rows with the same key are replaced
-- (ReplacingMergeTree), rows whose key the new load lacks (a smaller --limit) stay on disk
-- but are no longer read.

-- eval_sets: one row per set, the last complete load.
CREATE TABLE IF NOT EXISTS eval_sets
(
    eval_set String,
    images_dir String,
    captions_file String,
    captions_format LowCardinality(String),
    model String,
    model_source String,
    dim UInt16,
    images UInt64,
    images_failed UInt64,
    captions UInt64,
    loaded_at DateTime64(3, 'UTC'),
    version UInt64,
    CONSTRAINT eval_set_not_empty CHECK eval_set != ''
)
ENGINE = ReplacingMergeTree(version)
ORDER BY eval_set;

-- eval_images: one row per image file the captions name (image_id: its file name as the
-- captions file writes it, relative to the images folder). status 'failed' with a reason
-- (missing, unreadable, or an image reason of clipsql.images: empty, not_an_image,
-- unsupported_format, too_many_pixels, undecodable) when it could not be embedded.
-- orientation as clipsql.search.Filters has it: landscape (width > height), portrait
-- (width < height), square; width and height in pixels after the EXIF rotation.
CREATE TABLE IF NOT EXISTS eval_images
(
    eval_set String,
    image_id String,
    width Nullable(UInt32),
    height Nullable(UInt32),
    orientation LowCardinality(Nullable(String)),
    status LowCardinality(String),
    reason LowCardinality(Nullable(String)),
    detail Nullable(String),
    version UInt64,
    CONSTRAINT eval_image_status_known CHECK status IN ('ok', 'failed')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, image_id);

-- eval_captions: one row per caption, caption_id its position in the captions file (0-based),
-- line its line there (COCO: its index in "annotations").
CREATE TABLE IF NOT EXISTS eval_captions
(
    eval_set String,
    caption_id UInt32,
    image_id String,
    caption String,
    line UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, caption_id);

-- eval_image_embeddings: the L2-normalized image vector of each image that could be embedded.
-- No vector index: evaluation ranks exactly, scoring every (query, image) pair.
CREATE TABLE IF NOT EXISTS eval_image_embeddings
(
    eval_set String,
    image_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT eval_image_embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, image_id);

-- eval_caption_embeddings: the L2-normalized query vector of each caption per query kind
-- ('plain': the caption's text embedding; 'combined' and 'negative': the caption combined
-- with a weighted second term, see clipsql.evaluate.QUERY_KINDS).
CREATE TABLE IF NOT EXISTS eval_caption_embeddings
(
    eval_set String,
    query_kind LowCardinality(String),
    caption_id UInt32,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT eval_caption_embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, query_kind, caption_id);

-- photo_search: the one relation an analyst searches by hand (issue 13). One row per (model,
-- searchable photo): the vector and every column a result shows or a filter tests, flattened.
-- Deleted photos are not in it; FINAL and the joins are inside, so a query over it needs none:
--
--   SELECT photo_id, description, cosineDistance(embedding, clip_text_embedding('surfing')) AS distance
--   FROM photo_search
--   WHERE model = 'openai/clip-vit-base-patch32' AND country = 'Iceland' AND has(keywords, 'beach')
--   ORDER BY distance LIMIT 10
--
-- A view over FINAL reads is exact: the HNSW index of photo_embeddings is never used through it
-- (the index answers ORDER BY cosineDistance(...) LIMIT k over the table itself).
-- The columns mean what the filters of queries/search_photos.sql test: orientation 'landscape'
-- (width > height), 'portrait' (width < height) or 'square'; color the dominant color (the
-- colors.keyword of the largest coverage, ties by hex; NULL when the photo has no colors);
-- keywords every keyword of the photo ([] when none).
CREATE VIEW IF NOT EXISTS photo_search AS
SELECT
    e.photo_id AS photo_id,
    e.model AS model,
    e.embedding AS embedding,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url,
    p.photo_location_country AS country,
    p.photo_location_city AS city,
    p.photographer_username AS photographer,
    p.photo_submitted_at AS submitted_at,
    p.photo_width AS width,
    p.photo_height AS height,
    p.photo_aspect_ratio AS aspect_ratio,
    multiIf(p.photo_width IS NULL OR p.photo_height IS NULL, NULL,
            p.photo_width > p.photo_height, 'landscape',
            p.photo_width < p.photo_height, 'portrait', 'square') AS orientation,
    p.stats_views AS views,
    p.stats_downloads AS downloads,
    p.photo_featured AS featured,
    p.exif_camera_make AS camera_make,
    p.exif_camera_model AS camera_model,
    k.keywords AS keywords,
    -- a LEFT JOIN's missing row reads as '' here (join_use_nulls = 0): NULL, as in DuckDB
    nullIf(c.color, '') AS color
FROM photo_embeddings AS e FINAL
INNER JOIN (SELECT * FROM photos FINAL WHERE is_deleted = 0) AS p ON p.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, groupArray(keyword) AS keywords FROM keywords FINAL GROUP BY photo_id) AS k
    ON k.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, argMax(keyword, (coverage, hex)) AS color FROM colors FINAL GROUP BY photo_id) AS c
    ON c.photo_id = e.photo_id;

-- Any vector width (issue 13): photo_embeddings loses the 512-wide HNSW index and the CHECK
-- length(embedding) = 512 that stores made before this migration have, so a model of any
-- width can be loaded beside the others. The vectors stay where they are (nothing is
-- embedded again); each width's approximate index is rebuilt in its own table,
-- photo_embeddings_ann_<dim>, by the next refresh (or `clipsql index`). Idempotent: on a
-- store created with today's 001_core.sql every statement changes nothing.
ALTER TABLE photo_embeddings DROP INDEX IF EXISTS embedding_hnsw;
ALTER TABLE photo_embeddings DROP CONSTRAINT IF EXISTS embedding_length;
ALTER TABLE photo_embeddings ADD CONSTRAINT IF NOT EXISTS embedding_not_empty CHECK length(embedding) > 0;

-- The precision each vector was embedded at (issue 15): fp32, bf16, fp16 or int8
-- (clipsql.precision). A model's vectors at int8 and at fp32 are comparable (cosine >= 0.999
-- to each other, checked when they are made) but not identical, so each vector records its
-- own. Vectors stored before this migration were all made at fp32 (or fp16 on CUDA, which
-- the first wave did not record). Idempotent.
ALTER TABLE photo_embeddings ADD COLUMN IF NOT EXISTS embed_precision LowCardinality(String) DEFAULT 'fp32';

-- One per width of the stored vectors; 512 here:
-- photo_embeddings_ann_<dim>: the approximate (HNSW) index of every stored vector <dim> wide,
-- one table per width, so models of different widths each have an index of their own width
-- (an HNSW index holds one width). A copy of those rows of photo_embeddings that
-- clipsql.engines.clickhouse brings up to date after every refresh (add_ann_rows.sql, ...):
-- photo_embeddings stays the table of record and is searched exactly; this one is what
-- `ORDER BY cosineDistance(embedding, q) LIMIT k` reads when an approximate answer is wanted
-- (queries/search_photos_ann.sql).
-- <dim> is written into the text by clipsql (an integer 1..65535, the width of stored
-- vectors), not bound: ClickHouse takes only literals as index arguments.
CREATE TABLE IF NOT EXISTS photo_embeddings_ann_512
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT embedding_length CHECK length(embedding) = 512,
    VECTOR INDEX embedding_vector_index embedding TYPE MSTG('metric_type=Cosine')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (model, photo_id);
-- Query form: queries/search_photos_ann.sql for MyScale (cosineDistance -> distance; ann_table = photo_embeddings_ann_512)
-- name: search_photos_ann
-- Approximate search with exact re-scoring: the HNSW index of the model's width (the table
-- photo_embeddings_ann_<dim>, sql/clickhouse/vector_index/create_ann_table.sql) proposes the
-- `candidates` nearest vectors, their distances are recomputed exactly from the stored
-- vectors (vector_search_with_rescoring), and the top-k by exact distance are returned,
-- ties broken by photo_id. Faster than search_photos on big stores, but approximate: a photo
-- the index misses is not returned. It takes no metadata filters (clipsql runs the exact
-- search_photos when a filter is set); deleted photos are dropped from the candidates.
-- Parameters:
--   ann_table     Identifier         photo_embeddings_ann_<d>, d the model's width (models.dim); ClickHouse only
--   query_vec     Array(Float32)     the query embedding, (d,) float32, L2-normalized
--   model         String             label of the model whose vectors are searched (models.model)
--   candidates    UInt32             how many candidates the index proposes (over-fetch, e.g. 10 * (k + offset))
--   k             UInt32             how many photos to return (a page of top-k)
--   offset        UInt32             how many of the nearest photos to skip first (paging)
--   max_distance  Nullable(Float32)  only photos with a cosine distance <= this (0..2); \N for no bound
SELECT
    t.photo_id AS photo_id,
    t.distance AS distance,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url
FROM
(
    SELECT photo_id, distance(embedding, {query_vec:Array(Float32)}) AS distance
    FROM {ann_table:Identifier} FINAL
    WHERE model = {model:String}
    ORDER BY distance ASC
    LIMIT {candidates:UInt32}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
WHERE p.is_deleted = 0
  AND ({max_distance:Nullable(Float32)} IS NULL OR t.distance <= {max_distance:Nullable(Float32)})
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32} OFFSET {offset:UInt32}
