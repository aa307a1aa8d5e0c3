"""Shards of a release for schedulers that fan out: `clipsql refresh --shard I/N` on N tasks,
then one `clipsql refresh --finish`, leave the store as one unsharded run does; a shard owns
the photos with cityHash64(photo_id) % N = I, as ClickHouse computes it, and flags nothing
deleted. Real engines (chdb and DuckDB), a loopback image server, a tiny random CLIP."""

from __future__ import annotations

import random

import pytest

from clipsql import refresh
from clipsql.cli import main
from clipsql.download import DownloadOptions
from clipsql.errors import BadArgument
from clipsql.shards import MAX_SHARDS, Shard, city_hash64, parse_shard
from etl_support import assert_same_tables, rows, snapshot, write_release

FAST = DownloadOptions(workers=8, retries=0, backoff_s=0.01, read_timeout_s=5.0)


def test_city_hash64_is_clickhouse_city_hash64(tmp_path):
    """Every length branch of CityHash64 v1.0.2 (0-16, 17-32, 33-64, over 64 bytes, several
    64-byte rounds), ASCII and multi-byte UTF-8, against chdb's own cityHash64."""
    rng = random.Random(16)
    alphabet = "abcXYZ019-_./é€漢"
    strings = ["".join(rng.choice(alphabet) for _ in range(n)) for n in range(0, 301)]
    strings += ["", "a", "photo0001", "-2IBUMom1I", "2023/iceland/beach.jpg", "x" * 1000]
    from clipsql.db import open_store

    with open_store(store=tmp_path / "store") as db:
        got = db.query_clickhouse(
            "SELECT s, cityHash64(s) AS h FROM (SELECT arrayJoin({strings:Array(String)}) AS s)", {"strings": strings}
        )
    assert got["s"].tolist() == strings
    assert [int(h) for h in got["h"]] == [city_hash64(s) for s in strings]
    assert city_hash64(b"photo0001") == city_hash64("photo0001")


@pytest.mark.parametrize(
    "text, message",
    [
        ("3/3", "I must be from 0 to N - 1 = 2, got 3"),
        ("5/2", "I must be from 0 to N - 1 = 1, got 5"),
        ("0/0", "N must be from 1"),
        (f"0/{MAX_SHARDS + 1}", "N must be from 1"),
        ("-1/3", "must be I/N"),
        ("1", "must be I/N"),
        ("a/b", "must be I/N"),
        ("1/3/4", "must be I/N"),
        ("1.0/3", "must be I/N"),
        ("", "must be I/N"),
    ],
)
def test_bad_shards_are_refused_before_any_work(server, tmp_path, tiny_clip, text, message):
    release = write_release(tmp_path / "release", server.url, range(3), keywords=False)
    with pytest.raises(BadArgument, match=message):
        parse_shard(text)
    with pytest.raises(BadArgument, match=message):
        refresh(release, model=str(tiny_clip), store=tmp_path / "store", shard=text, progress=False)
    assert main(["refresh", "--source", str(release), "--store", str(tmp_path / "store"), f"--shard={text}"]) == 2
    assert server.total() == 0 and not (tmp_path / "store").exists()


def test_shard_combinations_that_make_no_sense_are_refused(server, tmp_path, tiny_clip):
    release = write_release(tmp_path / "release", server.url, range(3), keywords=False)
    store = tmp_path / "store"
    with pytest.raises(BadArgument, match="shard and finish exclude each other"):
        refresh(release, model=str(tiny_clip), store=store, shard="0/2", finish=True, progress=False)
    with pytest.raises(BadArgument, match="finish needs the whole source"):
        refresh(release, model=str(tiny_clip), store=store, finish=True, limit=2, progress=False)
    with pytest.raises(BadArgument, match="executor must be local, ray or ray://host:port"):
        refresh(release, model=str(tiny_clip), store=store, executor="dask", progress=False)
    assert server.total() == 0 and not store.exists()
    assert parse_shard(None) is None and parse_shard(" 2 / 4 ") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"


def run(release, tiny_clip, backend, **options):
    return refresh(release, model=str(tiny_clip), download=FAST, progress=False, chunk_size=7, **backend, **options)


