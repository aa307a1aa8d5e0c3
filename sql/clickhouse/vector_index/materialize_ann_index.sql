-- Build the HNSW index of the parts of one width's approximate index that were inserted with
-- it deferred (add_ann_rows.sql); blocks until done. A run killed in it leaves the mutation,
-- which the engine resumes when it next opens the table.
ALTER TABLE {ann_table:Identifier} MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 1
