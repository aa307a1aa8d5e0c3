-- Evaluation sets of `clipsql eval` (clipsql.evaluate), ClickHouse >= 25.8 and chdb: a
-- captioned image set (Flickr8k, COCO captions) with its own images, captions and vectors,
-- kept apart from the photo tables so an evaluation never mixes with the searched store.
--
-- Every row carries its set's name (eval_set) and the version of the load that wrote it
-- (the load's start in ms since the epoch). A load writes eval_sets last: its version
-- points at the last complete load, and the queries (queries/eval_*.sql) read only rows of
-- that version. So a rerun replaces a set by name: rows with the same key are replaced
-- (ReplacingMergeTree), rows whose key the new load lacks (a smaller --limit) stay on disk
-- but are no longer read.

-- eval_sets: one row per set, the last complete load.
CREATE TABLE IF NOT EXISTS eval_sets
(
    eval_set String,
    images_dir String,
    captions_file String,
    captions_format LowCardinality(String),
    model String,
    model_source String,
    dim UInt16,
    images UInt64,
    images_failed UInt64,
    captions UInt64,
    loaded_at DateTime64(3, 'UTC'),
    version UInt64,
    CONSTRAINT eval_set_not_empty CHECK eval_set != ''
)
ENGINE = ReplacingMergeTree(version)
ORDER BY eval_set;

-- eval_images: one row per image file the captions name (image_id: its file name as the
-- captions file writes it, relative to the images folder). status 'failed' with a reason
-- (missing, unreadable, or an image reason of clipsql.images: empty, not_an_image,
-- unsupported_format, too_many_pixels, undecodable) when it could not be embedded.
-- orientation as clipsql.search.Filters has it: landscape (width > height), portrait
-- (width < height), square; width and height in pixels after the EXIF rotation.
CREATE TABLE IF NOT EXISTS eval_images
(
    eval_set String,
    image_id String,
    width Nullable(UInt32),
    height Nullable(UInt32),
    orientation LowCardinality(Nullable(String)),
    status LowCardinality(String),
    reason LowCardinality(Nullable(String)),
    detail Nullable(String),
    version UInt64,
    CONSTRAINT eval_image_status_known CHECK status IN ('ok', 'failed')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, image_id);

-- eval_captions: one row per caption, caption_id its position in the captions file (0-based),
-- line its line there (COCO: its index in "annotations").
CREATE TABLE IF NOT EXISTS eval_captions
(
    eval_set String,
    caption_id UInt32,
    image_id String,
    caption String,
    line UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, caption_id);

-- eval_image_embeddings: the L2-normalized image vector of each image that could be embedded.
-- No vector index: evaluation ranks exactly, scoring every (query, image) pair.
CREATE TABLE IF NOT EXISTS eval_image_embeddings
(
    eval_set String,
    image_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT eval_image_embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, image_id);

-- eval_caption_embeddings: the L2-normalized query vector of each caption per query kind
-- ('plain': the caption's text embedding; 'combined' and 'negative': the caption combined
-- with a weighted second term, see clipsql.evaluate.QUERY_KINDS).
CREATE TABLE IF NOT EXISTS eval_caption_embeddings
(
    eval_set String,
    query_kind LowCardinality(String),
    caption_id UInt32,
    model LowCardinality(String),
    embedding Array(Float32),
    version UInt64,
    CONSTRAINT eval_caption_embedding_not_empty CHECK length(embedding) > 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (eval_set, query_kind, caption_id);
