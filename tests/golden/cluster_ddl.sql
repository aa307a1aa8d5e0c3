-- clipsql store on the ClickHouse cluster clipsql, database unsplash: generated from
-- sql/clickhouse/ by clipsql.engines.cluster.cluster_ddl('clipsql', 'unsplash') (docs/stores.md,
-- "A ClickHouse cluster"). Tables with photo_id: a ReplicatedReplacingMergeTree <name>_local per
-- shard and a Distributed <name> over them, sharded by cityHash64(photo_id); the other tables:
-- one ReplicatedReplacingMergeTree whole on every host; photo_search: a view <name>_local over the
-- local tables per shard and a Distributed table over those views. Comments of the source files
-- are left out; each statement keeps its source file's order.

-- sql/clickhouse/schema_migrations.sql
CREATE TABLE IF NOT EXISTS unsplash.schema_migrations ON CLUSTER clipsql
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/schema_migrations', '{shard}-{replica}')
ORDER BY version;

-- sql/clickhouse/001_core.sql
CREATE TABLE IF NOT EXISTS unsplash.photos_local ON CLUSTER clipsql
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/photos_local', '{replica}', version)
ORDER BY photo_id;

CREATE TABLE IF NOT EXISTS unsplash.photos ON CLUSTER clipsql AS unsplash.photos_local
ENGINE = Distributed(clipsql, unsplash, photos_local, cityHash64(photo_id));