def test_three_shards_then_finish_leave_the_store_of_one_unsharded_run(server, tmp_path, tiny_clip, backend):
    """Night 1 loads photos 0-29 (and a 404) unsharded into two stores. Night 2's release
    loses photos 0-1 and gains 30-35: store A runs it once, store B as shards 0/3, 1/3, 2/3
    and a finish. Every table ends the same (rows compared, not run ids or times)."""
    missing = [{"photo_id": "gone404", "photo_image_url": f"{server.url}/missing/gone404.jpg"}]
    night1 = write_release(tmp_path / "night1", server.url, range(30), extra_rows=missing)
    night2 = write_release(tmp_path / "night2", server.url, range(2, 36), extra_rows=missing)
    a, b = (
        dict(store=tmp_path / name, duckdb=str(tmp_path / f"{name}.duckdb") if backend["duckdb"] else None)
        for name in ("a", "b")
    )
    run(night1, tiny_clip, a)
    run(night1, tiny_clip, b)
    one = run(night2, tiny_clip, a)
    assert one.deleted == 2 and one.stage("embed").ok == 6

    owned = {i: {f"photo{n:04d}" for n in range(2, 36) if city_hash64(f"photo{n:04d}") % 3 == i} for i in range(3)}
    assert all(owned.values())  # each shard owns some of the photos (else the test proves little)
    embedded = 0
    for i in range(3):
        summary = run(night2, tiny_clip, b, shard=f"{i}/3")
        assert summary.shard == f"{i}/3" and summary.deleted == 0 and summary.purged == 0
        assert summary.stage("source").ok == len(owned[i] | ({"gone404"} if city_hash64("gone404") % 3 == i else set()))
        embedded += summary.stage("embed").ok
        # A shard flags nothing deleted: photos 0 and 1, gone from the source, owned by some
        # shard or none, are still live; the model is not completed by a shard.
        flags = rows(b, "SELECT photo_id, is_deleted FROM photos FINAL ORDER BY photo_id")
        assert flags["is_deleted"].astype(int).sum() == 0 and {"photo0000", "photo0001"} <= set(flags["photo_id"])
    assert embedded == 6
    done = rows(b, "SELECT photo_id FROM photo_embeddings FINAL")["photo_id"]
    assert set(done) == {f"photo{n:04d}" for n in range(36)}
    shard_runs = rows(b, "SELECT status FROM etl_runs FINAL ORDER BY version")["status"].tolist()
    assert shard_runs[-3:] == ["ok", "ok", "ok"]

    final = run(night2, tiny_clip, b, finish=True)
    assert final.finish and final.deleted == 2 and final.stage("download").ok == final.stage("embed").ok == 0
    assert "finish" in final.format()
    assert_same_tables(snapshot(b), snapshot(a))


def test_a_shard_owns_the_photos_clickhouse_puts_in_it(server, tmp_path, tiny_clip):
    """On chdb the shard's photos are exactly what `cityHash64(photo_id) % 4 = 1` selects, and a
    shard run writes no other photo."""
    ids = [f"photo{n:04d}" for n in range(40)]
    release = write_release(tmp_path / "release", server.url, range(40), keywords=False)
    backend = dict(store=tmp_path / "store")
    summary = run(release, tiny_clip, backend, shard="1/4")
    assert "shard 1/4" in summary.format()
    with_sql = rows(
        backend,
        f"SELECT photo_id FROM (SELECT arrayJoin([{', '.join(repr(i) for i in ids)}]) AS photo_id) "
        "WHERE cityHash64(photo_id) % 4 = 1 ORDER BY photo_id",
    )["photo_id"].tolist()
    assert 0 < len(with_sql) < 40
    for table in ("photos", "download_status", "photo_embeddings"):
        stored = rows(backend, f"SELECT photo_id FROM {table} FINAL ORDER BY photo_id")["photo_id"].tolist()
        assert stored == with_sql, table
    assert server.total() == len(with_sql)
    assert rows(backend, "SELECT count() AS n FROM keywords")["n"].iloc[0] == 0  # the optional files: the finish's
