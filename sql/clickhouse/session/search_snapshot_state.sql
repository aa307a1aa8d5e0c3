-- What the search snapshot depends on, read before every search that uses it: the active
-- parts of the tables behind photo_search, which it copies (an insert, merge, mutation, TRUNCATE or DROP
-- changes the list, so an unchanged list means unchanged rows) and their uncompressed bytes
-- (photo_embeddings' bytes bound the snapshot's size). One row per part.
SELECT table, name, data_uncompressed_bytes
FROM system.parts
WHERE database = currentDatabase() AND table IN ('photo_embeddings', 'photos', 'keywords', 'colors') AND active
ORDER BY table, name
