-- Evaluation sets of `clipsql eval` on DuckDB: the same columns as sql/clickhouse/003_eval.sql
-- (see there for what they mean and how a rerun replaces a set). A PRIMARY KEY on each key
-- and INSERT OR REPLACE give what ReplacingMergeTree + FINAL give on ClickHouse.

CREATE TABLE IF NOT EXISTS eval_sets
(
    eval_set VARCHAR PRIMARY KEY CHECK (eval_set <> ''),
    images_dir VARCHAR NOT NULL,
    captions_file VARCHAR NOT NULL,
    captions_format VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    model_source VARCHAR NOT NULL,
    dim USMALLINT NOT NULL,
    images UBIGINT NOT NULL,
    images_failed UBIGINT NOT NULL,
    captions UBIGINT NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL,
    version UBIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS eval_images
(
    eval_set VARCHAR,
    image_id VARCHAR,
    width UINTEGER,
    height UINTEGER,
    orientation VARCHAR,
    status VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    reason VARCHAR,
    detail VARCHAR,
    version UBIGINT NOT NULL,
    PRIMARY KEY (eval_set, image_id)
);

CREATE TABLE IF NOT EXISTS eval_captions
(
    eval_set VARCHAR,
    caption_id UINTEGER,
    image_id VARCHAR NOT NULL,
    caption VARCHAR NOT NULL,
    line UINTEGER NOT NULL,
    version UBIGINT NOT NULL,
    PRIMARY KEY (eval_set, caption_id)
);

CREATE TABLE IF NOT EXISTS eval_image_embeddings
(
    eval_set VARCHAR,
    image_id VARCHAR,
    model VARCHAR NOT NULL,
    embedding FLOAT[] NOT NULL CHECK (len(embedding) > 0),
    version UBIGINT NOT NULL,
    PRIMARY KEY (eval_set, image_id)
);

CREATE TABLE IF NOT EXISTS eval_caption_embeddings
(
    eval_set VARCHAR,
    query_kind VARCHAR,
    caption_id UINTEGER,
    model VARCHAR NOT NULL,
    embedding FLOAT[] NOT NULL CHECK (len(embedding) > 0),
    version UBIGINT NOT NULL,
    PRIMARY KEY (eval_set, query_kind, caption_id)
);
