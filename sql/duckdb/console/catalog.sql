-- The relations and columns of the store's own database, for the console's catalog
-- (clipsql.console): relation, kind (BASE TABLE or VIEW), column, type; by relation and position.
SELECT c.table_name AS relation, t.table_type AS kind, c.column_name AS "column", c.data_type AS type
FROM information_schema.columns AS c
INNER JOIN information_schema.tables AS t USING (table_catalog, table_schema, table_name)
WHERE c.table_catalog = current_database() AND c.table_schema = current_schema()
ORDER BY c.table_name, c.ordinal_position
