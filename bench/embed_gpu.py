"""The embed stage on a GPU: photos/s of clipsql's embed stage at each batch size and
precision, beside the model alone and the decode pool alone, within 5 minutes.

    python bench/embed_gpu.py [MODEL_DIR] [--n 4096] [--batch-sizes 128,256,512] [--precisions fp16,fp32]
    python bench/embed_gpu.py --device cpu --n 96 --batch-sizes 32 --precisions fp32   # a smoke run

Self-contained, so that it runs on a bare GPU machine without the network: without MODEL_DIR
it writes a random-weight checkpoint of the real ViT-B/32 shape (transformers' CLIPConfig
defaults: what openai/clip-vit-base-patch32 costs; a toy tokenizer, unused by the image
tower); the photos are the shared Unsplash Lite photos where they are
(../shared/data/unsplash-lite-7k/photos), else N generated 640x427 JPEGs (Unsplash Lite's
640-pixel width; smooth colour fields with noise, decoded at reduced size as real photos are).

For each precision and batch size it prints:

- stage: clipsql.embed.embed_photos from the JPEG files (decode in
  clipsql.embed.decode_workers_for(device) worker processes, pinned memory, resize and
  normalize on the GPU where torchvision is installed, else in the workers; the model at that
  precision), photos/s over the whole set after one warm-up batch;
- per chunk: the same, one embed_photos call per refresh chunk (DEFAULT_CHUNK_SIZE photos),
  as a refresh calls it: each chunk starts its decode workers and fills the pipeline again;
- model: the image tower alone on batches already preprocessed and on the GPU (the stage's
  ceiling), photos/s;
- workers preprocess: the stage with resizing and normalizing in the workers (where the
  stage does them on the GPU);
- the stage's share of the model.

And once: the decode pool alone (workers decoding and preprocessing, no model; and workers
decoding with the GPU preprocessing), photos/s: the stage cannot beat it; and the least cosine
between vectors of photos preprocessed on the GPU and in the workers. The anchor (issue 15): clip-retrieval, 1,500 photos/s on an RTX 3080.
Prints the device's name, the date, torch's version and the machine's load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import SHARED_PHOTOS

from clipsql.embed import Embedder, decode_workers_for, embed_photos


def random_vit_b32(out: Path) -> Path:
    """A CLIP checkpoint of the ViT-B/32 shape with random weights and a toy tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = CLIPConfig()  # the defaults are ViT-B/32: vision 768 wide, 12 layers, patch 32; text 512
    config.text_config.vocab_size = len(vocab)
    config.text_config.bos_token_id, config.text_config.eos_token_id = len(vocab) - 2, len(vocab) - 1
    config.text_config.pad_token_id = len(vocab) - 1
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(out)
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out)
    return out


