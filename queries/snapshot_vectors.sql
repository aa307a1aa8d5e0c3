-- name: snapshot_vectors
-- The vectors of the photos of the search snapshot with the columns a result shows, by
-- photo_id: what clipsql copies into the process that searches (clipsql.search.memory) when
-- it builds the snapshot. Deleted photos are not in it (the snapshot holds photo_search's rows).
-- Runs after: sql/clickhouse/session/build_search_snapshot.sql (in the same session: it builds search_snapshot)
-- Parameters:
--   model  String  label of the model whose snapshot it is (models.model)
SELECT s.photo_id AS photo_id, e.embedding AS embedding, s.description AS description,
       s.photo_url AS photo_url, s.photo_image_url AS photo_image_url
FROM search_snapshot AS s
INNER JOIN (SELECT photo_id, embedding FROM photo_embeddings FINAL WHERE model = {model:String}) AS e
    ON e.photo_id = s.photo_id
ORDER BY photo_id
