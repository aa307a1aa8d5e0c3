-- Rows stored in one width's approximate index, every version (from the parts' metadata:
-- no data read): compared before and after add_ann_rows.sql to tell whether it added any.
SELECT count() AS n FROM {ann_table:Identifier}
