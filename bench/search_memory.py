"""In-memory top-10 (clipsql.search.memory) beside numpy brute force, in one run.

    python bench/search_memory.py [--sizes 25000,1000000] [--queries 30] [--dim 512]
                                  [--mask-shares 0.01] [--clusters 3000] [--threads N]
                                  [--candidates 300,2000]

For each size: clustered vectors (a shared direction, as CLIP embeddings have, plus a
mixture of Gaussian clusters, L2-normalized; not uniform random, on which every index
looks worse than on real embeddings, DESIGN.md), built into an InMemoryVectors through
`from_arrow` as the API will. Then, interleaved query by query (in a rotating order) so that
load swings hit every column alike, p50 over the queries (ms) of:

- numpy: the reference, ``np.argpartition`` over ``V @ q`` then a sort of the 10 (over the
  same normalized copy the class holds);
- scan: ``search(q, 10)`` on a second copy built with ``first_pass="none"`` (float32 BLAS
  scan + float64 re-score at the cut);
- exact: ``search(q, 10)`` (the int8 page when the error bound proves it exact, else the
  scan; checked equal to the scan's page, query by query);
- fast: ``search(q, 10, exact=False)`` (the int8 page as it is), with its recall@10 against
  exact and the share of its pages the bound proves exact;

each with no filter and with an `allowed` mask of each share in --mask-shares (numpy's
reference then gathers the allowed rows, precomputed), and for each int8 candidate pool in
--candidates (default: the class's). Below FAST_MIN_ROWS no int8 copy is built and all
three columns are the scan. Two query kinds: "image" (cosine 0.9 to a stored vector) and
"text" (cosine 0.3 to a stored vector, as CLIP text-to-image similarities are: many rows at
nearly the same distance, the hard case for a reduced-precision pass). Also printed: the
build time and bytes held, and what `rows_of` costs for the mask's photo_ids. The load
(/proc/loadavg) is printed along: figures from a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import time

import numpy as np
import pyarrow as pa

from clipsql.search.memory import FAST_MIN_ROWS, InMemoryVectors

K = 10


def load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """(n, dim) float32, L2-normalized: shared direction + cluster centre + noise, in blocks
    (the 1M x 512 array is the only full-size allocation)."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(dim).astype(np.float32)
    shared /= np.linalg.norm(shared)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Cluster sizes vary as photo topics do (a few large, many small).
    weights = rng.pareto(1.5, clusters) + 1
    label = rng.choice(clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 65536):
        hi = min(n, lo + 65536)
        block = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        block *= 0.7 / np.sqrt(dim)  # noise of norm ~0.7 around a unit centre
        block += centres[label[lo:hi]]
        block += 0.9 * shared  # mean cosine between random rows ~0.45, as CLIP image embeddings
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out


