"""Search latency on chdb: 25,000 random 512-d photos, top-10, against numpy brute force.

    python bench/search_latency.py [--n 25000] [--queries 50] [--model-dir /tmp/clip-b32]

Targets (issue 3): top-10 p50 <= 10 ms on chdb, exact, with no filter and with a filter that
matches 1% of the photos; a text query end to end (embedding + SQL) p50 <= 60 ms on CPU with
the ViT-B/32 shape. Every chdb number is compared with numpy brute force over the same
vectors in the same run (ratio = chdb / numpy). The exact results are checked against numpy.

`search` rows time the Python API call (model lookup + snapshot check + query + DataFrame);
`sql` rows time the query file alone through the store (bind, run, Arrow -> DataFrame). On
chdb the API searches the in-memory search snapshot (clipsql.snapshot); the "snapshot off"
and "(tables)" rows are the same searches over the tables, as an analyst's console runs them. The text model is
a random-weight checkpoint of the real ViT-B/32 shape (DESIGN.md: it costs what the real
one costs); without --model-dir the end-to-end rows are skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from clipsql import search, snapshot
from clipsql.db import SEARCH_SNAPSHOT_MAX_BYTES, open_store
from clipsql.embed import cached_embedder
from clipsql.load import embeddings_table
from clipsql.queries import get_query
from clipsql.sources import arrow_schema

MODEL = "bench"
TEXTS = [
    "a dog on a beach",
    "sunset over the mountains",
    "a red car in the city at night",
    "people at a market",
    "snow covered forest",
    "a cup of coffee on a wooden table",
    "aerial view of a coastline",
    "portrait of a woman smiling",
    "an old bridge over a river",
    "fireworks in the sky",
]


def p50_ms(fn, args_list) -> tuple[float, list]:
    times, results = [], []
    for args in args_list:
        t0 = time.perf_counter()
        results.append(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), results


def load(
    db, n: int, rng, model_source: str, vectors: np.ndarray | None = None, build_index: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load n photos (1% in Iceland) with `vectors` (default: uniform random unit vectors) into
    `db`; build the HNSW index unless told not to (it takes minutes past 100,000 vectors)."""
    if vectors is None:
        vectors = rng.standard_normal((n, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:011d}" for i in range(n)]
    iceland = np.array([i % 100 == 7 for i in range(n)])
    schema = arrow_schema("photos")
    photos = pa.table({f.name: pa.nulls(n, f.type) for f in schema}, schema=schema)
    columns = {
        "photo_id": ids,
        "photo_description": [f"description of photo {i}" for i in range(n)],
        "photo_location_country": [
            "Iceland" if x else ["Japan", "Peru", "Kenya"][i % 3] for i, x in enumerate(iceland)
        ],
    }
    for name, values in columns.items():
        photos = photos.set_column(schema.get_field_index(name), name, pa.array(values))
    photos = photos.append_column("source_version", pa.array(["bench"] * n))
    photos = photos.append_column("is_deleted", pa.array(np.zeros(n, dtype=np.uint8)))
    photos = photos.append_column("version", pa.array(np.ones(n, dtype=np.uint64)))
    db.upsert("photos", photos)
    for start in range(0, n, 1024):  # as the refresh writes them: one part per 1,024 vectors
        db.upsert(
            "photo_embeddings", embeddings_table(ids[start : start + 1024], vectors[start : start + 1024], MODEL, 1)
        )
    db.upsert(
        "models",
        pa.table(
            {
                "model": [MODEL],
                "model_source": [model_source],
                "dim": pa.array([512], pa.uint16()),
                "version": pa.array([1], pa.uint64()),
            }
        ),
    )
    if build_index:
        db.after_load()
    return vectors, iceland


def numpy_topk(vectors: np.ndarray, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Row indices of the k nearest by cosine distance (vectors are unit length)."""
    matrix = vectors if rows is None else vectors[rows]
    distance = 1.0 - matrix @ query
    top = np.argpartition(distance, k)[:k]
    top = top[np.lexsort((top, distance[top]))]
    return top if rows is None else rows[top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=25_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--model-dir", default="/tmp/clip-b32", help="a ViT-B/32-shaped CLIP checkpoint directory")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    have_model = Path(a.model_dir).is_dir()
    with tempfile.TemporaryDirectory() as root, open_store(root) as db:
        t0 = time.perf_counter()
        vectors, iceland = load(db, a.n, rng, str(Path(a.model_dir).resolve()))
        print(
            f"chdb {db.query_df('SELECT version() AS v')['v'][0]}: loaded {a.n} photos x 512 "
            f"(+ HNSW index) in {time.perf_counter() - t0:.1f} s; 1% filter = country 'Iceland', "
            f"{int(iceland.sum())} photos; {a.queries} queries per row, top-{a.k}, p50"
        )
        queries = rng.standard_normal((a.queries, 512)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        # numpy filters the way SQL does, per query: a mask from the country column.
        countries = np.where(iceland, "Iceland", "Japan")

        def run_sql(name, q, **filters):  # the query file with the filters' conditions in place, as search.* runs it
            query = get_query(name).with_filters(search.Filters.of(**filters).conditions())
            values = {p: None if prm.nullable else [] for p, prm in query.parameters.items()}
            values.update(model=MODEL, k=a.k, offset=0, query_vec=q.tolist(), **filters)
            return query.run(db, **{p: v for p, v in values.items() if p in query.parameters})

        def tables(fn):  # the same call with the snapshot off: the query files that read the tables
            def call(*args):
                db.search_snapshot_max_bytes = 0
                try:
                    return fn(*args)
                finally:
                    db.search_snapshot_max_bytes = SEARCH_SNAPSHOT_MAX_BYTES

            return call

        # Warm up every path once (first queries pay for reading marks and building caches).
        for q in queries[:3]:
            search.nearest(db, q, model=MODEL, k=a.k)
            search.nearest(db, q, model=MODEL, k=a.k, country="Iceland")
            search.nearest(db, q, model=MODEL, k=a.k, rerank="exact")
            tables(lambda v: search.nearest(db, v, model=MODEL, k=a.k))(q)
            numpy_topk(vectors, q, a.k)
        lines = []

        def row(label, ms, np_ms):
            lines.append(f"  {label:<56} {ms:8.2f} ms   numpy {np_ms:6.2f} ms   ratio {ms / np_ms:6.1f}x")

        def note(label, ms):
            lines.append(f"  {label:<56} {ms:8.2f} ms")

        args = [(q,) for q in queries]
        np_ms, np_res = p50_ms(lambda q: numpy_topk(vectors, q, a.k), args)
        np1_ms, np1_res = p50_ms(lambda q: numpy_topk(vectors, q, a.k, np.flatnonzero(countries == "Iceland")), args)

        def same(results, expected):
            return all(r["photo_id"].tolist() == [f"{i:011d}" for i in e] for r, e in zip(results, expected))

        ms, res = p50_ms(lambda q: search.nearest(db, q, model=MODEL, k=a.k), args)
        assert same(res, np_res), "exact != numpy"
        row("exact, no filter   search.nearest (snapshot)", ms, np_ms)
        ms, res = p50_ms(tables(lambda q: search.nearest(db, q, model=MODEL, k=a.k)), args)
        assert same(res, np_res), "tables != numpy"
        row("exact, no filter   search.nearest, snapshot off", ms, np_ms)
        ms, _ = p50_ms(lambda q: run_sql("search_photos", q), args)
        row("exact, no filter   sql search_photos (photo_search)", ms, np_ms)
        ms, res = p50_ms(lambda q: search.nearest(db, q, model=MODEL, k=a.k, country="Iceland"), args)
        assert same(res, np1_res), "1% != numpy"
        row("exact, 1% filter   search.nearest (snapshot)", ms, np1_ms)
        ms, _ = p50_ms(lambda q: run_sql("snapshot_photo_ids", q, country="Iceland"), args)
        note("  of which: the photos passing it, sql snapshot_photo_ids", ms)
        ms, _ = p50_ms(tables(lambda q: search.nearest(db, q, model=MODEL, k=a.k, country="Iceland")), args)
        row("exact, 1% filter   search.nearest, snapshot off", ms, np1_ms)
        ms, _ = p50_ms(lambda q: run_sql("search_photos", q, country="Iceland"), args)
        row("exact, 1% filter   sql search_photos (photo_search)", ms, np1_ms)
        ms, res = p50_ms(lambda q: search.nearest(db, q, model=MODEL, k=a.k, rerank="exact"), args)
        recall = np.mean([len(set(r["photo_id"]) & {f"{i:011d}" for i in e}) / a.k for r, e in zip(res, np_res)])
        row(f"HNSW + exact re-score   rerank='exact' (recall {recall:.3f})", ms, np_ms)
        ms, _ = p50_ms(lambda q: search.lookup_model(db, MODEL), args[:20])
        note("  model lookup query (once per 30 s: Store.remember)", ms)
        ms, _ = p50_ms(lambda q: db.tables_state(snapshot.SNAPSHOT_TABLES), args)
        note("  snapshot check (every search: the tables' part directories)", ms)
        ms, _ = p50_ms(lambda q: snapshot._state(db), args[:20])
        note("  the same check by a query of system.parts (servers)", ms)

        def rebuild(q):  # the Memory table and the copy of the vectors, as the first search after a write
            snapshot.discard(db)
            search.nearest(db, q, model=MODEL, k=a.k)

        ms, _ = p50_ms(rebuild, args[:10])
        note("  snapshot rebuild (the first search after a write)", ms)
        print("\n".join(lines))

        if not have_model:
            print(f"text end to end: skipped, no checkpoint at {a.model_dir}")
            return
        lines = []
        embedder = cached_embedder(str(Path(a.model_dir).resolve()), MODEL, "cpu")
        texts = [(TEXTS[i % len(TEXTS)] + (f" {i}" if i >= len(TEXTS) else ""),) for i in range(a.queries)]
        for t in texts[:3]:
            search.text(t[0], a.k, db=db, model=MODEL, device="cpu")
        emb_ms, _ = p50_ms(lambda t: embedder.embed_texts([t])[0], texts)
        np_e2e_ms, _ = p50_ms(lambda t: numpy_topk(vectors, embedder.embed_texts([t])[0], a.k), texts)
        ms, _ = p50_ms(lambda t: search.text(t, a.k, db=db, model=MODEL, device="cpu"), texts)
        row("text end to end         search.text", ms, np_e2e_ms)
        ms, _ = p50_ms(lambda t: search.text(t, a.k, db=db, model=MODEL, device="cpu", country="Iceland"), texts)
        np1_e2e_ms, _ = p50_ms(
            lambda t: numpy_topk(vectors, embedder.embed_texts([t])[0], a.k, np.flatnonzero(countries == "Iceland")),
            texts,
        )
        row("text end to end, 1%     search.text", ms, np1_e2e_ms)
        lines.append(f"  {'  of which: text embedding (ViT-B/32 shape, cpu)':<52} {emb_ms:8.2f} ms")
        print("\n".join(lines))
    print(f"done {dt.datetime.now().isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
