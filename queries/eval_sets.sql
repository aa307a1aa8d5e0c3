-- name: eval_sets
-- Evaluation sets of `clipsql eval` (their last complete load): where the images and captions
-- came from, the model, and how many images (failed ones included), failed images and
-- captions it holds; by name.
-- Parameters:
--   eval_set  Nullable(String)  only this set; \N for every set
SELECT eval_set, images_dir, captions_file, captions_format, model, model_source, dim,
       images, images_failed, captions, loaded_at, version
FROM eval_sets FINAL
WHERE {eval_set:Nullable(String)} IS NULL OR eval_set = {eval_set:Nullable(String)}
ORDER BY eval_set ASC
