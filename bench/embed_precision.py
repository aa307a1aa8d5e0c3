"""The embed stage at each precision, beside the seed tutorials' one-photo loop, in one run.

    python bench/embed_precision.py [MODEL_DIR] [--n 128] [--rounds 2] [--precisions fp32,int8]

On N real photos (../shared/data/unsplash-lite-7k/photos) and MODEL_DIR (a random-weight
ViT-B/32 from ../shared/tools/make_random_clip.py costs what openai/clip-vit-base-patch32 costs;
default /tmp/clip-b32), interleaved rounds of:

- seed loop: the tutorials' loop, one photo at a time: full decode, the processor, the
  model (fp32), normalize (the 1x reference);
- stage P: clipsql's embed stage (clipsql.embed.embed_photos: decode at reduced size in a
  background thread, batches of 32) at precision P, from the JPEG files;
- model P: the model alone at precision P on tensors already preprocessed (the stage's
  ceiling: the stage should keep >= 90% of it).

Prints photos/s (best round), the ratio to the seed loop, the stage's share of its model,
and the least cosine over the N photos of each precision's vectors to fp32's (full decode).
bf16 is slow on CPUs without native bf16 (AVX-512 BF16 / AMX): it is measured only when
asked for. Load and thread counts are printed; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import require_photos

from clipsql.embed import Embedder, embed_photos
from clipsql.images import open_rgb


def seed_loop(embedder: Embedder, files) -> np.ndarray:
    """The seed tutorials' loop: one photo at a time, fully decoded, fp32."""
    out = []
    for path in files:
        out.append(embedder.embed_images([open_rgb(path.read_bytes())])[0])
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/clip-b32")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32, int8, bf16")
    a = ap.parse_args()
    import torch

    files = sorted((require_photos() / "photos").glob("*.jpg"))[: a.n]
    items = [(p.stem, p) for p in files]
    precisions = a.precisions.split(",")
    embedders = {p: Embedder(a.model, device="cpu", progress=False, towers="image", precision=p) for p in precisions}
    reference = embedders.get("fp32") or Embedder(a.model, device="cpu", progress=False, towers="image")
    full = [open_rgb(p.read_bytes()) for p in files]
    batches = [reference.preprocess(full[i : i + a.batch_size]) for i in range(0, len(full), a.batch_size)]
    exact = np.concatenate([reference.embed_pixels(b) for b in batches])
    for embedder in embedders.values():  # warm-up; the first batch also checks the cosine floor
        embedder.embed_pixels(batches[0])
    rates: dict[str, list[float]] = {}
    cosines: dict[str, float] = {}

    def timed(name: str, run) -> None:
        t0 = time.perf_counter()
        vectors = run()
        rates.setdefault(name, []).append(len(files) / (time.perf_counter() - t0))
        if vectors is not None:
            cosines[name] = float(np.min(np.sum(vectors * exact, axis=1)))

    for _ in range(a.rounds):
        timed("seed loop", lambda: seed_loop(reference, files))
        for p, embedder in embedders.items():
            timed(
                f"stage {p}",
                lambda e=embedder: np.concatenate(
                    [b.embeddings for b in embed_photos(items, e, batch_size=a.batch_size, progress=False)]
                ),
            )
            timed(f"model {p}", lambda e=embedder: np.concatenate([e.embed_pixels(b) for b in batches]))
    seed = max(rates["seed loop"])
    print(
        f"{len(files)} photos, batch {a.batch_size}, torch threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()[0]:.2f} at the end, best of {a.rounds} interleaved rounds"
    )
    print(f"{'':<14}{'photos/s':>10}{'x seed':>8}{'of model':>10}{'min cos to fp32':>17}")
    for name, values in rates.items():
        best = max(values)
        share = ""
        if name.startswith("stage "):
            share = f"{100 * best / max(rates['model ' + name[6:]]):.0f}%"
        cos = f"{cosines[name]:.5f}" if name in cosines else ""
        print(f"{name:<14}{best:>10.1f}{best / seed:>8.2f}{share:>10}{cos:>17}")


if __name__ == "__main__":
    main()
