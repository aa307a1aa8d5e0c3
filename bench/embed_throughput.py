"""Embed stage throughput vs the model's own batched throughput on preprocessed tensors.

    python bench/embed_throughput.py MODEL_DIR [--n 512] [--batch-size 32]

MODEL_DIR: a CLIP checkpoint, e.g. a random ViT-B/32 from
../shared/tools/make_random_clip.py (same cost as the real one). Target (issue 2): the
stage (decode + preprocess + infer, from the real JPEG files) runs at >= 90% of the
model alone on tensors already preprocessed.
"""

import argparse
import time

import torch

from _common import require_photos

from clipsql.embed import ClipEmbedder, embed_photos
from clipsql.images import open_rgb


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    root = require_photos()
    files = sorted((root / "photos").glob("*.jpg"))[: a.n]
    items = [(p.stem, p) for p in files]
    embedder = ClipEmbedder(a.model, device="cpu")
    images = [open_rgb(p.read_bytes()) for p in files]
    batches = [embedder.preprocess(images[i : i + a.batch_size]) for i in range(0, len(images), a.batch_size)]
    embedder.embed_pixels(batches[0])  # warm-up
    t0 = time.perf_counter()
    for pixels in batches:
        embedder.embed_pixels(pixels)
    model_rate = len(files) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = sum(len(b.photo_ids) for b in embed_photos(items, embedder, batch_size=a.batch_size, progress=False))
    stage_rate = n / (time.perf_counter() - t0)
    print(
        f"torch threads {torch.get_num_threads()}; model alone on preprocessed tensors: {model_rate:.1f} img/s; "
        f"embed stage from JPEG files: {stage_rate:.1f} img/s = {100 * stage_rate / model_rate:.1f}% of the model"
    )


if __name__ == "__main__":
    main()
