-- name: eval_metrics
-- Text -> image retrieval metrics of an evaluation set (clipsql eval), over every caption
-- query of one kind: Recall@k = the share of queries whose correct image has rank <= k, for
-- three cutoffs (1, 5, 10 in the usual protocol: Karpathy & Fei-Fei 2015; the CLIP paper,
-- Radford et al. 2021, table 13); MRR = the mean of 1 / rank (Voorhees, TREC-8 QA, 1999);
-- mean_rank; mean_candidates = candidates per query. Ranks as queries/eval_ranks.sql: 1 + the
-- candidates strictly closer by cosine distance, ties broken by image_id. One row; with no
-- query the recalls, MRR and means are NULL (NaN on ClickHouse).
-- Parameters:
--   eval_set          String  the evaluation set (eval_sets.eval_set)
--   query_kind        String  the query vectors: 'plain' (the caption), 'combined' or 'negative' (eval_caption_embeddings.query_kind)
--   same_orientation  Bool    true: the candidates are only the images of the correct image's orientation (a metadata pre-filter that always keeps the correct image); false: every image
--   k_1               UInt32  first recall cutoff (recall_at_k_1), e.g. 1
--   k_2               UInt32  second recall cutoff (recall_at_k_2), e.g. 5
--   k_3               UInt32  third recall cutoff (recall_at_k_3), e.g. 10
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
SELECT
    CAST(count() AS BIGINT) AS queries,
    avg(CASE WHEN rank <= {k_1:UInt32} THEN 1.0 ELSE 0.0 END) AS recall_at_k_1,
    avg(CASE WHEN rank <= {k_2:UInt32} THEN 1.0 ELSE 0.0 END) AS recall_at_k_2,
    avg(CASE WHEN rank <= {k_3:UInt32} THEN 1.0 ELSE 0.0 END) AS recall_at_k_3,
    avg(1.0 / rank) AS mrr,
    avg(rank) AS mean_rank,
    avg(candidates) AS mean_candidates
FROM ranks
