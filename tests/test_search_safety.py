"""Hostile values in every text parameter: values are only ever bound, so each call gives a
normal result or a clear clipsql error, and every table is intact afterwards."""

from __future__ import annotations

import pandas as pd
import pytest

import searchdata
from clipsql import search
from clipsql.db import TABLES, open_store
from clipsql.errors import ClipsqlError
from clipsql.queries import get_query

N = 200
HOSTILE = [
    "'; DROP TABLE photos; --",
    "`photos`; DROP TABLE photo_embeddings; --",
    "\"double\" 'single' \\' \\\" '' \"\"",
    "a\x00b",
    "ünïcødé 写真 🙂 \u202e ÆØÅ",
    "x" * 10_000,
    "{country:String} $1 ? %s :name",
    "\\N",
]
HOSTILE_IDS = ["drop", "backticks", "quotes", "nul", "unicode", "10k", "placeholders", "null-escape"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_clip):
    opened = {}
    for engine in ("chdb", "duckdb"):
        root = tmp_path_factory.mktemp(f"safety-{engine}")
        db = open_store(root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None)
        searchdata.load(db, N, model_source=str(tiny_clip))
        opened[engine] = db
    yield opened
    for db in opened.values():
        db.close()


def snapshot(db) -> dict:
    counts = {t: db.count(t) for t in TABLES if t != "etl_runs" or _has_table(db, t)}
    probe = search.nearest(db, searchdata.vectors(N)[3], model=searchdata.MODEL, k=5)["photo_id"].tolist()
    return {"counts": counts, "probe": probe}


def _has_table(db, table: str) -> bool:
    try:
        db.count(table)
        return True
    except Exception:  # noqa: BLE001 - a table another migration adds may be absent
        return False


def _filter_call(name: str):
    """A search with the filter `name` set to the value under test."""
    return lambda db, v: search.nearest(db, searchdata.vectors(N)[1], model=searchdata.MODEL, k=3, **{name: v})


#: Every text parameter of the search API: a call that puts `value` into it.
CALLS = {
    "text.query": lambda db, v: search.text(v, 3, db=db, device="cpu"),
    "combined.query": lambda db, v: search.combined(v, 3, db=db, device="cpu"),
    "facets.query": lambda db, v: search.facets(v, n=10, db=db, device="cpu"),
    "similar.photo_id": lambda db, v: search.similar(v, 3, db=db),
    "facets.photo_id": lambda db, v: search.facets(photo_id=v, n=10, db=db),
    "crop.photo_id": lambda db, v: search.crop(box=(0, 0, 1, 1), photo_id=v, db=db, device="cpu"),
    "image.source": lambda db, v: search.image(v, 3, db=db, device="cpu"),
    "model": lambda db, v: search.similar("p0001", 3, model=v, db=db),
    **{
        f"filter.{name}": _filter_call(name)
        for name in (
            "country",
            "city",
            "photographer",
            "orientation",
            "camera_make",
            "camera_model",
            "color",
            "submitted_from",
        )
    },
    "filter.keywords_any": lambda db, v: search.nearest(
        db, searchdata.vectors(N)[1], model=searchdata.MODEL, k=3, keywords_any=[v, "k1"]
    ),
    "filter.keywords_all": lambda db, v: search.similar("p0002", 3, db=db, keywords_all=[v]),
    "duplicates.country": lambda db, v: search.duplicates(0.5, 3, db=db, country=v),
}


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_hostile_text_in_every_api_parameter(stores, engine):
    db = stores[engine]
    before = snapshot(db)
    outcomes = {}
    for param, call in CALLS.items():
        for value, label in zip(HOSTILE, HOSTILE_IDS):
            try:
                result = call(db, value)
            except ClipsqlError as exc:
                message = str(exc)
                assert message and "\n" not in message.strip()[:300], (param, label, message)
                outcomes[param, label] = type(exc).__name__
            else:
                assert isinstance(result, pd.DataFrame), (param, label)
                outcomes[param, label] = len(result)
    assert snapshot(db) == before
    # A matching filter value still filters normally after all that.
    assert len(search.nearest(db, searchdata.vectors(N)[1], model=searchdata.MODEL, k=3, country="Iceland")) == 2
    # Filters that never match return no rows, never everything.
    for label in ("drop", "backticks", "quotes", "unicode", "10k", "placeholders", "null-escape"):
        assert outcomes["filter.country", label] == 0
    assert outcomes["filter.country", "nul"] == "BadArgument"
    assert outcomes["similar.photo_id", "drop"] == "NotFound"
    assert outcomes["text.query", "drop"] == 3  # a text query is just text to embed


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
@pytest.mark.parametrize("name", ["search_photos", "similar_photos"])
def test_hostile_text_bound_straight_into_the_query_files(stores, engine, name):
    """Below the API's checks: every String and Array(String) parameter of the query file,
    bound as is (NUL included). The engine returns rows or refuses; nothing is executed."""
    db = stores[engine]
    query = get_query(name)
    base = {p: None if param.nullable else [] for p, param in query.parameters.items()}
    given = dict(model=searchdata.MODEL, k=3, offset=0, photo_id="p0001", query_vec=searchdata.vectors(N)[1].tolist())
    base.update({p: v for p, v in given.items() if p in base})
    before = snapshot(db)
    for p, param in query.parameters.items():
        if "String" not in param.type:
            continue
        for value in HOSTILE:
            values = dict(base, **{p: [value] if param.type.startswith("Array") else value})
            try:
                frame = query.run(db, **values)
            except Exception as exc:  # noqa: BLE001 - only a refusal is acceptable, see below
                # chdb refuses an unknown photo_id in similar_photos (empty scalar subquery).
                assert engine == "chdb" and name == "similar_photos" and p in ("photo_id", "model"), (p, exc)
                assert "Scalar subquery returned empty result" in str(exc)
            else:
                assert frame.empty, (p, len(frame))  # no photo, model or keyword matches these values
    assert snapshot(db) == before
