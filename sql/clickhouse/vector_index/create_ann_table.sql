-- photo_embeddings_ann_<dim>: the approximate (HNSW) index of every stored vector <dim> wide,
-- one table per width, so models of different widths each have an index of their own width
-- (an HNSW index holds one width). A copy of those rows of photo_embeddings that
-- clipsql.engines.clickhouse brings up to date after every refresh (add_ann_rows.sql, ...):
-- photo_embeddings stays the table of record and is searched exactly; this one is what
-- `ORDER BY cosineDistance(embedding, q) LIMIT k` reads when an approximate answer is wanted
-- (queries/search_photos_ann.sql).
-- <dim> is written into the text by clipsql (an integer 1..65535, the width of stored
-- vectors), not bound: ClickHouse takes only literals as index arguments.
CREATE TABLE IF NOT EXISTS photo_embeddings_ann_<dim>
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT embedding_length CHECK length(embedding) = <dim>,
    INDEX embedding_hnsw embedding TYPE vector_similarity('hnsw', 'cosineDistance', <dim>) GRANULARITY 100000000
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (model, photo_id);
