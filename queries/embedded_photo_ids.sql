-- name: embedded_photo_ids
-- photo_ids that already have a vector for a model: the refresh embeds only the others.
-- Parameters:
--   model  String  label of the model (models.model)
SELECT photo_id
FROM photo_embeddings FINAL
WHERE model = {model:String}
