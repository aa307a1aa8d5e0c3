-- The widths of the stored vectors: one approximate-index table per width
-- (create_ann_table.sql). Reads only the arrays' sizes, not the vectors.
SELECT DISTINCT length(embedding) AS dim FROM photo_embeddings ORDER BY dim
