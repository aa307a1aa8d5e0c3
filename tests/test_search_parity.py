"""Every query file in queries/ runs on chdb and on DuckDB over the same data and gives the
same answer: the same top-k photo_ids in the same order (ties broken by photo_id) for the
ranked queries, the same rows for the others. The files that take filters run with the
conditions of the filter registry in place (clipsql.search.sql.run_query), so every
condition is run on both engines and over the search snapshot."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

import searchdata
from clipsql.db import open_store
from clipsql.queries import load_queries
from clipsql.search.filters import FILTERS, Filters
from clipsql.search.sql import run_query
from clipsql.udf import register_text_embedding

N = 2000
QUERIES = load_queries()


def _query_vector(seed: int) -> list[float]:
    v = searchdata.vectors(N)[37] + 0.6 * searchdata.vectors(1, seed)[0]
    return (v / np.linalg.norm(v)).tolist()


FILTER_SETS = [
    {},
    {"country": "Iceland"},
    {"orientation": "portrait", "featured": False, "min_views": 200_000},
    {"keywords_any": ["k1", "k2"], "keywords_all": ["j3"], "color": "black"},
    {
        "submitted_from": dt.date(2020, 2, 1),
        "submitted_to": dt.date(2021, 6, 30),
        "has_description": True,
        "camera_make": "Canon",
        "min_aspect_ratio": 0.5,
        "max_aspect_ratio": 0.8,
    },
    {
        "city": "city1",
        "photographer": "user2",
        "min_width": 3000,
        "min_height": 3000,
        "min_downloads": 100,
        "camera_model": "M1",
    },
]

#: Parameter sets per query file (the others get defaults by type, see `default_value`).
PARAMS = {
    "search_photos": [
        dict(query_vec=_query_vector(1), model="tiny", k=10, offset=0, max_distance=None, **f) for f in FILTER_SETS
    ]
    + [dict(query_vec=_query_vector(2), model="tiny", k=7, offset=5, max_distance=1.0, country="Japan")]
    # no filter, the first page and one deep in the ranking
    + [dict(query_vec=_query_vector(6), model="tiny", k=10, offset=o, max_distance=None) for o in (0, 990)],
    "similar_photos": [
        dict(photo_id="p0037", model="tiny", k=10, offset=0, max_distance=None, **f) for f in FILTER_SETS
    ]
    + [dict(photo_id="p1996", model="tiny", k=3, offset=0, max_distance=None)],
    "facets": [
        dict(query_vec=_query_vector(3), model="tiny", n=200, per_facet=5, max_distance=None, **f)
        for f in FILTER_SETS[:4]
    ],
    "near_duplicates": [
        dict(model="tiny", max_distance=0.01, k=10, offset=0),
        dict(model="tiny", max_distance=0.97, k=20, offset=3, photographer="user1", city="city2"),
    ],
    "nearest_photos": [dict(query_vec=_query_vector(4), model="tiny", k=10)],
    "model_lookup": [dict(model="tiny"), dict(model="tiny-model"), dict(model="nope")],
    "search_photos_ann": [
        dict(
            ann_table="photo_embeddings_ann_512",
            query_vec=_query_vector(5),
            model="tiny",
            candidates=2000,
            k=10,
            offset=0,
            max_distance=None,
        )
    ],
    "photo_vectors": [dict(model="tiny", photo_ids=["p0001", "p0002", "p0005", "nope"])],
    # the same model with two query vectors: partly overlapping top-k lists
    "model_overlap": [
        dict(model_a="tiny", query_a=_query_vector(7), model_b="tiny", query_b=_query_vector(8), k=20),
        dict(model_a="tiny", query_a=_query_vector(7), model_b="tiny", query_b=_query_vector(7), k=5),
    ],
    # a sample smaller than the store: both engines must pick the same photos (MD5 order)
    "neighbour_distances": [dict(sample=150, k=5), dict(sample=5000, k=1)],
    # Needs clip_text_embedding (registered in `stores`); the tiny CLIP embeds the text.
    "search_text_sql": [
        dict(query="a dog on a beach", model="tiny", k=10),
        dict(query="ünïcode café 🏄", model="tiny", k=3),
    ],
}
#: The snapshot's photo list takes the filter sets of search_photos (its filters, not its paging).
PARAMS["snapshot_photo_ids"] = [
    {n: v for n, v in values.items() if n == "model" or n in FILTERS} for values in PARAMS["search_photos"]
]
#: ClickHouse-only query files (a vector-index table; DuckDB has none) and the file whose
#: rows they give on DuckDB: with candidates >= the store's photos, the exact search's.
CLICKHOUSE_ONLY = {"search_photos_ann": "search_photos"}
#: Query files whose rows are ranked photos: compare the photo_id order and distances.
RANKED = {
    "search_photos",
    "similar_photos",
    "nearest_photos",
    "search_photos_ann",
    "search_text_sql",
}


def default_value(name: str, ptype: str):
    if ptype.startswith("Nullable("):
        return None
    if ptype == "Array(Float32)":
        return _query_vector(9)
    if ptype.startswith("Array("):
        return [] if name.startswith("keywords_") else ["p0001", "p0002", "p0005"]  # [] = filter off
    if ptype == "String":
        return searchdata.MODEL if name == "model" else "p0001"
    if ptype.startswith(("UInt", "Int")):
        return 10
    if ptype.startswith("Float"):
        return 0.5
    if ptype == "Bool":
        return True
    if ptype == "Date":
        return dt.date(2020, 1, 2)
    raise AssertionError(f"no default for a {ptype} parameter ({name}): add one to tests/test_search_parity.py")


def param_sets(name: str) -> list[dict]:
    """The values each case of query `name` runs with: its parameters (given or by type)
    and the filters given, by name (for the query files that take filters)."""
    query = QUERIES[name]
    sets = PARAMS.get(name) or [{}]
    out = []
    for given in sets:
        values = {p: given[p] if p in given else default_value(p, param.type) for p, param in query.parameters.items()}
        filters = {f: v for f, v in given.items() if f in FILTERS}
        assert not filters or query.takes_filters, name
        out.append({**values, **filters})
    return out


def run(name: str, db, values: dict):
    """The rows of query `name` on `db`: the filters among `values` in place of its
    '-- @filters' line, as the search API runs it."""
    filters = Filters.of(**{f: v for f, v in values.items() if f in FILTERS})
    return run_query(db, name, filters, **{p: v for p, v in values.items() if p not in FILTERS})


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_clip):
    opened = {}
    for engine in ("chdb", "duckdb"):
        root = tmp_path_factory.mktemp(f"parity-{engine}")
        db = open_store(root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None)
        searchdata.load(db, N)
        register_text_embedding(db, searchdata.MODEL, source=tiny_clip, device="cpu")  # for search_text_sql
        # for the snapshot queries
        db.run_script("build_search_snapshot", {"model": searchdata.MODEL}, folder="session")
        db.after_load()  # chdb: photo_embeddings_ann_512, for search_photos_ann
        opened[engine] = db
    yield opened
    for db in opened.values():
        db.close()


def _normal(value):
    """A comparable form of one cell (engines differ in Python types, not in values)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.ndarray, list, tuple)):
        return tuple(round(float(x), 5) for x in value)
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 5)
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except (TypeError, ValueError):
            return str(value)
    return str(value)


