-- Give stored photos new ids (image folders: from the file stem, clipsql <= 0.1, to the
-- path relative to the folder): each photo's rows in photos, download_status and
-- photo_embeddings are copied under the new id, then the old rows are deleted, so no vector
-- is computed again. A run killed in between leaves both; the rerun copies again (an
-- upsert: nothing doubles) and deletes. Image folders have no keywords, collections,
-- colors or conversions rows. old_ids[i] becomes new_ids[i]. (The WHERE sits in a subquery:
-- in ClickHouse an outer WHERE would see the replaced photo_id.)
INSERT INTO photos SELECT * REPLACE (transform(photo_id, {old_ids:Array(String)}, {new_ids:Array(String)}, photo_id) AS photo_id) FROM (SELECT * FROM photos FINAL WHERE photo_id IN {old_ids:Array(String)});
INSERT INTO download_status SELECT * REPLACE (transform(photo_id, {old_ids:Array(String)}, {new_ids:Array(String)}, photo_id) AS photo_id) FROM (SELECT * FROM download_status FINAL WHERE photo_id IN {old_ids:Array(String)});
INSERT INTO photo_embeddings SELECT * REPLACE (transform(photo_id, {old_ids:Array(String)}, {new_ids:Array(String)}, photo_id) AS photo_id) FROM (SELECT * FROM photo_embeddings FINAL WHERE photo_id IN {old_ids:Array(String)});
DELETE FROM photo_embeddings WHERE photo_id IN {old_ids:Array(String)};
DELETE FROM download_status WHERE photo_id IN {old_ids:Array(String)};
DELETE FROM photos WHERE photo_id IN {old_ids:Array(String)};
