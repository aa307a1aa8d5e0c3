-- Remove the rows of one width's approximate index whose vector is gone from photo_embeddings
-- (a lightweight DELETE: masked at once, dropped in merges).
DELETE FROM {ann_table:Identifier}
WHERE (model, photo_id) NOT IN (SELECT model, photo_id FROM photo_embeddings FINAL WHERE length(embedding) = {dim:UInt32})
