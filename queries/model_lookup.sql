-- name: model_lookup
-- One model by its label or by what it was loaded from, if it has stored vectors: its label,
-- source and dimension. The cheap lookup behind a search that names its model (the models
-- query also counts every model's vectors).
-- Parameters:
--   model  String  a model label (models.model) or source (models.model_source)
SELECT model, model_source, dim
FROM models FINAL
WHERE (model = {model:String} OR model_source = {model:String})
  AND model IN (SELECT model FROM photo_embeddings)
ORDER BY version DESC, model ASC
LIMIT 1
