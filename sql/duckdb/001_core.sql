-- Core tables of a clipsql store on DuckDB: the same columns as sql/clickhouse/001_core.sql.
-- A PRIMARY KEY on each natural key and INSERT OR REPLACE make upserts idempotent, which
-- is what ReplacingMergeTree + FINAL give on ClickHouse.

CREATE TABLE IF NOT EXISTS photos
(
    photo_id VARCHAR PRIMARY KEY CHECK (photo_id <> ''),
    photo_url VARCHAR,
    photo_image_url VARCHAR,
    photo_submitted_at TIMESTAMPTZ,
    photo_featured BOOLEAN,
    photo_width UINTEGER,
    photo_height UINTEGER,
    photo_aspect_ratio FLOAT,
    photo_description VARCHAR,
    photographer_username VARCHAR,
    photographer_first_name VARCHAR,
    photographer_last_name VARCHAR,
    exif_camera_make VARCHAR,
    exif_camera_model VARCHAR,
    exif_iso UINTEGER,
    exif_aperture_value FLOAT,
    exif_focal_length FLOAT,
    exif_exposure_time VARCHAR,
    photo_location_name VARCHAR,
    photo_location_latitude DOUBLE,
    photo_location_longitude DOUBLE,
    photo_location_country VARCHAR,
    photo_location_city VARCHAR,
    stats_views UBIGINT,
    stats_downloads UBIGINT,
    ai_description VARCHAR,
    ai_primary_landmark_name VARCHAR,
    ai_primary_landmark_latitude DOUBLE,
    ai_primary_landmark_longitude DOUBLE,
    ai_primary_landmark_confidence FLOAT,
    source_version VARCHAR NOT NULL,
    is_deleted UTINYINT NOT NULL DEFAULT 0,
    version UBIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS keywords
(
    photo_id VARCHAR,
    keyword VARCHAR,
    ai_service_1_confidence DOUBLE,
    ai_service_2_confidence DOUBLE,
    suggested_by_user BOOLEAN,
    version UBIGINT NOT NULL,
    PRIMARY KEY (photo_id, keyword)
);

CREATE TABLE IF NOT EXISTS collections
(
    photo_id VARCHAR,
    collection_id VARCHAR,
    collection_title VARCHAR,
    photo_collected_at TIMESTAMPTZ,
    version UBIGINT NOT NULL,
    PRIMARY KEY (photo_id, collection_id)
);

CREATE TABLE IF NOT EXISTS colors
(
    photo_id VARCHAR,
    hex VARCHAR,
    red UTINYINT,
    green UTINYINT,
    blue UTINYINT,
    keyword VARCHAR,
    coverage DOUBLE,
    score DOUBLE,
    version UBIGINT NOT NULL,
    PRIMARY KEY (photo_id, hex)
);

CREATE TABLE IF NOT EXISTS conversions
(
    converted_at TIMESTAMPTZ NOT NULL,
    conversion_type VARCHAR,
    keyword VARCHAR,
    photo_id VARCHAR,
    anonymous_user_id VARCHAR,
    conversion_country VARCHAR,
    version UBIGINT NOT NULL,
    PRIMARY KEY (photo_id, converted_at, conversion_type, keyword, anonymous_user_id, conversion_country)
);

CREATE TABLE IF NOT EXISTS photo_embeddings
(
    photo_id VARCHAR,
    model VARCHAR,
    embedding FLOAT[] NOT NULL CHECK (len(embedding) > 0),
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    version UBIGINT NOT NULL,
    PRIMARY KEY (model, photo_id)
);

CREATE TABLE IF NOT EXISTS models
(
    model VARCHAR PRIMARY KEY,
    model_source VARCHAR NOT NULL,
    dim USMALLINT NOT NULL,
    version UBIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS download_status
(
    photo_id VARCHAR PRIMARY KEY,
    url VARCHAR NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    reason VARCHAR,
    detail VARCHAR,
    http_status USMALLINT,
    bytes UBIGINT NOT NULL,
    width UINTEGER,
    height UINTEGER,
    permanent UTINYINT NOT NULL,
    attempts UINTEGER NOT NULL,
    last_attempt_at TIMESTAMPTZ NOT NULL,
    version UBIGINT NOT NULL
);
