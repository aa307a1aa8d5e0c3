"""A synthetic store for the search tests: photos with every filterable column, keywords,
colors and random unit vectors, loaded the same way into chdb and DuckDB.

Photo i (photo_id 'p0000'...) has, by design:
- country 'Iceland' for i % 100 == 7 (1% of the rows), else Japan/Peru/Kenya by i % 3;
- city f'city{i % 7}', photographer f'user{i % 5}', featured when i % 3 == 0;
- orientation by i % 4: 0 portrait (3000x4000), 1 square (3000x3000), else landscape (4000x3000);
- submitted at 23:30 UTC on 2020-01-01 + i days; views 1000 * i, downloads 10 * i;
- description None when i % 6 == 0, '' when i % 6 == 1, else f'photo {i}';
- camera make Canon / NIKON CORPORATION / SONY / None by i % 4, model f'M{i % 3}';
- keywords f'k{i % 10}' and f'j{i % 7}', plus 'rare' when i % 100 == 7;
- colors black and white, black dominant when i even;
- deleted (is_deleted = 1) when i in DELETED.
Vectors are random unit vectors, except the planted near-duplicates (with n >= 2000): photo
1997 has exactly the vector of 1996, and 1999 is 1998 plus a little noise.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from clipsql.load import embeddings_table
from clipsql.sources import arrow_schema

MODEL = "tiny"
DELETED = (5, 15)
BASE_DAY = dt.datetime(2020, 1, 1, 23, 30, tzinfo=dt.timezone.utc)


def photo_id(i: int) -> str:
    return f"p{i:04d}"


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, 512)).astype(np.float32)
    if n >= 2000:
        out[1997] = out[1996]
        out[1999] = out[1998] + 0.05 * rng.standard_normal(512).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def photo_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        w, h = [(3000, 4000), (3000, 3000), (4000, 3000), (4000, 3000)][i % 4]
        rows.append(
            {
                "photo_id": photo_id(i),
                "photo_url": f"https://unsplash.com/photos/{photo_id(i)}",
                "photo_image_url": f"http://127.0.0.1:9/{photo_id(i)}.jpg",
                "photo_submitted_at": BASE_DAY + dt.timedelta(days=i),
                "photo_featured": i % 3 == 0,
                "photo_width": w,
                "photo_height": h,
                "photo_aspect_ratio": w / h,
                "photo_description": None if i % 6 == 0 else "" if i % 6 == 1 else f"photo {i}",
                "photographer_username": f"user{i % 5}",
                "exif_camera_make": ["Canon", "NIKON CORPORATION", "SONY", None][i % 4],
                "exif_camera_model": f"M{i % 3}",
                "photo_location_country": "Iceland" if i % 100 == 7 else ["Japan", "Peru", "Kenya"][i % 3],
                "photo_location_city": f"city{i % 7}",
                "stats_views": 1000 * i,
                "stats_downloads": 10 * i,
            }
        )
    return rows


def keyword_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        for kw in {f"k{i % 10}", f"j{i % 7}"} | ({"rare"} if i % 100 == 7 else set()):
            rows.append({"photo_id": photo_id(i), "keyword": kw})
    return rows


def color_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        black = 0.6 if i % 2 == 0 else 0.2
        rows.append({"photo_id": photo_id(i), "hex": "#000000", "keyword": "black", "coverage": black})
        rows.append({"photo_id": photo_id(i), "hex": "#ffffff", "keyword": "white", "coverage": 0.8 - black})
    return rows


def _table(name: str, rows: list[dict], version: int) -> pa.Table:
    schema = arrow_schema(name)
    table = pa.Table.from_pylist(rows, schema=pa.schema([f for f in schema if f.name in rows[0]]))
    return table.append_column("version", pa.array(np.full(len(rows), version, dtype=np.uint64)))


def load(db, n: int = 2000, model_source: str = "tiny-model", seed: int = 0) -> np.ndarray:
    """Fill `db` (an open, empty store) with n photos; returns their (n, 512) vectors."""
    rows = photo_rows(n)
    photos = _table("photos", rows, 1)
    photos = photos.append_column("source_version", pa.array(["test"] * n))
    photos = photos.append_column("is_deleted", pa.array(np.zeros(n, dtype=np.uint8)))
    db.upsert("photos", photos)
    deleted = photos.filter(pa.array([i in DELETED for i in range(n)]))
    deleted = deleted.set_column(
        deleted.schema.get_field_index("is_deleted"), "is_deleted", pa.array(np.ones(deleted.num_rows, dtype=np.uint8))
    )
    deleted = deleted.set_column(
        deleted.schema.get_field_index("version"), "version", pa.array(np.full(deleted.num_rows, 2, dtype=np.uint64))
    )
    db.upsert("photos", deleted)
    db.upsert("keywords", _table("keywords", keyword_rows(n), 1))
    db.upsert("colors", _table("colors", color_rows(n), 1))
    vecs = vectors(n, seed)
    db.upsert("photo_embeddings", embeddings_table([photo_id(i) for i in range(n)], vecs, MODEL, 1))
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
    if db.engine != "duckdb":
        db.after_load()
    return vecs
