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
