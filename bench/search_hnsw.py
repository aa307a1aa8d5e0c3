"""The chdb HNSW path beside the exact in-process search, on clustered vectors (issue 13, part 6).

A chdb store of N photos x 512 clustered vectors (bench/search_memory.py's generator), its
approximate index built as a refresh builds it (Store.after_load: photo_embeddings_ann_512
filled, then MATERIALIZE INDEX; the build time is printed). Per query, interleaved: the exact
search through the API on a store object held open (`search.nearest`, the in-process search
snapshot) and the HNSW path (`search.nearest(..., rerank="exact")`: the index proposes
candidates, re-scored exactly), with recall@10 of each against numpy's exact top-10.

    PYTHONPATH=src:bench python bench/search_hnsw.py --n 100000 --queries 30
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from clipsql import search
from clipsql.db import open_store
from search_latency import MODEL, load as load_store
from search_memory import clustered, load as machine_load, queries as near_queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--kind", choices=("image", "text"), default="text", help="query cosine ~0.9 or ~0.3 to a row")
    a = ap.parse_args()
    print(f"load before: {machine_load()}")
    vectors = clustered(a.n, 512, a.clusters, seed=0)
    ids = np.array([f"{i:011d}" for i in range(a.n)])
    with tempfile.TemporaryDirectory() as root, open_store(root) as db:
        load_store(db, a.n, None, "bench", vectors=vectors, build_index=False)
        t0 = time.perf_counter()
        db.after_load()
        print(
            f"HNSW index of {a.n} x 512 (photo_embeddings_ann_512, as a refresh builds it): {time.perf_counter() - t0:.1f} s"
        )
        qs = near_queries(vectors, a.queries + 2, a.kind, seed=1)
        search.nearest(db, qs[0], model=MODEL, k=10)  # builds the snapshot
        search.nearest(db, qs[1], model=MODEL, k=10, rerank="exact")
        times: dict[str, list[float]] = {"exact": [], "hnsw": []}
        recall: dict[str, list[float]] = {"exact": [], "hnsw": []}
        for q in qs[2:]:
            truth = set(ids[np.argpartition(-(vectors @ q), 10)[:10]])
            for name, kwargs in (("exact", {}), ("hnsw", {"rerank": "exact"})):
                t = time.perf_counter()
                got = search.nearest(db, q, model=MODEL, k=10, **kwargs)
                times[name].append(time.perf_counter() - t)
                recall[name].append(len(set(got["photo_id"]) & truth) / 10)
        print(f"{a.n} x 512, {a.kind} queries, p50 of {a.queries}, interleaved:")
        for name, label in (
            ("exact", "exact, in-process snapshot"),
            ("hnsw", "HNSW + exact re-score (rerank='exact')"),
        ):
            print(
                f"  {label:<40} {1000 * float(np.median(times[name])):8.2f} ms   recall@10 {np.mean(recall[name]):.3f}"
            )
    print(f"load after: {machine_load()}")


if __name__ == "__main__":
    main()
