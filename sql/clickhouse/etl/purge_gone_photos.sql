-- Purge photos that the run did not see in its source: every row of theirs, in every
-- table, the photos row last (a run killed in between repeats the purge next time).
-- Lightweight DELETEs: rows are masked at once and dropped in merges.
DELETE FROM photo_embeddings WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
DELETE FROM download_status WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
DELETE FROM keywords WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
DELETE FROM collections WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
DELETE FROM colors WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
DELETE FROM conversions WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
DELETE FROM photos WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE version < {run_version:UInt64});
