-- The run log of the ETL refresh, and the completion mark of a model, on DuckDB: the same
-- columns as sql/clickhouse/002_etl_runs.sql (see there for what they mean).

CREATE TABLE IF NOT EXISTS etl_runs
(
    run_id VARCHAR PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    status VARCHAR NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    error VARCHAR,
    host VARCHAR NOT NULL,
    pid UINTEGER NOT NULL,
    model VARCHAR NOT NULL,
    model_source VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    source_version VARCHAR NOT NULL,
    photo_limit UBIGINT,
    source_ok UBIGINT NOT NULL,
    source_failed UBIGINT NOT NULL,
    source_s DOUBLE NOT NULL,
    download_ok UBIGINT NOT NULL,
    download_failed UBIGINT NOT NULL,
    download_skipped UBIGINT NOT NULL,
    download_s DOUBLE NOT NULL,
    embed_ok UBIGINT NOT NULL,
    embed_failed UBIGINT NOT NULL,
    embed_skipped UBIGINT NOT NULL,
    embed_s DOUBLE NOT NULL,
    load_rows UBIGINT NOT NULL,
    load_s DOUBLE NOT NULL,
    index_s DOUBLE NOT NULL,
    deleted UBIGINT NOT NULL,
    purged UBIGINT NOT NULL,
    seconds DOUBLE NOT NULL,
    version UBIGINT NOT NULL
);

ALTER TABLE models ADD COLUMN IF NOT EXISTS completed_at TIMESTAMPTZ;