CREATE TABLE IF NOT EXISTS unsplash.keywords_local ON CLUSTER clipsql
(
    photo_id String,
    keyword String,
    ai_service_1_confidence Nullable(Float64),
    ai_service_2_confidence Nullable(Float64),
    suggested_by_user Nullable(Bool),
    version UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/keywords_local', '{replica}', version)
ORDER BY (photo_id, keyword);

CREATE TABLE IF NOT EXISTS unsplash.keywords ON CLUSTER clipsql AS unsplash.keywords_local
ENGINE = Distributed(clipsql, unsplash, keywords_local, cityHash64(photo_id));

CREATE TABLE IF NOT EXISTS unsplash.collections_local ON CLUSTER clipsql
(
    photo_id String,
    collection_id String,
    collection_title Nullable(String),
    photo_collected_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/collections_local', '{replica}', version)
ORDER BY (photo_id, collection_id);

CREATE TABLE IF NOT EXISTS unsplash.collections ON CLUSTER clipsql AS unsplash.collections_local
ENGINE = Distributed(clipsql, unsplash, collections_local, cityHash64(photo_id));

CREATE TABLE IF NOT EXISTS unsplash.colors_local ON CLUSTER clipsql
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/colors_local', '{replica}', version)
ORDER BY (photo_id, hex);

CREATE TABLE IF NOT EXISTS unsplash.colors ON CLUSTER clipsql AS unsplash.colors_local
ENGINE = Distributed(clipsql, unsplash, colors_local, cityHash64(photo_id));

CREATE TABLE IF NOT EXISTS unsplash.conversions_local ON CLUSTER clipsql
(
    converted_at DateTime64(3, 'UTC'),
    conversion_type String,
    keyword String,
    photo_id String,
    anonymous_user_id String,
    conversion_country String,
    version UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/conversions_local', '{replica}', version)
ORDER BY (photo_id, converted_at, conversion_type, keyword, anonymous_user_id, conversion_country);

CREATE TABLE IF NOT EXISTS unsplash.conversions ON CLUSTER clipsql AS unsplash.conversions_local
ENGINE = Distributed(clipsql, unsplash, conversions_local, cityHash64(photo_id));

CREATE TABLE IF NOT EXISTS unsplash.photo_embeddings_local ON CLUSTER clipsql
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3),
    version UInt64,
    CONSTRAINT embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/photo_embeddings_local', '{replica}', version)
ORDER BY (model, photo_id);

CREATE TABLE IF NOT EXISTS unsplash.photo_embeddings ON CLUSTER clipsql AS unsplash.photo_embeddings_local
ENGINE = Distributed(clipsql, unsplash, photo_embeddings_local, cityHash64(photo_id));

CREATE TABLE IF NOT EXISTS unsplash.models ON CLUSTER clipsql
(
    model String,
    model_source String,
    dim UInt16,
    version UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/models', '{shard}-{replica}', version)
ORDER BY model;

CREATE TABLE IF NOT EXISTS unsplash.download_status_local ON CLUSTER clipsql
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/download_status_local', '{replica}', version)
ORDER BY photo_id;

CREATE TABLE IF NOT EXISTS unsplash.download_status ON CLUSTER clipsql AS unsplash.download_status_local
ENGINE = Distributed(clipsql, unsplash, download_status_local, cityHash64(photo_id));

-- sql/clickhouse/002_etl_runs.sql
CREATE TABLE IF NOT EXISTS unsplash.etl_runs ON CLUSTER clipsql
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/etl_runs', '{shard}-{replica}', version)
ORDER BY run_id;

ALTER TABLE unsplash.models ADD COLUMN IF NOT EXISTS completed_at Nullable(DateTime64(3, 'UTC'));

-- sql/clickhouse/003_eval.sql
CREATE TABLE IF NOT EXISTS unsplash.eval_sets ON CLUSTER clipsql
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/eval_sets', '{shard}-{replica}', version)
ORDER BY eval_set;

CREATE TABLE IF NOT EXISTS unsplash.eval_images ON CLUSTER clipsql
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/eval_images', '{shard}-{replica}', version)
ORDER BY (eval_set, image_id);

CREATE TABLE IF NOT EXISTS unsplash.eval_captions ON CLUSTER clipsql
(
    eval_set String,
    caption_id UInt32,
    image_id String,
    caption String,
    line UInt32,
    version UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/eval_captions', '{shard}-{replica}', version)
ORDER BY (eval_set, caption_id);

CREATE TABLE IF NOT EXISTS unsplash.eval_image_embeddings ON CLUSTER clipsql
(
    eval_set String,
    image_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT eval_image_embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/eval_image_embeddings', '{shard}-{replica}', version)
ORDER BY (eval_set, image_id);

CREATE TABLE IF NOT EXISTS unsplash.eval_caption_embeddings ON CLUSTER clipsql
(
    eval_set String,
    query_kind LowCardinality(String),
    caption_id UInt32,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT eval_caption_embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/unsplash/eval_caption_embeddings', '{shard}-{replica}', version)
ORDER BY (eval_set, query_kind, caption_id);

-- sql/clickhouse/004_photo_search.sql
CREATE VIEW IF NOT EXISTS unsplash.photo_search_local ON CLUSTER clipsql AS
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
    nullIf(c.color, '') AS color
FROM unsplash.photo_embeddings_local AS e FINAL
INNER JOIN (SELECT * FROM unsplash.photos_local FINAL WHERE is_deleted = 0) AS p ON p.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, groupArray(keyword) AS keywords FROM unsplash.keywords_local FINAL GROUP BY photo_id) AS k
    ON k.photo_id = e.photo_id
LEFT JOIN (SELECT photo_id, argMax(keyword, (coverage, hex)) AS color FROM unsplash.colors_local FINAL GROUP BY photo_id) AS c
    ON c.photo_id = e.photo_id;

CREATE TABLE IF NOT EXISTS unsplash.photo_search ON CLUSTER clipsql AS unsplash.photo_search_local
ENGINE = Distributed(clipsql, unsplash, photo_search_local, cityHash64(photo_id));

-- sql/clickhouse/005_any_width.sql
ALTER TABLE unsplash.photo_embeddings_local ON CLUSTER clipsql DROP INDEX IF EXISTS embedding_hnsw;

ALTER TABLE unsplash.photo_embeddings_local ON CLUSTER clipsql DROP CONSTRAINT IF EXISTS embedding_length;

ALTER TABLE unsplash.photo_embeddings_local ON CLUSTER clipsql ADD CONSTRAINT IF NOT EXISTS embedding_not_empty CHECK length(embedding) > 0;

-- sql/clickhouse/006_embed_precision.sql
ALTER TABLE unsplash.photo_embeddings_local ON CLUSTER clipsql ADD COLUMN IF NOT EXISTS embed_precision LowCardinality(String) DEFAULT 'fp32';

ALTER TABLE unsplash.photo_embeddings ON CLUSTER clipsql ADD COLUMN IF NOT EXISTS embed_precision LowCardinality(String) DEFAULT 'fp32';

-- sql/clickhouse/vector_index/create_ann_table.sql, vectors 512 wide
CREATE TABLE IF NOT EXISTS unsplash.photo_embeddings_ann_512_local ON CLUSTER clipsql
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT embedding_length CHECK length(embedding) = 512,
    INDEX embedding_hnsw embedding TYPE vector_similarity('hnsw', 'cosineDistance', 512) GRANULARITY 100000000
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/unsplash/photo_embeddings_ann_512_local', '{replica}', version)
ORDER BY (model, photo_id);

CREATE TABLE IF NOT EXISTS unsplash.photo_embeddings_ann_512 ON CLUSTER clipsql AS unsplash.photo_embeddings_ann_512_local
ENGINE = Distributed(clipsql, unsplash, photo_embeddings_ann_512_local, cityHash64(photo_id));