def generated_photo(path: Path, seed: int) -> None:
    """One 640x427 JPEG (Unsplash Lite's 640-pixel rendition): a smooth colour field with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize((640, 427), Image.BICUBIC)
    noisy = np.clip(np.asarray(base, np.int16) + rng.integers(-12, 13, (427, 640, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=85)


def photo_files(n: int, folder: Path, generated: bool = False) -> list[tuple[str, Path]]:
    """N photos: the shared real photos where present (unless `generated`), else generated
    JPEGs in `folder` (written by every core: 20 ms each on one)."""
    real = SHARED_PHOTOS / "photos"
    if real.is_dir() and not generated:
        files = sorted(real.glob("*.jpg"))[:n]
        if len(files) == n:
            return [(p.stem, p) for p in files]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    paths = [folder / f"g{i:05d}.jpg" for i in range(n)]
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(generated_photo, paths, range(n), chunksize=64))
    return [(path.stem, path) for path in paths]


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stage_rate(items, embedder: Embedder, batch_size: int, workers: int, on_device: bool = True) -> float:
    """Photos/s of the embed stage over `items`, after a warm-up of two batches (the decode
    processes' server starts once per process, as in a refresh). `on_device`: as
    embed_photos' preprocess_on_device."""
    options = dict(batch_size=batch_size, progress=False, decode_workers=workers, preprocess_on_device=on_device)
    list(embed_photos(items[: 2 * batch_size], embedder, **options))
    started = time.perf_counter()
    done = sum(len(b.photo_ids) for b in embed_photos(items, embedder, **options))
    synchronize(embedder.device)
    return done / (time.perf_counter() - started)


def agreement(items, embedder: Embedder, batch_size: int, workers: int) -> float:
    """Least cosine, photo by photo, between the vectors of the stage with its images
    processed on the device and in the workers."""
    vectors = []
    for on_device in (True, False):
        batches = embed_photos(
            items,
            embedder,
            batch_size=batch_size,
            progress=False,
            decode_workers=workers,
            preprocess_on_device=on_device,
        )
        vectors.append({pid: v for b in batches for pid, v in zip(b.photo_ids, b.embeddings)})
    return min(float(np.dot(v, vectors[1][pid])) for pid, v in vectors[0].items())


def chunked_stage_rate(items, embedder: Embedder, batch_size: int, workers: int) -> float:
    """Photos/s of the embed stage as a refresh runs it: one embed_photos call per chunk of
    DEFAULT_CHUNK_SIZE photos (each call starts its decode workers and fills the pipeline)."""
    from clipsql.constants import DEFAULT_CHUNK_SIZE

    started = time.perf_counter()
    done = 0
    for start in range(0, len(items), DEFAULT_CHUNK_SIZE):
        chunk = items[start : start + DEFAULT_CHUNK_SIZE]
        batches = embed_photos(chunk, embedder, batch_size=batch_size, progress=False, decode_workers=workers)
        done += sum(len(b.photo_ids) for b in batches)
    synchronize(embedder.device)
    return done / (time.perf_counter() - started)


def model_rate(embedder: Embedder, pixels, batch_size: int, rounds: int) -> float:
    """Photos/s of the image tower alone on one preprocessed batch already on the device."""
    import torch

    batch = pixels[:batch_size].to(embedder.device)
    while batch.shape[0] < batch_size:
        batch = torch.cat([batch, batch])[:batch_size]
    embedder.embed_pixels(batch)  # warm-up (and the precision's cosine check)
    synchronize(embedder.device)
    started = time.perf_counter()
    for _ in range(rounds):
        embedder.embed_pixels(batch)
    synchronize(embedder.device)
    return rounds * batch_size / (time.perf_counter() - started)


def device_check(embedder: Embedder, items) -> bool:
    """Whether the image processor runs on the device and gives what it gives in the workers
    (largest difference of pixel values printed); its error printed where it fails."""
    import traceback

    from clipsql.embed import unpacked_images
    from clipsql.images import open_rgb

    preprocessor = embedder.image_preprocessor
    images = [open_rgb(p.read_bytes(), min_side=embedder.decode_side) for _, p in items]
    try:
        packed = preprocessor.packed_images(images)
        on_device = preprocessor.preprocess(unpacked_images(packed, embedder.device), device=embedder.device)
    except Exception:  # noqa: BLE001 - a bench reports and goes on without it
        traceback.print_exc()
        print("preprocessing on the device failed: the workers preprocess")
        return False
    in_workers = preprocessor.preprocess(images)
    gap = (on_device["pixel_values"].float().cpu() - in_workers["pixel_values"]).abs().max().item()
    print(f"pixel values, device vs workers: largest difference {gap:.4f} (on {len(images)} photos)", flush=True)
    return True


def decode_rate(items, embedder: Embedder, batch_size: int, workers: int, on_device: bool = False) -> float:
    """Photos/s of the decode pool alone: the stage's batches without the model (with
    `on_device`, the workers decode and the device preprocesses)."""
    from clipsql.embed import _batches_in_thread, _batches_in_workers

    started = time.perf_counter()
    side = embedder.decode_side
    if workers:
        device = embedder.device if on_device else None
        batches = _batches_in_workers(
            items, embedder.image_preprocessor, batch_size, side, workers, pin_memory=on_device, preprocess_on=device
        )
    else:
        batches = _batches_in_thread(items, embedder, batch_size, side)
    done = sum(len(ids) for ids, *_ in batches)
    return done / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="checkpoint directory (default: a random ViT-B/32 written here)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=4096, help="photos (default 4096)")
    ap.add_argument("--batch-sizes", default="128,256,512")
    ap.add_argument("--precisions", default="fp16,fp32")
    ap.add_argument("--workers", type=int, help="decode processes (default clipsql's choice for the device)")
    ap.add_argument("--generated", action="store_true", help="generated 640x427 JPEGs even where the shared photos are")
    ap.add_argument("--rounds", type=int, default=20, help="model-alone rounds per batch size")
    a = ap.parse_args()
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a smoke run")
    workers = decode_workers_for(a.device) if a.workers is None else a.workers
    name = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    print(
        f"embed stage on {name}; {datetime.date.today()}; torch {torch.__version__}; "
        f"{os.cpu_count()} cores, {workers} decode workers; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as work:
        model = a.model or str(random_vit_b32(Path(work) / "vit-b-32"))
        folder = Path(work) / "photos"
        folder.mkdir()
        started = time.perf_counter()
        items = photo_files(a.n, folder, a.generated)
        print(f"{len(items)} photos ready in {time.perf_counter() - started:.1f} s", flush=True)
        sizes = [int(b) for b in a.batch_sizes.split(",")]
        reference = Embedder(model, device=a.device, progress=False, towers="image")
        decode_rate(items[: 2 * max(sizes)], reference, max(sizes), workers)  # starts the workers' server
        rate = decode_rate(items, reference, max(sizes), workers)
        print(f"decode pool alone, preprocessing in the workers: {rate:,.0f} photos/s", flush=True)
        on_device = a.device.startswith("cuda") and reference.image_preprocessor.runs_on_cuda
        print(f"image processor: {type(reference.processor.image_processor).__name__}; on the device: {on_device}")
        if on_device:
            on_device = device_check(reference, items[:64])
        if on_device:
            rate = decode_rate(items, reference, max(sizes), workers, on_device=True)
            print(f"decode pool alone, preprocessing on the device: {rate:,.0f} photos/s", flush=True)
            cosine = agreement(items[:1024], reference, max(sizes), workers)
            print(f"fp32 vectors, preprocessed on the device vs in the workers: least cosine {cosine:.6f}", flush=True)
        from clipsql.images import open_rgb

        pixels = reference.preprocess([open_rgb(p.read_bytes()) for _, p in items[: max(sizes)]])["pixel_values"]
        print(
            f"{'precision':<10}{'batch':>6}{'stage photos/s':>16}{'per chunk':>11}{'workers preprocess':>20}"
            f"{'model photos/s':>16}{'stage/model':>13}"
        )
        for precision in a.precisions.split(","):
            embedder = Embedder(model, device=a.device, progress=False, towers="image", precision=precision)
            for size in sizes:
                alone = model_rate(embedder, pixels, size, a.rounds)
                stage = stage_rate(items, embedder, size, workers, on_device=on_device)
                chunked = chunked_stage_rate(items, embedder, size, workers)
                in_workers = stage_rate(items, embedder, size, workers, on_device=False) if on_device else stage
                print(
                    f"{precision:<10}{size:>6}{stage:>16,.0f}{chunked:>11,.0f}{in_workers:>20,.0f}"
                    f"{alone:>16,.0f}{stage / alone:>12.0%}",
                    flush=True,
                )
            del embedder
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
