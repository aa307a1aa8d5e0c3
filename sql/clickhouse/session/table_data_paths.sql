-- Where the data of the given tables lives on disk (chdb: one directory per table holding a
-- directory per data part), for clipsql.engines.chdb's cheap check that a table changed.
SELECT name, data_paths FROM system.tables
WHERE database = currentDatabase() AND has({tables:Array(String)}, name)
