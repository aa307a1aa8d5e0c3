"""Incremental refreshes on chdb and DuckDB: a source that grows, changes and shrinks; a new
model beside the old; retry rules for failed downloads; the run log and `clipsql status`."""

import datetime as dt

import pandas as pd
import pytest

from clipsql import search
from clipsql.cli import main
from clipsql.db import open_store
from clipsql.download import DownloadOptions, image_path
from clipsql.errors import BadArgument
from clipsql.load import Loader
from clipsql.refresh import MAX_RETRY_BACKOFF_S, refresh, retry_due
from etl_support import photo_row, rows, write_release

FAST = DownloadOptions(workers=4, retries=0, read_timeout_s=2.0)


def test_a_source_that_grows_changes_and_shrinks(server, tmp_path, tiny_clip, backend):
    go = dict(model=str(tiny_clip), download=FAST, progress=False, chunk_size=4, **backend)
    release = tmp_path / "release"

    first = refresh(write_release(release, server.url, range(10)), **go)
    assert first.stage("embed").ok == 10 and first.deleted == 0
    vectors_before = rows(backend, "SELECT photo_id, version FROM photo_embeddings FINAL ORDER BY photo_id")

    # Grows by 4 photos; photo0003's metadata changes (a newer release with new stats_views).
    hits = server.total()
    grown = refresh(write_release(release, server.url, range(14), views={3: 999_999}), **go)
    assert server.total() - hits == 4  # only the new photos are fetched
    assert (grown.stage("embed").ok, grown.stage("embed").skipped) == (4, 10)
    assert (
        rows(backend, "SELECT stats_views FROM photos FINAL WHERE photo_id = 'photo0003'")["stats_views"][0] == 999_999
    )
    after = rows(backend, "SELECT photo_id, version FROM photo_embeddings FINAL ORDER BY photo_id")
    assert after[after.photo_id.isin(vectors_before.photo_id)].values.tolist() == vectors_before.values.tolist()
    assert rows(backend, "SELECT count() AS n FROM keywords FINAL")["n"][0] == 28

    # Shrinks: photo0000 and photo0001 are gone (2 of 14, over the default share of 10%, so
    # allowed explicitly). They are flagged, kept, and not found by search.
    shrunk = refresh(write_release(release, server.url, range(2, 14)), max_delete_fraction=0.15, **go)
    assert shrunk.deleted == 2 and shrunk.stage("embed").ok == 0
    flagged = rows(backend, "SELECT photo_id FROM photos FINAL WHERE is_deleted = 1 ORDER BY photo_id")
    assert flagged["photo_id"].tolist() == ["photo0000", "photo0001"]
    assert rows(backend, "SELECT count() AS n FROM photo_embeddings FINAL")["n"][0] == 14
    found = search.text("a photo", k=50, **backend)
    assert len(found) == 12 and not set(found["photo_id"]) & {"photo0000", "photo0001"}

    # --limit reads part of the source only: nothing more is flagged deleted.
    assert refresh(release, limit=3, **go).deleted == 0
    assert rows(backend, "SELECT count() AS n FROM photos FINAL WHERE is_deleted = 1")["n"][0] == 2

    # photo0001 comes back: unflagged, not embedded again. photo0000 stays gone and is purged.
    back = refresh(write_release(release, server.url, range(1, 14)), purge=True, **go)
    assert back.purged == 1 and back.stage("embed").ok == 0 and back.stage("download").ok == 0
    assert rows(backend, "SELECT count() AS n FROM photos FINAL WHERE is_deleted = 1")["n"][0] == 0
    for table in ("photos", "photo_embeddings", "download_status", "keywords"):
        n = rows(backend, f"SELECT count() AS n FROM {table} FINAL WHERE photo_id = 'photo0000'")["n"][0]
        assert n == 0, table
    assert not image_path(backend["store"] / "images", "photo0000").exists()
    assert image_path(backend["store"] / "images", "photo0001").exists()
    assert rows(backend, "SELECT count() AS n FROM photos FINAL")["n"][0] == 13

    with pytest.raises(BadArgument, match="purge"):
        refresh(release, purge=True, limit=5, **go)