CASES = [(name, i) for name in sorted(QUERIES) for i in range(len(param_sets(name)))]


@pytest.mark.parametrize("name, case", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_query_gives_the_same_answer_on_chdb_and_duckdb(stores, name, case):
    values = param_sets(name)[case]
    ch = run(name, stores["chdb"], values)
    if name in CLICKHOUSE_ONLY:
        exact = QUERIES[CLICKHOUSE_ONLY[name]]
        duck = run(exact.name, stores["duckdb"], {p: v for p, v in values.items() if p in exact.parameters})
    else:
        duck = run(name, stores["duckdb"], values)
    assert list(ch.columns) == list(duck.columns)
    if name in RANKED:
        assert ch["photo_id"].tolist() == duck["photo_id"].tolist()
        assert len(ch) > 0
        np.testing.assert_allclose(ch["distance"].astype(float), duck["distance"].astype(float), atol=2e-5)
        assert len(ch) == values["k"]  # every filter set here matches more than k photos
        return
    rows = lambda frame: [tuple(_normal(v) for v in row) for row in frame.itertuples(index=False)]  # noqa: E731
    if name in ("near_duplicates", "facets"):  # ordered results
        assert rows(ch) == rows(duck)
    else:
        assert sorted(rows(ch), key=repr) == sorted(rows(duck), key=repr)


def test_the_cases_exercise_every_query_file_and_return_rows(stores):
    assert {n for n, _ in CASES} == set(QUERIES)
    for name in ("search_photos", "similar_photos", "facets", "near_duplicates"):
        assert not run(name, stores["duckdb"], param_sets(name)[0]).empty, name
