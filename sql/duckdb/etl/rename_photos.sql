-- Give stored photos new ids (see sql/clickhouse/etl/ for the rule): copy, then delete.
INSERT OR REPLACE INTO photos SELECT * REPLACE ($new_ids[list_position($old_ids, photo_id)] AS photo_id) FROM photos WHERE list_contains($old_ids, photo_id);
INSERT OR REPLACE INTO download_status SELECT * REPLACE ($new_ids[list_position($old_ids, photo_id)] AS photo_id) FROM download_status WHERE list_contains($old_ids, photo_id);
INSERT OR REPLACE INTO photo_embeddings SELECT * REPLACE ($new_ids[list_position($old_ids, photo_id)] AS photo_id) FROM photo_embeddings WHERE list_contains($old_ids, photo_id);
DELETE FROM photo_embeddings WHERE list_contains($old_ids, photo_id);
DELETE FROM download_status WHERE list_contains($old_ids, photo_id);
DELETE FROM photos WHERE list_contains($old_ids, photo_id);
