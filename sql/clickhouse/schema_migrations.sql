-- The record of applied migrations (clipsql.db.migrate): one row per sql/clickhouse/NNN_*.sql file.
-- Created before any of them, so it is not one of the numbered files.
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version;
