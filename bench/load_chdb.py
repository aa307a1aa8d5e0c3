"""Load stage: 25,000 photo rows and 25,000 x 512 vectors into a fresh chdb store.

    python bench/load_chdb.py [--n 25000]

Target (issue 2): <= 1 s for the inserts. The HNSW index build (MATERIALIZE INDEX, which
a refresh runs once at its end) is timed apart.
"""

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa

from clipsql.db import open_store
from clipsql.load import Loader
from clipsql.sources import SourceData, arrow_schema


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=25_000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((a.n, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:011d}" for i in range(a.n)]
    schema = arrow_schema("photos")
    photos = pa.table({f.name: pa.nulls(a.n, f.type) for f in schema}, schema=schema)
    photos = photos.set_column(0, "photo_id", pa.array(ids))
    photos = photos.set_column(8, "photo_description", pa.array([f"description of photo {i}" for i in range(a.n)]))
    with tempfile.TemporaryDirectory() as root, open_store(root) as db:
        loader = Loader(db, version=1, flush_rows=a.n)
        t0 = time.perf_counter()
        loader.photos(SourceData("unsplash", "", "bench", photos, {}, []))
        t1 = time.perf_counter()
        for start in range(0, a.n, 1024):  # as the refresh hands them over, batch by batch
            loader.embeddings(ids[start : start + 1024], vectors[start : start + 1024], "bench")
        loader.flush()
        t2 = time.perf_counter()
        db.after_load()
        t3 = time.perf_counter()
        assert db.count("photo_embeddings") == a.n and db.count("photos") == a.n
    print(
        f"load into chdb: {a.n} photo rows {t1 - t0:.3f} s, {a.n} x 512 vectors {t2 - t1:.3f} s, "
        f"total {t2 - t0:.3f} s; HNSW index build {t3 - t2:.2f} s"
    )


if __name__ == "__main__":
    main()
