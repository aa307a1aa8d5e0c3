-- Flag photos that the run did not see in its source: every photo whose newest row is
-- older than the run ({run_version}) and not yet flagged gets a new row, is_deleted = 1,
-- at the run's version. Kept with its vectors; search leaves it out. A later run that sees
-- the photo again upserts it with is_deleted = 0.
-- (The subquery keeps `version` of the WHERE from meaning the replaced value.)
INSERT INTO photos
SELECT * REPLACE (toUInt8(1) AS is_deleted, {run_version:UInt64} AS version)
FROM (SELECT * FROM photos FINAL WHERE version < {run_version:UInt64} AND is_deleted = 0);
