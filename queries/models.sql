-- name: models
-- Models with stored vectors: label, what it was loaded from, dimension, vector count and
-- whether a refresh has embedded every photo of the store with it (complete = 1,
-- completed_at). Complete models first, the newest completed first; then the others, the
-- newest first. Search uses the first row unless told otherwise.
-- Parameters:
--   min_vectors  UInt64  leave out models with fewer stored vectors than this
SELECT m.model AS model, m.model_source AS model_source, m.dim AS dim, m.version AS version,
       m.completed_at AS completed_at,
       CASE WHEN m.completed_at IS NULL THEN 0 ELSE 1 END AS complete,
       count(e.photo_id) AS vectors
FROM models AS m FINAL
LEFT JOIN photo_embeddings AS e FINAL ON e.model = m.model
GROUP BY m.model, m.model_source, m.dim, m.version, m.completed_at
HAVING count(e.photo_id) >= {min_vectors:UInt64}
ORDER BY complete DESC, m.completed_at DESC, m.version DESC, m.model ASC
