"""The main job end to end on real engines (chdb and DuckDB) with a tiny random CLIP."""

import numpy as np
import pytest

from clipsql import refresh, search
from clipsql.db import open_store
from clipsql.download import DownloadOptions
from clipsql.errors import BadArgument, ModelError
from clipsql.load import Loader
from conftest import make_release

TABLES = ("photos", "photo_embeddings", "download_status", "models")
FAST = DownloadOptions(workers=8, retries=1, backoff_s=0.01, read_timeout_s=2.0)


@pytest.fixture(params=["chdb", "duckdb"])
def backend(request, tmp_path):
    store = tmp_path / "store"
    return dict(store=store, duckdb=str(tmp_path / "clipsql.duckdb") if request.param == "duckdb" else None)


def counts(backend):
    with open_store(**backend) as db:
        return {t: db.count(t) for t in TABLES}


def test_refresh_loads_every_photo_or_its_failure_and_a_rerun_changes_nothing(
    image_server, tmp_path, tiny_clip, backend
):
    u = image_server.url
    release = make_release(
        tmp_path / "release",
        u,
        12,
        extra_rows=[
            {"photo_id": "broken", "photo_image_url": f"{u}/truncated.jpg"},
            {"photo_id": "gone", "photo_image_url": f"{u}/missing.jpg"},
        ],
    )
    summary = refresh(release / "photos.tsv000", model=str(tiny_clip), download=FAST, progress=False, **backend)
    assert summary.stage("download").ok == 12 and summary.stage("download").failed == 2
    assert summary.stage("embed").ok == 12
    assert summary.failures_by_reason == {"undecodable": 1, "http_4xx": 1}
    first = counts(backend)
    assert first == {"photos": 14, "photo_embeddings": 12, "download_status": 14, "models": 1}
    with open_store(**backend) as db:
        status = db.query_clickhouse(
            "SELECT photo_id, status, reason, http_status FROM download_status FINAL "
            "WHERE status = 'failed' ORDER BY photo_id"
        )
        vectors = db.query_clickhouse("SELECT embedding FROM photo_embeddings FINAL")["embedding"]
    assert status.values.tolist() == [["broken", "failed", "undecodable", 200], ["gone", "failed", "http_4xx", 404]]
    norms = np.linalg.norm(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    hits = sum(image_server.hits.values())
    again = refresh(release / "photos.tsv000", model=str(tiny_clip), download=FAST, progress=False, **backend)
    assert sum(image_server.hits.values()) == hits  # nothing downloaded, the failures not retried
    assert again.stage("embed").ok == 0 and again.stage("embed").skipped == 12
    assert counts(backend) == first


def test_text_search_returns_photos_with_description_and_url(image_server, tmp_path, tiny_clip, backend):
    release = make_release(tmp_path / "release", image_server.url, 6)
    refresh(release, model=str(tiny_clip), download=FAST, progress=False, **backend)
    frame = search.text("a dog on a beach", k=4, **backend)
    assert list(frame.columns) == ["photo_id", "distance", "description", "photo_url", "photo_image_url"]
    assert len(frame) == 4
    assert frame["distance"].is_monotonic_increasing
    assert frame["description"].str.startswith("test photo number").all()


def test_nearest_query_returns_the_planted_neighbour(tmp_path, backend):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"v{i:03d}" for i in range(300)]
    import pyarrow as pa
    from clipsql.sources import arrow_schema, SourceData

    photos = pa.table({f.name: pa.nulls(300, f.type) for f in arrow_schema("photos")})
    photos = photos.set_column(0, "photo_id", pa.array(ids))
    with open_store(**backend) as db:
        loader = Loader(db, version=1)
        loader.photos(SourceData("unsplash", "", "v1", photos, {}, []))
        loader.embeddings(ids, vectors, "planted")
        loader.flush()
        loader.model("planted", "planted", 512)
        query = vectors[137] + 0.05 * rng.standard_normal(512).astype(np.float32)
        query /= np.linalg.norm(query)
        frame = search.nearest(db, query, model="planted", k=5)
    expected = np.argsort(1 - vectors @ query, kind="stable")[:5]
    assert frame["photo_id"].tolist()[0] == "v137"
    assert frame["photo_id"].tolist() == [ids[i] for i in expected]
    np.testing.assert_allclose(frame["distance"], (1 - vectors @ query)[expected], atol=1e-5)


def test_bad_arguments_stop_before_any_work(image_server, tmp_path, tiny_clip):
    release = make_release(tmp_path / "release", image_server.url, 3)
    with pytest.raises(BadArgument, match="batch_size"):
        refresh(release, model=str(tiny_clip), batch_size=0, store=tmp_path / "s", progress=False)
    with pytest.raises(ModelError):
        refresh(release, model=str(tmp_path / "missing-model"), store=tmp_path / "s", progress=False)
    assert image_server.hits == {}
    assert not (tmp_path / "s").exists()
