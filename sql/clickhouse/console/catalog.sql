-- The relations and columns of the store's own database, for the console's catalog
-- (clipsql.console): relation, kind (its engine), column, type; by relation and position.
SELECT c.table AS relation, t.engine AS kind, c.name AS column, c.type AS type
FROM system.columns AS c
INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
WHERE c.database = currentDatabase()
ORDER BY c.table, c.position
