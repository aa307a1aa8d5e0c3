-- name: photo_vectors
-- The stored vectors of some photos for a model: the query vector of a similar-photo
-- search, and the candidates' vectors for MMR re-ranking. Photos without a vector are
-- absent from the result.
-- Parameters:
--   model      String         label of the model (models.model)
--   photo_ids  Array(String)  the photos wanted
SELECT photo_id, embedding
FROM photo_embeddings FINAL
WHERE model = {model:String} AND has({photo_ids:Array(String)}, photo_id)
ORDER BY photo_id ASC
