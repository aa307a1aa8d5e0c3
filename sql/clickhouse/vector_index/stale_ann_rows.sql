-- Rows of one width's approximate index whose vector is gone from photo_embeddings (purged,
-- renamed, deleted by hand): how many (drop_stale_ann_rows.sql removes them).
SELECT count() AS n FROM {ann_table:Identifier} FINAL
WHERE (model, photo_id) NOT IN (SELECT model, photo_id FROM photo_embeddings FINAL WHERE length(embedding) = {dim:UInt32})
