-- Any vector width (issue 13): photo_embeddings loses the 512-wide HNSW index and the CHECK
-- length(embedding) = 512 that stores made before this migration have, so a model of any
-- width can be loaded beside the others. The vectors stay where they are (nothing is
-- embedded again); each width's approximate index is rebuilt in its own table,
-- photo_embeddings_ann_<dim>, by the next refresh (or `clipsql index`). Idempotent: on a
-- store created with today's 001_core.sql every statement changes nothing.
ALTER TABLE photo_embeddings DROP INDEX IF EXISTS embedding_hnsw;
ALTER TABLE photo_embeddings DROP CONSTRAINT IF EXISTS embedding_length;
ALTER TABLE photo_embeddings ADD CONSTRAINT IF NOT EXISTS embedding_not_empty CHECK length(embedding) > 0;
