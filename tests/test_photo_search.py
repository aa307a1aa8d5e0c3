"""photo_search (issue 13, part 1): one relation an analyst searches by hand, with no FINAL,
join or subquery, that gives exactly the rows of the API's search for the same filters, on
chdb and DuckDB (the same text through the dialect layer)."""

from __future__ import annotations

import numpy as np
import pytest

import searchdata
from clipsql import search, udf
from clipsql.db import open_store

N = 300
TEXT = "surfing at dawn"
#: (the WHERE of the hand-written query, the same filters as the API's keywords)
FILTER_SETS = [
    ("", {}),
    ("AND country = 'Japan'", {"country": "Japan"}),
    ("AND has(keywords, 'rare')", {"keywords_any": ["rare"]}),
    ("AND country = 'Iceland' AND has(keywords, 'rare')", {"country": "Iceland", "keywords_all": ["rare"]}),
    ("AND orientation = 'portrait' AND color = 'black'", {"orientation": "portrait", "color": "black"}),
    ("AND camera_make = 'Canon' AND featured", {"camera_make": "Canon", "featured": True}),
    ("AND has(keywords, 'k1') AND has(keywords, 'j1')", {"keywords_all": ["k1", "j1"]}),
    ("AND city = 'city3' AND views >= 100000", {"city": "city3", "min_views": 100_000}),
]


@pytest.fixture(scope="module", params=["chdb", "duckdb"])
def db(request, tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp(f"photo-search-{request.param}")
    store = open_store(root, duckdb=str(root / "s.duckdb") if request.param == "duckdb" else None)
    searchdata.load(store, N, model_source=str(tiny_clip))
    udf.register_text_embedding(store, device="cpu")
    yield store
    store.close()


@pytest.mark.parametrize("where, filters", FILTER_SETS)
def test_the_hand_written_query_returns_the_api_rows(db, where, filters):
    by_hand = db.query_clickhouse(
        f"""
        SELECT photo_id, description, cosineDistance(embedding, clip_text_embedding('{TEXT}')) AS distance
        FROM photo_search
        WHERE model = '{searchdata.MODEL}' {where}
        ORDER BY distance
        LIMIT 10
        """
    )
    api = search.text(TEXT, 10, db=db, device="cpu", **filters)
    assert len(api) > 0
    assert by_hand["photo_id"].tolist() == api["photo_id"].tolist()
    np.testing.assert_allclose(by_hand["distance"].astype(float), api["distance"], atol=1e-5)
    assert by_hand["description"].fillna("").tolist() == api["description"].fillna("").tolist()


def test_deleted_photos_are_not_in_it_and_each_row_is_flat(db):
    rows = db.query_clickhouse("SELECT * FROM photo_search WHERE model = 'tiny' ORDER BY photo_id")
    assert len(rows) == N - len(searchdata.DELETED)
    assert not set(rows["photo_id"]) & {searchdata.photo_id(i) for i in searchdata.DELETED}
    first = rows.set_index("photo_id").loc["p0002"]
    assert (first["country"], first["orientation"], first["color"]) == ("Kenya", "landscape", "black")
    assert sorted(first["keywords"]) == ["j2", "k2"] and len(first["embedding"]) == 512


def test_clipsql_sql_runs_the_hand_written_query_on_the_store(db, capsys):
    """`clipsql sql "SELECT ..."` runs a statement on chdb or DuckDB, the text function
    registered, and prints the same rows as the API."""
    import json

    from clipsql.cli import main

    options = ["--store", str(db.root)] + (["--duckdb", db.target.location] if db.engine == "duckdb" else [])
    statement = (
        f"SELECT photo_id, cosineDistance(embedding, clip_text_embedding('{TEXT}')) AS distance "
        f"FROM photo_search WHERE model = '{searchdata.MODEL}' AND country = 'Japan' ORDER BY distance LIMIT 5"
    )
    db.release()  # the command opens the store in this process, as a console user's would
    assert main(["sql", statement, "--format", "json", "--device", "cpu", "--wait", "30", *options]) == 0
    rows = json.loads(capsys.readouterr().out)
    api = search.text(TEXT, 5, db=db, device="cpu", country="Japan")
    assert [r["photo_id"] for r in rows] == api["photo_id"].tolist()
    assert main(["sql", "SELECT count() AS n FROM photo_search", "--format", "csv", *options]) == 0
    assert capsys.readouterr().out.split() == ["n", str(N - len(searchdata.DELETED))]
