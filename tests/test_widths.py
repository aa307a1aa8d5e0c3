"""Any width, several models side by side (issue 13, part 3), and stores made before it
upgrading without re-embedding (part 8).

One store holds three models of different widths (512, 768 and 64 floats); each is searched
exactly (the API, the CLI and a hand query over photo_search give numpy's ranking), each has
an approximate index of its own width where the engine has one (chdb), and a query vector of
another width is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from clipsql import refresh, search
from clipsql.db import open_store
from clipsql.errors import BadArgument, ModelError
from conftest import build_tiny_clip
from etl_support import run_cli

WIDTHS = (512, 768, 64)


@pytest.fixture(scope="module")
def width_models(tmp_path_factory) -> dict[int, str]:
    """A tiny random CLIP checkpoint per width: {width: directory}."""
    root = tmp_path_factory.mktemp("width-models")
    return {dim: str(build_tiny_clip(root / f"clip-{dim}", dim=dim, seed=dim)) for dim in WIDTHS}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of 9 distinct pictures."""
    path = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (40 + i, 60, 3), dtype=np.uint8)).save(path / f"p{i}.png")
    return path


def _backend(tmp_path, engine: str) -> dict:
    return dict(store=tmp_path / "store", duckdb=str(tmp_path / "s.duckdb") if engine == "duckdb" else None)


def _exact_ranking(db, model: str, query: np.ndarray) -> list[str]:
    """photo_ids by cosine distance to `query` over the model's stored vectors (numpy), ties by id."""
    frame = db.query_clickhouse(
        "SELECT photo_id, embedding FROM photo_embeddings FINAL WHERE model = {model:String}", {"model": model}
    )
    vectors = np.stack([np.asarray(v, np.float32) for v in frame["embedding"]])
    distance = 1 - vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    return [frame["photo_id"][i] for i in np.lexsort((frame["photo_id"].to_numpy(), distance))]


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_models_of_three_widths_are_stored_and_searched_exactly_side_by_side(tmp_path, folder, width_models, engine):
    backend = _backend(tmp_path, engine)
    for dim, path in width_models.items():
        refresh(folder, model=path, model_name=f"clip-{dim}", progress=False, **backend)
    rng = np.random.default_rng(1)
    with open_store(**backend) as db:
        stored = db.query_clickhouse("SELECT model, dim FROM models FINAL ORDER BY dim")
        assert stored.values.tolist() == [["clip-64", 64], ["clip-512", 512], ["clip-768", 768]]
        for dim in WIDTHS:
            label = f"clip-{dim}"
            query = rng.standard_normal(dim).astype(np.float32)
            expected = _exact_ranking(db, label, query)
            assert search.nearest(db, query, model=label, k=9)["photo_id"].tolist() == expected
            by_hand = db.query_clickhouse(
                "SELECT photo_id, cosineDistance(embedding, {q:Array(Float32)}) AS distance FROM photo_search "
                "WHERE model = {model:String} ORDER BY distance, photo_id LIMIT 9",
                {"q": query.tolist(), "model": label},
            )
            assert by_hand["photo_id"].tolist() == expected
            # A text query is embedded by the model's own checkpoint, so it has the model's width.
            assert len(search.text("a photo", 3, db=db, model=label, device="cpu")) == 3
            with pytest.raises(BadArgument, match=rf"has {dim + 1} values, but model '{label}' stores {dim}-dim"):
                search.nearest(db, np.ones(dim + 1), model=label)
        if engine == "chdb":
            # An approximate index of each width, in a table of its own, holding every vector of it.
            indexes = db.query_clickhouse(
                "SELECT table, type_full FROM system.data_skipping_indices "
                "WHERE database = currentDatabase() AND type = 'vector_similarity' ORDER BY table"
            )
            assert indexes.values.tolist() == [
                [f"photo_embeddings_ann_{dim}", f"vector_similarity('hnsw', 'cosineDistance', {dim})"]
                for dim in sorted(WIDTHS, key=str)
            ]
            for dim in WIDTHS:
                assert db.query_clickhouse(f"SELECT count() AS n FROM photo_embeddings_ann_{dim} FINAL")["n"][0] == 9
        for dim in WIDTHS:  # the index path (rerank='exact', no filter) agrees on a store this small
            query = rng.standard_normal(dim).astype(np.float32)
            ann = search.nearest(db, query, model=f"clip-{dim}", k=5, rerank="exact")
            assert ann["photo_id"].tolist() == _exact_ranking(db, f"clip-{dim}", query)[:5]


