-- Any vector width (issue 13): photo_embeddings loses the CHECK (len(embedding) = 512) that
-- stores made before this migration have. DuckDB cannot drop a constraint, so the table is
-- copied into one with today's CHECK and renamed, in one transaction (a run killed midway
-- leaves the old table whole; the photo_search view resolves the new one by name). The
-- vectors are copied, not embedded again. On a store created with today's 001_core.sql it
-- copies the table once, which changes nothing.
BEGIN TRANSACTION;
DROP TABLE IF EXISTS photo_embeddings_any_width;
CREATE TABLE photo_embeddings_any_width
(
    photo_id VARCHAR,
    model VARCHAR,
    embedding FLOAT[] NOT NULL CHECK (len(embedding) > 0),
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    version UBIGINT NOT NULL,
    PRIMARY KEY (model, photo_id)
);
INSERT INTO photo_embeddings_any_width SELECT photo_id, model, embedding, loaded_at, version FROM photo_embeddings;
DROP TABLE photo_embeddings;
ALTER TABLE photo_embeddings_any_width RENAME TO photo_embeddings;
COMMIT;
