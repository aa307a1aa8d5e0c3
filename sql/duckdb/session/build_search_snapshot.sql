-- The search snapshot in a DuckDB temporary table (see sql/clickhouse/session/ for what it
-- is): one model's rows of photo_search without the vectors. DuckDB stores do not search
-- through it (DuckDB has no cheap way to tell that a table changed); it exists so that the
-- snapshot query files run on DuckDB too (the parity test).
DROP TABLE IF EXISTS temp.search_snapshot;
CREATE TEMP TABLE search_snapshot AS
SELECT * EXCLUDE (embedding)
FROM photo_search
WHERE model = $model;
