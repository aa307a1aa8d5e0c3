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
