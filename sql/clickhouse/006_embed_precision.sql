-- The precision each vector was embedded at (issue 15): fp32, bf16, fp16 or int8
-- (clipsql.precision). A model's vectors at int8 and at fp32 are comparable (cosine >= 0.999
-- to each other, checked when they are made) but not identical, so each vector records its
-- own. Vectors stored before this migration were all made at fp32 (or fp16 on CUDA, which
-- the first wave did not record). Idempotent.
ALTER TABLE photo_embeddings ADD COLUMN IF NOT EXISTS embed_precision LowCardinality(String) DEFAULT 'fp32';
