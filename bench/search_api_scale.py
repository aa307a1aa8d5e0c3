"""Exact search through the API at scale, side by side with numpy in one run (issue 13, part 6).

A chdb store of N photos x 512 clustered vectors (bench/search_memory.py's generator: topics
of varied size around a shared direction, as CLIP image embeddings are; not uniform random),
1% of them in Iceland. Per query, interleaved: numpy's exact top-10 over the same vectors held
in memory (`V @ q`, argpartition; with the filter, over the Iceland rows, the mask made per
query from the country column) and `search.nearest` on a store object held open (the search
snapshot: the vectors copied into the process, clipsql.search.memory). Prints p50s, their
ratio, recall@10 of the API against numpy's exact answer, the snapshot's build time and the
machine's load. No HNSW index is built (past 100,000 vectors it takes many minutes).

    PYTHONPATH=src:bench python bench/search_api_scale.py --n 1000000 --queries 30
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
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--kind", choices=("image", "text"), default="text", help="query cosine ~0.9 or ~0.3 to a row")
    a = ap.parse_args()
    print(f"load before: {machine_load()}")
    vectors = clustered(a.n, 512, a.clusters, seed=0)
    ids = np.array([f"{i:011d}" for i in range(a.n)])
    with tempfile.TemporaryDirectory() as root, open_store(root) as db:
        t0 = time.perf_counter()
        _, iceland = load_store(db, a.n, None, "bench", vectors=vectors, build_index=False)
        print(f"loaded {a.n} x 512 into chdb in {time.perf_counter() - t0:.1f} s")
        db.search_snapshot_max_bytes = 8 << 30
        qs = near_queries(vectors, a.queries + 3, a.kind, seed=1)
        t0 = time.perf_counter()
        search.nearest(db, qs[0], model=MODEL, k=10)
        print(
            f"first search (builds the snapshot: Memory table + copy of the vectors): {time.perf_counter() - t0:.1f} s"
        )
        search.nearest(db, qs[1], model=MODEL, k=10, country="Iceland")
        countries = np.where(iceland, "Iceland", "Japan")
        rows: dict[str, list] = {"numpy": [], "api": [], "numpy 1%": [], "api 1%": []}
        recall, recall1 = [], []
        for q in qs[3:]:
            t = time.perf_counter()
            top = np.argpartition(-(vectors @ q), 10)[:10]
            rows["numpy"].append(time.perf_counter() - t)
            t = time.perf_counter()
            got = search.nearest(db, q, model=MODEL, k=10)
            rows["api"].append(time.perf_counter() - t)
            recall.append(len(set(got["photo_id"]) & set(ids[top])) / 10)
            t = time.perf_counter()
            allowed = np.flatnonzero(countries == "Iceland")
            top1 = allowed[np.argpartition(-(vectors[allowed] @ q), 10)[:10]]
            rows["numpy 1%"].append(time.perf_counter() - t)
            t = time.perf_counter()
            got1 = search.nearest(db, q, model=MODEL, k=10, country="Iceland")
            rows["api 1%"].append(time.perf_counter() - t)
            recall1.append(len(set(got1["photo_id"]) & set(ids[top1])) / 10)
        p50 = {name: 1000 * float(np.median(times)) for name, times in rows.items()}
        print(f"{a.n} x 512, {a.kind} queries, p50 of {a.queries}, interleaved:")
        print(
            f"  no filter: numpy {p50['numpy']:.2f} ms, search.nearest {p50['api']:.2f} ms "
            f"({p50['api'] / p50['numpy']:.2f}x), recall@10 {np.mean(recall):.3f}"
        )
        print(
            f"  1% filter: numpy {p50['numpy 1%']:.2f} ms, search.nearest {p50['api 1%']:.2f} ms "
            f"({p50['api 1%'] / p50['numpy 1%']:.2f}x), recall@10 {np.mean(recall1):.3f}"
        )
    print(f"load after: {machine_load()}")


if __name__ == "__main__":
    main()
