-- Purge photos that the run did not see in its source: every row of theirs, in every
-- table, the photos row last (a run killed in between repeats the purge next time).
DELETE FROM photo_embeddings WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
DELETE FROM download_status WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
DELETE FROM keywords WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
DELETE FROM collections WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
DELETE FROM colors WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
DELETE FROM conversions WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
DELETE FROM photos WHERE photo_id IN (SELECT photo_id FROM photos WHERE version < $run_version);
