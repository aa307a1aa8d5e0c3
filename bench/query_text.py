"""One query text's embedding: p50 and p90 of each text path, interleaved, idle and busy.

    python bench/query_text.py [MODEL_DIR] [--texts 60] [--busy 2]

MODEL_DIR: a checkpoint (default /tmp/clip-b32, the random-weight ViT-B/32 of
../shared/tools/make_random_clip.py, which costs what the real one costs). Paths, each embedding
the same short texts (3-12 words) one at a time, in interleaved rounds:

- torch fp32, 1 thread: the model's text tower (the path before the ONNX copies);
- onnx fp32 and onnx int8: clipsql.embed.query_text_encoder at precision fp32 and int8 (the
  cached ONNX text tower; up to 2 threads that sleep when idle); `auto` is int8 where the
  checkpoint keeps the cosine floor, else fp32;
- the least cosine of int8's vectors to fp32's.

With --busy N the rounds run again while N processes spin on the CPU (as a refresh's
embedding does on a 2-core machine). The target (issue 15): p50 <= 10 ms on 2 idle cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np

WORDS = (
    "a dog on a beach at sunset with waves red car parked in the snowy mountain street "
    "city lights at night over the river two children playing football in green park"
).split()


def spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 13)))) for _ in range(n)]


def timed(encoder, queries: list[str]) -> tuple[list[float], np.ndarray]:
    times, vectors = [], []
    for query in queries:
        started = time.perf_counter()
        vectors.append(encoder.embed_texts([query])[0])
        times.append((time.perf_counter() - started) * 1000)
    return times, np.stack(vectors)


def rounds(paths: dict, queries: list[str], repeats: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in paths}
    vectors = {}
    for _ in range(repeats):
        for name, encoder in paths.items():
            spent, vectors[name] = timed(encoder, queries)
            times[name] += spent
    return {"times": times, "vectors": vectors}


def report(title: str, result: dict) -> None:
    print(f"{title} (load {os.getloadavg()[0]:.2f}):")
    for name, values in result["times"].items():
        p50, p90 = statistics.median(values), statistics.quantiles(values, n=10)[-1]
        print(f"  {name:<22} p50 {p50:6.1f} ms   p90 {p90:6.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/clip-b32")
    ap.add_argument("--texts", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="spinning processes for the busy rounds (0: none)")
    a = ap.parse_args()
    import torch

    from clipsql.embed import Embedder, query_text_encoder

    torch.set_num_threads(1)
    paths = {
        "torch fp32, 1 thread": Embedder(a.model, device="cpu", progress=False, towers="text"),
        "onnx fp32": query_text_encoder(a.model, "bench", "cpu", "fp32"),
        "onnx int8": query_text_encoder(a.model, "bench", "cpu", "int8"),
    }
    print(f"auto picks {query_text_encoder(a.model, 'bench', 'cpu', 'auto').precision}")
    queries = texts(a.texts)
    rounds(paths, queries[:5], 1)  # warm-up
    idle = rounds(paths, queries, a.repeats)
    report("idle", idle)
    cosine = np.sum(idle["vectors"]["onnx int8"] * idle["vectors"]["torch fp32, 1 thread"], axis=1)
    print(f"  int8 vs fp32: least cosine {cosine.min():.5f} over {len(queries)} texts")
    if a.busy:
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(a.busy)]
        for p in spinners:
            p.start()
        try:
            time.sleep(1)
            report(f"busy ({a.busy} spinning processes)", rounds(paths, queries, a.repeats))
        finally:
            stop.set()
            for p in spinners:
                p.join()


if __name__ == "__main__":
    main()
