-- The record of applied migrations (clipsql.db.migrate): one row per sql/duckdb/NNN_*.sql file.
-- Created before any of them, so it is not one of the numbered files.
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UINTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ DEFAULT current_timestamp
);