def queries(vectors: np.ndarray, count: int, kind: str, seed: int) -> np.ndarray:
    """(count, d) float32 unit queries near stored rows: cosine ~0.9 ("image") or ~0.3 ("text")."""
    rng = np.random.default_rng(seed)
    source = vectors[rng.integers(0, len(vectors), count)].astype(np.float64)
    noise = rng.standard_normal(source.shape)
    noise -= (noise * source).sum(axis=1, keepdims=True) * source  # orthogonal to the source
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cosine = 0.9 if kind == "image" else 0.3
    q = cosine * source + np.sqrt(1 - cosine**2) * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def numpy_top(vectors: np.ndarray, q: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """The reference: rows of the 10 highest dot products, best first."""
    scores = vectors @ q if rows is None else vectors[rows] @ q
    top = np.argpartition(scores, len(scores) - K)[len(scores) - K :]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top if rows is None else rows[top]


def run_size(n: int, args) -> list[dict]:
    dim = args.dim
    t0 = time.perf_counter()
    data = clustered(n, dim, args.clusters, seed=n)
    ids = pa.array([f"p{i:08d}" for i in range(n)])  # ascending: the SQL feeds ORDER BY photo_id
    table = pa.table({"photo_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), dim)})
    generated = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = InMemoryVectors.from_arrow(table, dim=dim, threads=args.threads)
    built = time.perf_counter() - t0
    del table, data  # the numpy reference reads the store's own (normalized) copy
    vectors = store.vectors
    parts = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in store.nbytes.items())
    print(
        f"\nn={n:,} d={dim}: generated in {generated:.1f} s, built in {built:.1f} s "
        f"(first pass {store.first_pass}); holds {parts}",
        flush=True,
    )
    # The scan alone (what `exact` costs without the first pass): a second copy without it.
    scan_only = InMemoryVectors(ids, vectors, first_pass="none") if store.first_pass != "none" else store
    rng = np.random.default_rng(7)
    filters: list[tuple[str, np.ndarray | None]] = [("none", None)]
    for share in args.mask_shares:
        mask = rng.random(n) < share
        filters.append((f"{share:.0%}", mask))
    for label, mask in filters[1:]:
        # What the API pays to turn a filter's photo_ids (from SQL) into allowed rows.
        wanted = pa.array([f"p{i:08d}" for i in np.flatnonzero(mask)])
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            store.rows_of(wanted)
            timings.append(time.perf_counter() - t0)
        print(f"  rows_of({len(wanted):,} photo_ids, filter {label}): {1000 * statistics.median(timings):.1f} ms")
    rows = []
    pools = args.candidates or [None]
    for kind in ("image", "text"):
        qs = queries(vectors, args.queries, kind, seed=n + len(kind))
        for label, mask in filters:
            allowed_rows = None if mask is None else np.flatnonzero(mask)
            for c in pools:
                times: dict[str, list[float]] = {"numpy": [], "scan": [], "exact": [], "fast": []}
                recall, proven, mismatches = [], [], 0
                # One warm-up query first (page faults, thread pools), not timed.
                store.search(qs[0], K, allowed=mask, exact=False, candidates=c)
                for i, q in enumerate(qs):
                    calls = {
                        "numpy": functools.partial(numpy_top, vectors, q, allowed_rows),
                        "scan": functools.partial(scan_only.search, q, K, allowed=mask),
                        "exact": functools.partial(store.search, q, K, allowed=mask, candidates=c),
                        "fast": functools.partial(store.search, q, K, allowed=mask, exact=False, candidates=c),
                    }
                    # A different order for each query: the call after the BLAS scan finds
                    # OpenBLAS's threads still spinning, and no row should always pay that.
                    names = list(calls)
                    names = names[i % 4 :] + names[: i % 4]
                    out = {}
                    for name in names:
                        t = time.perf_counter()
                        out[name] = calls[name]()
                        times[name].append(time.perf_counter() - t)
                    reference, scanned, exact, fast = out["numpy"], out["scan"], out["exact"], out["fast"]
                    if exact.photo_ids != scanned.photo_ids:
                        raise SystemExit(f"exact search differs from the scan: {exact.photo_ids} {scanned.photo_ids}")
                    # Ids may differ from numpy's only where float32 scores tie at the cut.
                    mismatches += set(reference.tolist()) != set(exact.rows.tolist())
                    recall.append(len(set(exact.rows.tolist()) & set(fast.rows.tolist())) / max(1, len(exact)))
                    proven.append(fast.exact)
                p50 = {name: 1000 * statistics.median(values) for name, values in times.items()}
                r = dict(
                    n=n,
                    queries=kind,
                    filter=label,
                    pool="default" if c is None else str(c),
                    **p50,
                    recall=float(np.mean(recall)),
                    proven=float(np.mean(proven)),
                    mismatches=mismatches,
                )
                rows.append(r)
                print(
                    f"  {kind:5s} filter {label:4s} pool {r['pool']:>7s}: numpy {r['numpy']:7.2f}  "
                    + "  ".join(
                        f"{name} {r[name]:7.2f} ({r[name] / r['numpy']:.2f}x)" for name in ("scan", "exact", "fast")
                    )
                    + f"  ms; fast recall@10 {r['recall']:.3f}, proven exact {r['proven']:.0%}; "
                    f"exact!=numpy {mismatches}  [load {load()}]",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="25000,1000000", help="comma-separated row counts")
    parser.add_argument("--queries", type=int, default=30, help="queries per row of the table (p50 over them)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--mask-shares", default="0.01", help="comma-separated shares of allowed rows ('' for none)")
    parser.add_argument("--threads", type=int, default=None, help="threads of the int8 pass (default: all CPUs)")
    parser.add_argument(
        "--candidates", default="", help="comma-separated int8 candidate pools to compare (default: the class's)"
    )
    args = parser.parse_args()
    # The build's own timings (normalize, int8 pass) and sizes, as the library logs them.
    logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s")
    logging.getLogger("clipsql").setLevel(logging.INFO)
    args.mask_shares = [float(s) for s in args.mask_shares.split(",") if s]
    args.candidates = [int(c) for c in args.candidates.split(",") if c]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"clipsql.search.memory vs numpy, top-{K}, p50 over {args.queries} queries; "
        f"CPUs {len(os.sched_getaffinity(0))}; FAST_MIN_ROWS {FAST_MIN_ROWS:,}; load before {load()}"
    )
    rows = []
    for n in sizes:
        rows += run_size(n, args)
    print(f"\nload after {load()}")
    print("\n| n | queries | filter | pool | numpy | scan | exact | fast | fast recall@10 | fast proven exact |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cells = " | ".join(f"{r[name]:.2f} ({r[name] / r['numpy']:.1f}x)" for name in ("scan", "exact", "fast"))
        print(
            f"| {r['n']:,} | {r['queries']} | {r['filter']} | {r['pool']} | {r['numpy']:.2f} | {cells} | "
            f"{r['recall']:.3f} | {r['proven']:.0%} |"
        )
    print("(p50 ms; in brackets the ratio to numpy)")


if __name__ == "__main__":
    main()
