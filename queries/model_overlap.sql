-- name: model_overlap
-- Model A/B on one query: how much two models agree on the top-k photos of the same query
-- (the same text embedded by each model: query_a by model_a, query_b by model_b; the models
-- may differ in width). Each model's top-k is exact, as search_photos ranks it (cosine
-- distance, ties by photo_id, deleted photos left out). One row:
-- top_a, top_b = the photos in each top-k (k, unless the model holds fewer photos);
-- overlap = the photos in both; overlap_share = overlap / greatest(top_a, top_b) (= |A n B| / k
-- when both models hold k photos or more; 1 for identical sets);
-- footrule = Spearman's footrule between the two top-k lists with location parameter k + 1
-- (Fagin, Kumar & Sivakumar 2003, "Comparing top k lists", SIAM J. Discrete Math. 17(1),
-- F^(k+1)): the sum over the photos of either list of |rank_a - rank_b|, a photo missing from
-- a list taking rank k + 1 there; footrule_similarity = 1 - footrule / its largest value for
-- these list lengths (the footrule of two disjoint lists: the sum of k + 1 - rank over both
-- lists; k (k + 1) for two full lists), 1 for the same order, 0 for no photo in common.
-- The shares are NULL when neither model has a photo.
-- Parameters:
--   model_a  String          label of the first model (models.model)
--   query_a  Array(Float32)  the query embedded by model_a, (d_a,) float32, L2-normalized
--   model_b  String          label of the second model (models.model)
--   query_b  Array(Float32)  the same query embedded by model_b, (d_b,) float32, L2-normalized
--   k        UInt32          the length of the top lists compared, e.g. 10
WITH
    top_a AS
    (
        SELECT photo_id, 'a' AS side,
               CAST(row_number() OVER (ORDER BY distance ASC, photo_id ASC) AS BIGINT) AS list_rank
        FROM
        (
            SELECT photo_id, cosineDistance(embedding, {query_a:Array(Float32)}) AS distance
            FROM photo_search
            WHERE model = {model_a:String}
            ORDER BY distance ASC, photo_id ASC
            LIMIT {k:UInt32}
        ) AS a
    ),
    top_b AS
    (
        SELECT photo_id, 'b' AS side,
               CAST(row_number() OVER (ORDER BY distance ASC, photo_id ASC) AS BIGINT) AS list_rank
        FROM
        (
            SELECT photo_id, cosineDistance(embedding, {query_b:Array(Float32)}) AS distance
            FROM photo_search
            WHERE model = {model_b:String}
            ORDER BY distance ASC, photo_id ASC
            LIMIT {k:UInt32}
        ) AS b
    ),
    per_photo AS
    (
        -- A photo missing from a list takes rank k + 1 there (the min of its one or two rows).
        SELECT photo_id,
               min(CASE WHEN side = 'a' THEN list_rank ELSE CAST({k:UInt32} AS BIGINT) + 1 END) AS rank_a,
               min(CASE WHEN side = 'b' THEN list_rank ELSE CAST({k:UInt32} AS BIGINT) + 1 END) AS rank_b
        FROM
        (
            SELECT photo_id, side, list_rank FROM top_a
            UNION ALL
            SELECT photo_id, side, list_rank FROM top_b
        ) AS listed
        GROUP BY photo_id
    ),
    totals AS
    (
        SELECT CAST(count(CASE WHEN rank_a <= {k:UInt32} THEN 1 END) AS BIGINT) AS top_a,
               CAST(count(CASE WHEN rank_b <= {k:UInt32} THEN 1 END) AS BIGINT) AS top_b,
               CAST(count(CASE WHEN rank_a <= {k:UInt32} AND rank_b <= {k:UInt32} THEN 1 END) AS BIGINT) AS overlap,
               CAST(coalesce(sum(abs(rank_a - rank_b)), 0) AS BIGINT) AS footrule,
               -- the footrule of disjoint lists of these lengths: sum of (k + 1 - rank) over both lists
               CAST(coalesce(sum(CASE WHEN rank_a <= {k:UInt32} THEN CAST({k:UInt32} AS BIGINT) + 1 - rank_a ELSE 0 END)
                             + sum(CASE WHEN rank_b <= {k:UInt32} THEN CAST({k:UInt32} AS BIGINT) + 1 - rank_b ELSE 0 END),
                             0) AS BIGINT) AS largest
        FROM per_photo
    )
SELECT
    CAST({k:UInt32} AS BIGINT) AS k,
    top_a,
    top_b,
    overlap,
    overlap / nullIf(greatest(top_a, top_b), 0) AS overlap_share,
    footrule,
    1 - footrule / nullIf(largest, 0) AS footrule_similarity
FROM totals
