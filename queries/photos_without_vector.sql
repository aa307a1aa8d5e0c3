-- name: photos_without_vector
-- How many photos that search could return (not flagged deleted, image downloaded) have no
-- vector for a model: the refresh marks a model complete (models.completed_at) only at 0,
-- so a run with --limit does not make a new model the search default.
-- Parameters:
--   model  String  label of the model (models.model)
SELECT count() AS n
FROM photos AS p FINAL
INNER JOIN download_status AS d FINAL ON d.photo_id = p.photo_id
WHERE p.is_deleted = 0 AND d.status = 'ok'
  AND p.photo_id NOT IN (SELECT photo_id FROM photo_embeddings FINAL WHERE model = {model:String})
