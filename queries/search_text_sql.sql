-- name: search_text_sql
-- Text -> photos in SQL alone: the engine embeds the query text itself with the function
-- clip_text_embedding (a ClickHouse server: sql/clickhouse/udf/; chdb and DuckDB:
-- clipsql.udf.register_text_embedding) and ranks the photos by cosine distance, closest first,
-- ties broken by photo_id, exact, deleted photos left out: the rows clipsql.search.text returns
-- (same columns). The function must embed with the checkpoint of `model`, else the distances mean
-- nothing. A blank query embeds to [] and fails with an array-size error.
-- Parameters:
--   query  String  the text to search for, e.g. 'surfing' (CLIP reads its first 77 tokens)
--   model  String  label of the model whose vectors are searched (models.model): clip_text_embedding's model
--   k      UInt32  how many photos to return (top-k)
SELECT
    t.photo_id AS photo_id,
    t.distance AS distance,
    p.photo_description AS description,
    p.photo_url AS photo_url,
    p.photo_image_url AS photo_image_url
FROM
(
    -- Top-k on the vectors alone, then the join (as search_photos). The argument is constant,
    -- so the function runs once per query (ClickHouse: once when planning, once when running;
    -- the script remembers the text), not once per row.
    SELECT photo_id, cosineDistance(embedding, clip_text_embedding({query:String})) AS distance
    FROM photo_embeddings FINAL
    WHERE model = {model:String}
      AND photo_id NOT IN (SELECT photo_id FROM photos FINAL WHERE is_deleted != 0)
    ORDER BY distance ASC, photo_id ASC
    LIMIT {k:UInt32}
) AS t
INNER JOIN photos AS p FINAL ON p.photo_id = t.photo_id
ORDER BY distance ASC, photo_id ASC
LIMIT {k:UInt32}
