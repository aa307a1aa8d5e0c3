-- name: eval_ranks
-- Text -> image retrieval ranks of an evaluation set (clipsql eval): for each caption query,
-- the rank of its own image among the candidate images by cosine distance, rank = 1 + the
-- number of candidates strictly closer to the query, or as close with a smaller image_id
-- (ties broken by image_id, as search breaks them by photo_id); closest first = rank 1.
-- Exact: every (query, candidate) pair is scored, no index. Only rows of the set's last
-- complete load are read (eval_sets.version); a caption whose image has no vector (missing
-- or undecodable file) is no query. One row per query, by caption_id.
-- Parameters:
--   eval_set          String  the evaluation set (eval_sets.eval_set)
--   query_kind        String  the query vectors: 'plain' (the caption), 'combined' or 'negative' (eval_caption_embeddings.query_kind)
--   same_orientation  Bool    true: the candidates are only the images of the correct image's orientation (a metadata pre-filter that always keeps the correct image); false: every image
WITH
    -- ranks: begin (the same text in eval_ranks and eval_metrics; tests/test_eval.py checks it)
    images AS
    (
        SELECT e.image_id AS image_id, e.embedding AS embedding, i.orientation AS orientation
        FROM eval_image_embeddings AS e FINAL
        INNER JOIN eval_images AS i FINAL
            ON i.eval_set = e.eval_set AND i.image_id = e.image_id AND i.version = e.version
        INNER JOIN eval_sets AS s FINAL ON s.eval_set = e.eval_set AND s.version = e.version
        WHERE e.eval_set = {eval_set:String} AND i.status = 'ok'
    ),
    targets AS
    (
        SELECT c.caption_id AS caption_id, c.image_id AS target_id, q.embedding AS embedding,
               cosineDistance(q.embedding, t.embedding) AS target_distance,
               t.orientation AS target_orientation
        FROM eval_caption_embeddings AS q FINAL
        INNER JOIN eval_captions AS c FINAL
            ON c.eval_set = q.eval_set AND c.caption_id = q.caption_id AND c.version = q.version
        INNER JOIN eval_sets AS s FINAL ON s.eval_set = q.eval_set AND s.version = q.version
        INNER JOIN images AS t ON t.image_id = c.image_id
        WHERE q.eval_set = {eval_set:String} AND q.query_kind = {query_kind:String}
    ),
    pairs AS
    (
        SELECT t.caption_id AS caption_id, t.target_id AS target_id, t.target_distance AS target_distance,
               i.image_id AS image_id, cosineDistance(t.embedding, i.embedding) AS distance
        FROM targets AS t
        CROSS JOIN images AS i
        WHERE NOT {same_orientation:Bool} OR i.orientation = t.target_orientation
    ),
    ranks AS
    (
        SELECT caption_id, target_id, target_distance,
               CAST(1 + sum(CASE WHEN image_id != target_id
                                      AND (distance < target_distance
                                           OR (distance = target_distance AND image_id < target_id))
                                 THEN 1 ELSE 0 END) AS BIGINT) AS rank,
               CAST(count() AS BIGINT) AS candidates
        FROM pairs
        GROUP BY caption_id, target_id, target_distance
    )
    -- ranks: end
SELECT caption_id, target_id AS image_id, target_distance AS distance, rank, candidates
FROM ranks
ORDER BY caption_id ASC
