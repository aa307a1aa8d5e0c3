-- Bring one width's approximate index (photo_embeddings_ann_<dim>, create_ann_table.sql) up
-- to photo_embeddings, first step: add the rows it lacks (new vectors, or newer versions of a
-- vector). The HNSW index of the added parts is built afterwards (materialize_ann_index.sql):
-- building it per insert costs more. Idempotent: a run killed in it adds the rest next time.
INSERT INTO {ann_table:Identifier} (photo_id, model, embedding, version)
SELECT photo_id, model, embedding, version FROM photo_embeddings FINAL
WHERE length(embedding) = {dim:UInt32}
  AND (model, photo_id, version) NOT IN (SELECT model, photo_id, version FROM {ann_table:Identifier} FINAL)
SETTINGS materialize_skip_indexes_on_insert = 0
