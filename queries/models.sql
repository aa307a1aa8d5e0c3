-- name: models
-- Models with stored vectors: label, what it was loaded from, dimension and vector count,
-- newest first.
-- Parameters:
--   min_vectors  UInt64  leave out models with fewer stored vectors than this
SELECT m.model AS model, m.model_source AS model_source, m.dim AS dim, m.version AS version,
       count(e.photo_id) AS vectors
FROM models AS m FINAL
LEFT JOIN photo_embeddings AS e FINAL ON e.model = m.model
GROUP BY m.model, m.model_source, m.dim, m.version
HAVING count(e.photo_id) >= {min_vectors:UInt64}
ORDER BY m.version DESC, m.model ASC
