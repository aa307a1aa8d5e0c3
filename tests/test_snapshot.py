"""The search snapshot (clipsql.snapshot): chdb searches read an in-memory copy of the
vectors, and what they return is what the tables hold at that moment, whatever wrote to
them and however (through the store, by hand in SQL, a dropped table, another model)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

import searchdata
from clipsql import search, snapshot
from clipsql.db import SEARCH_SNAPSHOT_MAX_BYTES, Store, open_store
from clipsql.load import embeddings_table

N = 400


@pytest.fixture
def chdb_store(tmp_path):
    db = open_store(tmp_path)
    vecs = searchdata.load(db, N)
    yield db, vecs
    db.close()


def has_snapshot_table(db) -> bool:
    return bool(
        db.query_rows("SELECT count() FROM system.tables WHERE is_temporary AND name = 'search_snapshot'")[0][0]
    )


def from_tables(db, query, **kwargs):
    """The same search with the snapshot off: the query files that read the tables."""
    saved = db.search_snapshot_max_bytes
    db.search_snapshot_max_bytes = 0
    try:
        return search.nearest(db, query, model=searchdata.MODEL, **kwargs)
    finally:
        db.search_snapshot_max_bytes = saved


def assert_same(a, b):
    """The same photos in the same order, the same columns, distances within float32 rounding
    (the snapshot computes 1 - dot / (|e| |q|), the tables cosineDistance)."""
    assert a["photo_id"].tolist() == b["photo_id"].tolist()
    np.testing.assert_allclose(a["distance"], b["distance"], atol=1e-6)
    assert a.drop(columns="distance").equals(b.drop(columns="distance"))


def query_near(vecs, i, seed=3):
    v = vecs[i] + 0.3 * np.random.default_rng(seed).standard_normal(512).astype(np.float32) / np.sqrt(512)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"country": "Iceland"},
        {"keywords_all": ["k7", "j0"]},
        {"color": "white"},
        {"orientation": "square", "has_description": True, "max_distance": 1.05},
    ],
)
def test_chdb_searches_the_snapshot_and_gets_what_the_tables_give(chdb_store, filters):
    db, vecs = chdb_store
    assert db.search_snapshot_max_bytes == SEARCH_SNAPSHOT_MAX_BYTES
    q = query_near(vecs, 42)
    fast = search.nearest(db, q, model=searchdata.MODEL, k=15, **filters)
    assert has_snapshot_table(db) and db.search_snapshot.usable
    slow = from_tables(db, q, k=15, **filters)
    assert len(fast) > 0
    assert_same(fast, slow)


def test_a_write_through_the_store_is_seen_by_the_next_search(chdb_store):
    db, vecs = chdb_store
    q = query_near(vecs, 42)
    before = search.nearest(db, q, model=searchdata.MODEL, k=5)
    assert before["photo_id"].iloc[0] == "p0042"
    # A new photo whose vector is the query itself, written as a refresh writes it.
    photos = searchdata._table("photos", searchdata.photo_rows(N + 1)[N:], 3)
    photos = photos.append_column("source_version", pa.array(["test"]))
    photos = photos.append_column("is_deleted", pa.array(np.zeros(1, dtype=np.uint8)))
    db.upsert("photos", photos)
    db.upsert("photo_embeddings", embeddings_table([searchdata.photo_id(N)], q[None, :], searchdata.MODEL, 3))
    after = search.nearest(db, q, model=searchdata.MODEL, k=5)
    assert after["photo_id"].iloc[0] == searchdata.photo_id(N) and after["distance"].iloc[0] < 1e-5
    assert after["photo_id"].tolist()[1:] == before["photo_id"].tolist()[:4]


def test_a_write_by_hand_in_sql_is_seen_by_the_next_search(chdb_store):
    db, vecs = chdb_store
    q = query_near(vecs, 42)
    assert search.nearest(db, q, model=searchdata.MODEL, k=5)["photo_id"].iloc[0] == "p0042"
    # Straight through the client, not through a Store method: nothing in Python knows of it.
    db.client.command(
        "INSERT INTO photos SELECT * REPLACE (toUInt8(1) AS is_deleted, toUInt64(9) AS version) "
        "FROM photos FINAL WHERE photo_id = 'p0042'"
    )
    after = search.nearest(db, q, model=searchdata.MODEL, k=5)
    assert "p0042" not in after["photo_id"].tolist()
    assert after["photo_id"].tolist() == from_tables(db, q, k=5)["photo_id"].tolist()
    db.client.command(
        "ALTER TABLE photos UPDATE photo_description = 'renamed' WHERE photo_id = %(id)s SETTINGS mutations_sync = 1",
        parameters={"id": after["photo_id"].iloc[0]},
    )
    assert search.nearest(db, q, model=searchdata.MODEL, k=5)["description"].iloc[0] == "renamed"


def test_a_dropped_snapshot_table_is_rebuilt_and_the_search_still_answers(chdb_store, caplog):
    db, vecs = chdb_store
    q = query_near(vecs, 7)
    first = from_tables(db, q, k=5, country="Japan")
    search.nearest(db, q, model=searchdata.MODEL, k=5)
    db.client.command("DROP TEMPORARY TABLE search_snapshot")
    with caplog.at_level(logging.WARNING, logger="clipsql.search"):
        # A filtered search asks the snapshot table which photos pass: it notices.
        again = search.nearest(db, q, model=searchdata.MODEL, k=5, country="Japan")
    assert_same(again, first)
    assert "search snapshot is gone" in caplog.text
    third = search.nearest(db, q, model=searchdata.MODEL, k=5, country="Japan")  # rebuilt on the next search
    assert_same(third, first)
    assert has_snapshot_table(db)


def test_another_model_gets_its_own_snapshot(chdb_store):
    db, vecs = chdb_store
    other = np.roll(vecs, 1, axis=0)  # photo i gets photo i-1's vector under the second model
    ids = [searchdata.photo_id(i) for i in range(N)]
    db.upsert("photo_embeddings", embeddings_table(ids, other, "second", 1))
    db.upsert(
        "models",
        pa.table(
            {
                "model": ["second"],
                "model_source": ["second-source"],
                "dim": pa.array([512], pa.uint16()),
                "version": pa.array([1], pa.uint64()),
            }
        ),
    )
    q = vecs[42]
    assert search.nearest(db, q, model=searchdata.MODEL, k=1)["photo_id"].tolist() == ["p0042"]
    assert search.nearest(db, q, model="second", k=1)["photo_id"].tolist() == ["p0043"]
    assert db.search_snapshot.model == "second"
    assert search.nearest(db, q, model=searchdata.MODEL, k=1)["photo_id"].tolist() == ["p0042"]


def test_over_the_size_limit_the_tables_are_searched(chdb_store, caplog):
    db, vecs = chdb_store
    db.search_snapshot_max_bytes = 1000  # 400 vectors take ~820 kB
    q = query_near(vecs, 42)
    with caplog.at_level(logging.INFO, logger="clipsql.snapshot"):
        frame = search.nearest(db, q, model=searchdata.MODEL, k=5, country="Japan")
    assert "over search_snapshot_max_bytes" in caplog.text
    assert not has_snapshot_table(db)
    assert frame["photo_id"].tolist() == from_tables(db, q, k=5, country="Japan")["photo_id"].tolist()


def test_duckdb_stores_do_not_use_one(tmp_path):
    with open_store(tmp_path, duckdb=str(tmp_path / "s.duckdb")) as db:
        searchdata.load(db, 50)
        assert db.search_snapshot_max_bytes == 0
        assert snapshot.use_snapshot(db, searchdata.MODEL) is None


def test_building_the_snapshot_does_not_make_remembered_answers_stale(chdb_store):
    # The snapshot is a session table, not data: building or dropping it must not cost the
    # next search a model lookup query (Store.remember keeps it until a real write).
    db, vecs = chdb_store
    search.nearest(db, vecs[1], model=searchdata.MODEL, k=3)  # remembers the model
    generation = Store._generation
    snapshot.discard(db)
    search.nearest(db, vecs[2], model=searchdata.MODEL, k=3)  # rebuilds the snapshot
    assert has_snapshot_table(db)
    assert Store._generation == generation


def test_an_unchanged_store_is_checked_without_a_query(chdb_store, monkeypatch):
    # chdb: the token is the tables' part directories (os.listdir), not a query of system.parts.
    db, vecs = chdb_store
    search.nearest(db, vecs[3], model=searchdata.MODEL, k=3)
    ran: list[str] = []
    monkeypatch.setattr(type(db), "_query_arrow", lambda self, sql, p: ran.append(sql) or pa.table({}))
    monkeypatch.setattr(type(db), "_query_df", lambda self, sql, p: ran.append(sql))
    assert db.tables_state(snapshot.SNAPSHOT_TABLES) == db.search_snapshot.state
    assert snapshot.use_snapshot(db, searchdata.MODEL) is db.search_snapshot
    assert ran == []


def test_a_filter_answer_is_kept_only_while_the_tables_are_unchanged(chdb_store):
    # The photos a filter lets through are kept with the snapshot; a change by hand to the
    # filtered column is seen by the next search with the same filter.
    db, vecs = chdb_store
    q = query_near(vecs, 42)
    first = search.nearest(db, q, model=searchdata.MODEL, k=3, country="Iceland")
    assert search.nearest(db, q, model=searchdata.MODEL, k=3, country="Iceland").equals(first)
    db.client.command(
        "INSERT INTO photos SELECT * REPLACE ('Iceland' AS photo_location_country, toUInt64(9) AS version) "
        "FROM photos FINAL WHERE photo_id = 'p0042'"
    )
    after = search.nearest(db, q, model=searchdata.MODEL, k=3, country="Iceland")
    assert after["photo_id"].iloc[0] == "p0042" and "p0042" not in first["photo_id"].tolist()
    assert_same(after, from_tables(db, q, k=3, country="Iceland"))
