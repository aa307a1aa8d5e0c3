-- name: embedded_photo_ids
-- Which of some photos already have a vector for a model: the refresh embeds only the others.
-- Parameters:
--   model      String         label of the model (models.model)
--   photo_ids  Array(String)  the photos asked about (one chunk of the refresh)
SELECT photo_id
FROM photo_embeddings FINAL
WHERE model = {model:String} AND photo_id IN {photo_ids:Array(String)}
