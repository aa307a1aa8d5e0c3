"""Where the time of an exact top-10 goes on chdb: 25,000 random 512-d photos, p50 of wall ms.

    python bench/search_breakdown.py [--n 25000] [--queries 30]

Each row adds one piece to the one above it, so the differences are the cost of that piece:
reading the vector column alone, the cosine scan, FINAL, leaving out deleted photos, the
joins of photo_search (= queries/search_photos.sql, no filter), then the same after the table
is merged into one part. Two references show what a different storage would give: the scan over a
Memory-engine copy of the vectors (no MergeTree read) and over a BFloat16 copy (half the
bytes; approximate). The last row is the search snapshot's query (clipsql.snapshot), which
is what search.* runs on chdb. Issue 3's target is <= 10 ms for the whole exact query.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from clipsql import search, snapshot
from clipsql.db import open_store
from clipsql.queries import get_query
from search_latency import MODEL, load

SCAN = (
    "SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) AS distance "
    "FROM photo_embeddings<final> WHERE model = {model:String}<deleted> ORDER BY distance, photo_id LIMIT 10"
)
DELETED = " AND photo_id NOT IN (SELECT photo_id FROM photos FINAL WHERE is_deleted != 0)"


def scan(final: str, deleted: str) -> str:
    return SCAN.replace("<final>", final).replace("<deleted>", deleted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=25_000)
    ap.add_argument("--queries", type=int, default=30)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root, open_store(root) as db:
        load(db, a.n, rng, "bench")
        queries = rng.standard_normal((a.queries, 512)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        full = get_query("search_photos").executable_sql

        def p50(sql: str, with_vector: bool = True) -> float:
            times = []
            for q in queries:
                params = (
                    {"query_vec": q.tolist(), "model": MODEL, "k": 10, "offset": 0, "max_distance": None}
                    if with_vector
                    else None
                )
                t0 = time.perf_counter()
                db.client.query_arrow(sql, parameters=params)
                times.append(time.perf_counter() - t0)
            return 1000 * statistics.median(times)

        def rows(label: str) -> None:
            parts = int(
                db.query_df("SELECT count() AS n FROM system.parts WHERE table = 'photo_embeddings' AND active")["n"][0]
            )
            print(f"{label} (photo_embeddings in {parts} parts)")
            for name, sql, vec in [
                ("SELECT 1 (round trip)", "SELECT 1", False),
                (
                    "read the vector column alone",
                    "SELECT count() FROM photo_embeddings WHERE NOT ignore(embedding)",
                    False,
                ),
                ("cosine top-10, no FINAL", scan("", ""), True),
                ("+ FINAL", scan(" FINAL", ""), True),
                ("+ deleted photos left out", scan(" FINAL", DELETED), True),
                ("+ the joins of photo_search = search_photos.sql", full, True),
            ]:
                print(f"  {name:<52} {p50(sql, vec):7.2f} ms", flush=True)

        rows("as loaded")
        db.command("OPTIMIZE TABLE photo_embeddings FINAL")
        rows("merged")
        db.command("CREATE TABLE vectors_memory ENGINE = Memory AS SELECT photo_id, embedding FROM photo_embeddings")
        db.command(
            "CREATE TABLE vectors_bf16 (photo_id String, embedding Array(BFloat16)) ENGINE = MergeTree "
            "ORDER BY photo_id"
        )
        db.command(
            "INSERT INTO vectors_bf16 SELECT photo_id, arrayMap(x -> toBFloat16(x), embedding) FROM photo_embeddings"
        )
        db.command("OPTIMIZE TABLE vectors_bf16 FINAL")
        print("references (other storage)")
        for name, sql in [
            (
                "Memory engine copy: cosine top-10",
                "SELECT photo_id, cosineDistance(embedding, {query_vec:Array(Float32)}) "
                "AS d FROM vectors_memory ORDER BY d, photo_id LIMIT 10",
            ),
            (
                "BFloat16 copy: cosine top-10 (approximate)",
                "SELECT photo_id, cosineDistance(embedding, "
                "{query_vec:Array(BFloat16)}) AS d FROM vectors_bf16 ORDER BY d, photo_id LIMIT 10",
            ),
        ]:
            print(f"  {name:<52} {p50(sql):7.2f} ms", flush=True)
        # What clipsql runs on chdb: the vectors copied into the process (clipsql.snapshot,
        # clipsql.search.memory), so no SQL runs for an unfiltered search.
        snapshot.use_snapshot(db, MODEL)
        print("the search snapshot (what search.* runs on chdb)")
        times = []
        for q in queries:
            t0 = time.perf_counter()
            search.nearest(db, q, model=MODEL, k=10)
            times.append(1000 * (time.perf_counter() - t0))
        print(f"  {'search.nearest over the in-process copy':<52} {float(np.median(times)):7.2f} ms", flush=True)


if __name__ == "__main__":
    main()