def test_a_new_model_embeds_everything_beside_the_old_one_and_becomes_the_default(server, tmp_path, tiny_clip, backend):
    go = dict(model=str(tiny_clip), download=FAST, progress=False, **backend)
    release = write_release(tmp_path / "release", server.url, range(6))
    refresh(release, **go)
    hits = server.total()
    second = refresh(release, model_name="tiny-b", **go)
    assert server.total() == hits  # the images are cached
    assert second.stage("embed").ok == 6
    per_model = rows(backend, "SELECT model, count() AS n FROM photo_embeddings FINAL GROUP BY model ORDER BY model")
    assert per_model.values.tolist() == sorted([[tiny_clip.name, 6], ["tiny-b", 6]])
    # A trial run of another model over 2 photos leaves it incomplete: not the search default.
    assert refresh(release, model_name="tiny-c", limit=2, **go).stage("embed").ok == 2
    with open_store(**backend) as db:
        assert search.resolve_model(db)[0] == "tiny-b"
        # A model whose first pass has not finished (vectors, no completed_at) is not the default.
        loader = Loader(db, version=2**62)
        loader.model("half-done", str(tiny_clip), 512)
        loader.embeddings(
            ["photo0000"],
            rows(backend, "SELECT embedding FROM photo_embeddings FINAL LIMIT 1").embedding.map(list).tolist(),
            "half-done",
        )
        loader.flush()
        assert search.resolve_model(db)[0] == "tiny-b"
        assert search.resolve_model(db, "half-done")[0] == "half-done"


def test_retry_rule_backs_off_exponentially_and_never_retries_permanent_failures():
    t = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    s = dt.timedelta(seconds=1)
    assert not retry_due(False, 1, t, t + 59 * s, base_s=60)
    assert retry_due(False, 1, t, t + 60 * s, base_s=60)
    assert not retry_due(False, 3, t, t + 239 * s, base_s=60)  # 60 * 2**2
    assert retry_due(False, 3, t, t + 240 * s, base_s=60)
    assert not retry_due(False, 40, t, t + (MAX_RETRY_BACKOFF_S - 1) * s, base_s=60)
    assert retry_due(False, 40, t, t + MAX_RETRY_BACKOFF_S * s, base_s=60)  # capped
    assert not retry_due(True, 1, t, t + dt.timedelta(days=365), base_s=60)
    assert retry_due(True, 1, t, t, base_s=60, retry_failed=True)


