-- name: eval_failures
-- Images of an evaluation set that could not be embedded (missing file, unreadable,
-- undecodable...), with the reason, its detail and how many captions lost their query for
-- it; by reason, then image_id. Reads the set's last complete load (eval_sets.version).
-- Parameters:
--   eval_set  String  the evaluation set (eval_sets.eval_set)
SELECT i.image_id AS image_id, i.reason AS reason, i.detail AS detail,
       CAST(count(c.caption_id) AS BIGINT) AS captions
FROM eval_images AS i FINAL
INNER JOIN eval_sets AS s FINAL ON s.eval_set = i.eval_set AND s.version = i.version
INNER JOIN
(
    SELECT caption_id, image_id
    FROM eval_captions FINAL
    WHERE eval_set = {eval_set:String}
      AND version IN (SELECT version FROM eval_sets FINAL WHERE eval_set = {eval_set:String})
) AS c ON c.image_id = i.image_id
WHERE i.eval_set = {eval_set:String} AND i.status = 'failed'
GROUP BY i.image_id, i.reason, i.detail
ORDER BY reason ASC, image_id ASC
