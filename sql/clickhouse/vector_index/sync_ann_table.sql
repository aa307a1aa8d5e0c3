-- Bring one width's approximate index (photo_embeddings_ann_<dim>, create_ann_table.sql) up
-- to what photo_embeddings holds: add the rows it lacks (new vectors, or newer versions of a
-- vector), drop those whose vector is gone (purged, renamed, deleted by hand), then build the
-- HNSW index of the parts added (the insert defers it: building it per insert costs more).
-- Idempotent: a run killed anywhere in it leaves rows a rerun adds or drops again.
INSERT INTO {ann_table:Identifier} (photo_id, model, embedding, version)
SELECT photo_id, model, embedding, version FROM photo_embeddings FINAL
WHERE length(embedding) = {dim:UInt32}
  AND (model, photo_id, version) NOT IN (SELECT model, photo_id, version FROM {ann_table:Identifier} FINAL)
SETTINGS materialize_skip_indexes_on_insert = 0;
DELETE FROM {ann_table:Identifier}
WHERE (model, photo_id) NOT IN (SELECT model, photo_id FROM photo_embeddings FINAL WHERE length(embedding) = {dim:UInt32});
ALTER TABLE {ann_table:Identifier} MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 1;