def test_failed_photos_are_recorded_and_retried_by_the_rules(server, tmp_path, tiny_clip, backend):
    u = server.url
    release = write_release(
        tmp_path / "release",
        u,
        range(3),
        keywords=False,
        extra_rows=[
            dict(photo_row(u, 0), photo_id="gone", photo_image_url=f"{u}/missing/a.jpg"),
            dict(photo_row(u, 0), photo_id="busy", photo_image_url=f"{u}/busy/a.jpg"),
            dict(photo_row(u, 0), photo_id="once", photo_image_url=f"{u}/once/a.jpg"),
        ],
    )
    go = dict(model=str(tiny_clip), download=FAST, progress=False, **backend)
    sql = (
        "SELECT photo_id, status, coalesce(reason, '') AS reason, permanent, attempts "
        "FROM download_status FINAL ORDER BY photo_id"
    )

    before = dt.datetime.now(dt.timezone.utc)
    first = refresh(release, **go)
    after = dt.datetime.now(dt.timezone.utc)
    assert first.failures_by_reason == {"http_4xx": 1, "http_5xx": 2}
    assert rows(backend, sql).values.tolist() == [
        ["busy", "failed", "http_5xx", 0, 1],
        ["gone", "failed", "http_4xx", 1, 1],
        ["once", "failed", "http_5xx", 0, 1],
        ["photo0000", "ok", "", 0, 1],
        ["photo0001", "ok", "", 0, 1],
        ["photo0002", "ok", "", 0, 1],
    ]
    last = rows(backend, "SELECT last_attempt_at FROM download_status FINAL WHERE photo_id = 'busy'")[
        "last_attempt_at"
    ][0]
    last = pd.Timestamp(last)
    last = last.tz_localize("UTC") if last.tzinfo is None else last
    assert before - dt.timedelta(seconds=1) <= last <= after + dt.timedelta(seconds=1)

    # Within the backoff: nothing is requested again.
    hits = server.total()
    second = refresh(release, **go)
    assert server.total() == hits
    assert second.failures_by_reason == {"skipped_permanent_failure": 1, "waiting_to_retry": 2}

    # Backoff passed (base 0): transient failures are retried, the 404 is not.
    third = refresh(release, retry_backoff_s=0, **go)
    assert server.hits["/busy/a.jpg"] == 2 and server.hits["/once/a.jpg"] == 2 and server.hits["/missing/a.jpg"] == 1
    assert third.stage("embed").ok == 1
    assert rows(backend, sql).values.tolist()[:3] == [
        ["busy", "failed", "http_5xx", 0, 2],
        ["gone", "failed", "http_4xx", 1, 1],
        ["once", "ok", "", 0, 2],
    ]

    # --retry-failed: everything failed is tried now, the permanent failure included.
    refresh(release, retry_failed=True, **go)
    assert server.hits["/missing/a.jpg"] == 2 and server.hits["/busy/a.jpg"] == 3 and server.hits["/once/a.jpg"] == 2
    assert rows(backend, sql).values.tolist()[:2] == [
        ["busy", "failed", "http_5xx", 0, 3],
        ["gone", "failed", "http_4xx", 1, 2],
    ]


def store_args(backend):
    args = ["--store", str(backend["store"])]
    return args + (["--duckdb", backend["duckdb"]] if backend["duckdb"] else [])


def test_run_log_and_status_output(server, tmp_path, tiny_clip, backend, capsys):
    u = server.url
    release = write_release(
        tmp_path / "release",
        u,
        range(4),
        keywords=False,
        extra_rows=[dict(photo_row(u, 0), photo_id="gone", photo_image_url=f"{u}/missing/a.jpg")],
    )
    common = ["--model", str(tiny_clip), "--retries", "0", "-q"] + store_args(backend)
    assert main(["refresh", "--source", str(release)] + common) == 0
    assert main(["refresh", "--source", str(tmp_path / "no-such-release")] + common) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("clipsql: error: source") and "does not exist" in err

    runs = rows(
        backend,
        "SELECT status, error, source_ok, download_ok, download_failed, embed_ok, model, "
        "source_version, ended_at FROM etl_runs FINAL ORDER BY started_at",
    )
    assert runs["status"].tolist() == ["ok", "failed"]
    assert runs["source_ok"].tolist()[0] == 5 and runs["download_ok"][0] == 4 and runs["download_failed"][0] == 1
    assert runs["embed_ok"][0] == 4 and runs["model"][0] == tiny_clip.name and runs["source_version"][0]
    assert "SourceError" in runs["error"][1] and runs["ended_at"].notna().all()

    assert main(["status", "--runs", "5"] + store_args(backend)) == 0
    out = capsys.readouterr().out
    assert "last runs:" in out and " ok " in out and " failed " in out and "SourceError" in out
    table_lines = out.split("tables:")[1].split("models:")[0]
    assert " photos     5" in table_lines and "photo_embeddings     4" in table_lines
    assert "download_status     5" in table_lines and "etl_runs     2" in table_lines
    assert tiny_clip.name in out.split("models:")[1]
    failures = out.split("download failures by reason:")[1]
    assert "http_4xx" in failures and "yes" in failures

    assert (
        main(
            ["status"]
            + store_args(
                dict(
                    backend,
                    store=tmp_path / "nowhere",
                    duckdb=(str(tmp_path / "nowhere.duckdb") if backend["duckdb"] else None),
                )
            )
        )
        == 2
    )
    assert "no " in capsys.readouterr().err