def test_the_cli_searches_a_model_of_another_width(tmp_path, folder, width_models):
    store = tmp_path / "store"
    for dim in (512, 768):
        refresh(folder, model=width_models[dim], model_name=f"clip-{dim}", store=store, progress=False)
    out = run_cli(
        *("search", "text", "a photo", "--model", "clip-768", "-k", "4"),
        *("--store", str(store), "--format", "json", "--device", "cpu"),
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 4
    with open_store(store) as db:
        vector = search.text("a photo", 4, db=db, model="clip-768", device="cpu")
    assert [r["photo_id"] for r in rows] == vector["photo_id"].tolist()


def test_a_label_keeps_its_width(tmp_path, folder, width_models):
    store = tmp_path / "store"
    refresh(folder, model=width_models[512], model_name="clip", store=store, progress=False)
    with open_store(store) as db:
        before = db.query_clickhouse("SELECT count() AS n, max(version) AS v FROM photo_embeddings")
    with pytest.raises(ModelError, match=r"'clip' holds 512-dim vectors.*gives 768-dim ones"):
        refresh(folder, model=width_models[768], model_name="clip", store=store, progress=False)
    with open_store(store) as db:
        after = db.query_clickhouse("SELECT count() AS n, max(version) AS v FROM photo_embeddings")
        assert after.values.tolist() == before.values.tolist()
        assert db.query_clickhouse("SELECT dim FROM models FINAL")["dim"].tolist() == [512]


#: How stores were made before any width was allowed: the CHECK (and, on ClickHouse, the HNSW
#: index) that fixed the width at 512 (sql/*/001_core.sql before migration 005), and no
#: embed_precision column (migration 006).
_OLD_FORM = {
    "chdb": [
        "ALTER TABLE photo_embeddings DROP COLUMN embed_precision",
        "ALTER TABLE photo_embeddings DROP CONSTRAINT embedding_not_empty",
        "ALTER TABLE photo_embeddings ADD CONSTRAINT embedding_length CHECK length(embedding) = 512",
        "ALTER TABLE photo_embeddings ADD INDEX embedding_hnsw embedding "
        "TYPE vector_similarity('hnsw', 'cosineDistance', 512) GRANULARITY 100000000",
        "DELETE FROM schema_migrations WHERE version >= 5",
    ],
    "duckdb": [
        "CREATE TABLE old_embeddings (photo_id VARCHAR, model VARCHAR, "
        "embedding FLOAT[] NOT NULL CHECK (len(embedding) = 512), "
        "loaded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp, version UBIGINT NOT NULL, "
        "PRIMARY KEY (model, photo_id))",
        "INSERT INTO old_embeddings SELECT photo_id, model, embedding, loaded_at, version FROM photo_embeddings",
        "DROP TABLE photo_embeddings",
        "ALTER TABLE old_embeddings RENAME TO photo_embeddings",
        "DELETE FROM schema_migrations WHERE version >= 5",
    ],
}


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_a_store_made_for_512_only_upgrades_without_reembedding(tmp_path, folder, width_models, engine):
    backend = _backend(tmp_path, engine)
    refresh(folder, model=width_models[512], model_name="clip-512", progress=False, **backend)
    query = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    with open_store(**backend) as db:
        for statement in _OLD_FORM[engine]:
            db.command(statement)
        vectors = db.query_clickhouse("SELECT photo_id, embedding, version FROM photo_embeddings ORDER BY photo_id")
        results = search.nearest(db, query, model="clip-512", k=9)
        wide = pa.table(
            {
                "photo_id": ["p0.png"],
                "model": ["clip-768"],
                "embedding": pa.array([[0.5] * 768], pa.list_(pa.float32())),
                "version": pa.array([1], pa.uint64()),
            }
        )
        with pytest.raises(Exception, match="(?i)constraint|check"):  # it really is the old form
            db.upsert("photo_embeddings", wide)
    # Opening it applies the migrations: the vectors stay as they were, bit for bit.
    with open_store(**backend) as db:
        assert db.query_clickhouse("SELECT max(version) AS v FROM schema_migrations")["v"][0] >= 5
        after = db.query_clickhouse("SELECT photo_id, embedding, version FROM photo_embeddings ORDER BY photo_id")
        assert after["photo_id"].tolist() == vectors["photo_id"].tolist()
        assert after["version"].tolist() == vectors["version"].tolist()
        for old, new in zip(vectors["embedding"], after["embedding"]):
            assert np.array_equal(np.asarray(old, np.float32), np.asarray(new, np.float32))
        upgraded = search.nearest(db, query, model="clip-512", k=9)
        assert upgraded["photo_id"].tolist() == results["photo_id"].tolist()
    again = refresh(folder, model=width_models[512], model_name="clip-512", progress=False, **backend)
    assert again.stage("embed").ok == 0  # the 512 vectors were not computed again
    with open_store(**backend) as db:
        if engine == "chdb":  # even a refresh with nothing to embed builds the missing index
            assert db.query_clickhouse("SELECT count() AS n FROM photo_embeddings_ann_512 FINAL")["n"][0] == 9
        assert search.nearest(db, query, model="clip-512", k=9, rerank="exact")["photo_id"].tolist() == (
            results["photo_id"].tolist()
        )
    summary = refresh(folder, model=width_models[768], model_name="clip-768", progress=False, **backend)
    assert summary.stage("embed").ok == 9
    with open_store(**backend) as db:
        assert len(search.nearest(db, np.ones(768), model="clip-768", k=9)) == 9
