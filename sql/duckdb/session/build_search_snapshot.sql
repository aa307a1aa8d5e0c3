-- The search snapshot in a DuckDB temporary table (see sql/clickhouse/session/ for what it
-- is): one model's rows of photo_search and each vector's norm. DuckDB stores do not search
-- through it (DuckDB has no cheap way to tell that a table changed); it exists so that the
-- snapshot query file runs on DuckDB too (the parity test).
DROP TABLE IF EXISTS temp.search_snapshot;
CREATE TEMP TABLE search_snapshot AS
SELECT
    *,
    -- |embedding|, so that a search computes one dot product per row (queries/search_photos_snapshot.sql)
    CAST(sqrt(list_dot_product(embedding, embedding)) AS FLOAT) AS embedding_norm
FROM photo_search
WHERE model = $model;
