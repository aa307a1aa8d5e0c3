"""Engines behind one protocol (issue 11, part 1): one registry, one URL form, capabilities
instead of engine checks, errors told by code.

Real engines: chdb and DuckDB stores are opened and written; the server engine is pointed at
a loopback HTTP listener that records what clickhouse-connect sent (no ClickHouse server can
run on these machines).
"""

from __future__ import annotations

import base64
import http.server
import importlib
import inspect
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from clipsql import engines
from clipsql.db import open_store, store_root
from clipsql.engines import ENGINES, StoreTarget, resolve_target
from clipsql.engines.base import Store
from clipsql.errors import BadArgument, StoreError

#: The protocol every engine's Store implements.
PROTOCOL = (
    "translate",
    "_connect",
    "_disconnect",
    "_execute",
    "_query_arrow",
    "_insert",
    "_after_load",
    "is_missing_table",
)


@pytest.fixture(autouse=True)
def _no_backend_environment(monkeypatch):
    for name in ("CLIPSQL_STORE", "CLICKHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_an_engine_module_holds_what_the_registry_needs(name):
    module = engines.engine_module(name)
    assert module.SCHEMES and all(s.isascii() and s == s.lower() for s in module.SCHEMES)
    assert isinstance(module.CAPABILITIES, engines.Capabilities)
    assert callable(module.open_target) and callable(module.exists) and callable(module.holder)
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, Store) and c.__module__ == module.__name__ and getattr(c, "engine", None) == name
    ]
    assert len(classes) == 1, f"{name}: one Store subclass named for the engine"
    store_class = classes[0]
    assert store_class.capabilities is module.CAPABILITIES
    for method in PROTOCOL:  # implemented here or in a Store class of another engine it extends
        assert getattr(store_class, method) is not getattr(Store, method), f"{name} lacks {method}"


def test_url_forms_and_the_first_waves_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = Path("clipsql-store")
    assert resolve_target() == StoreTarget("chdb", "clipsql-store", default)
    assert resolve_target("/data/s") == StoreTarget("chdb", "/data/s", Path("/data/s"))
    assert resolve_target("chdb:///data/s") == StoreTarget("chdb", "/data/s", Path("/data/s"))
    assert resolve_target("chdb:rel/s") == StoreTarget("chdb", "rel/s", Path("rel/s"))
    assert resolve_target("duckdb:///data/x.duckdb") == StoreTarget("duckdb", "/data/x.duckdb", default)
    assert resolve_target("duckdb::memory:") == StoreTarget("duckdb", ":memory:", default)
    assert resolve_target("x.duckdb") == StoreTarget("duckdb", "x.duckdb", default)
    url = "https://u:secret@ch.example:8443/photos"
    assert resolve_target(url) == StoreTarget("clickhouse", url, default)
    assert "secret" not in resolve_target(url).description
    # The first wave's options: store is then the image cache directory.
    assert resolve_target("cache", duckdb="x.db") == StoreTarget("duckdb", "x.db", Path("cache"))
    assert resolve_target("cache", clickhouse_url=url) == StoreTarget("clickhouse", url, Path("cache"))
    monkeypatch.setenv("CLICKHOUSE_URL", url)
    assert resolve_target().engine == "clickhouse"
    assert resolve_target(duckdb="x.db").engine == "duckdb"  # a DuckDB file wins over the environment
    monkeypatch.delenv("CLICKHOUSE_URL")
    monkeypatch.setenv("CLIPSQL_STORE", "duckdb:///data/env.duckdb")
    assert resolve_target() == StoreTarget("duckdb", "/data/env.duckdb", default)
    assert store_root() == default


@pytest.mark.parametrize(
    "store, options, message",
    [
        ("chdb:///s", {"duckdb": "x.db"}, "choose one backend"),
        ("https://h/db", {"clickhouse_url": "http://h/db"}, "choose one backend"),
        (None, {"duckdb": "x.db", "clickhouse_url": "http://h/db"}, "choose one backend"),
        ("chdb://", {}, "names no path"),
    ],
)
def test_two_backends_or_an_empty_url_are_refused(store, options, message):
    with pytest.raises(BadArgument, match=message):
        resolve_target(store, **options)


def _roundtrip(db) -> int:
    db.upsert(
        "models",
        pa.table(
            {
                "model": ["m"],
                "model_source": ["s"],
                "dim": pa.array([4], pa.uint16()),
                "version": pa.array([1], pa.uint64()),
            }
        ),
    )
    return db.count("models")


def test_stores_open_from_urls_and_answer_by_capabilities(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store(f"chdb://{tmp_path / 'c'}") as db:
        assert (db.engine, db.dialect) == ("chdb", "clickhouse")
        assert db.capabilities.needs_final and db.capabilities.vector_index and db.capabilities.one_process
        assert db.root == tmp_path / "c" and (tmp_path / "c" / "chdb").is_dir()
        assert _roundtrip(db) == 1
        with pytest.raises(Exception) as raised:
            db.query_df("SELECT * FROM no_such_table")
        assert db.is_missing_table(raised.value)
        with pytest.raises(Exception) as raised:
            db.query_df("SELECT throwIf(1)")
        assert not db.is_missing_table(raised.value)
    with open_store(f"duckdb:///{tmp_path / 'd.duckdb'}") as db:
        assert (db.engine, db.dialect) == ("duckdb", "duckdb")
        assert not db.capabilities.needs_final and not db.capabilities.vector_index
        assert db.capabilities.text_function == "in_process" and db.after_load() is False
        assert db.root == Path("clipsql-store") and (tmp_path / "d.duckdb").is_file()
        assert _roundtrip(db) == 1
        with pytest.raises(Exception) as raised:
            db.query_df("SELECT * FROM no_such_table")
        assert db.is_missing_table(raised.value)
        with pytest.raises(Exception) as raised:
            db.query_df("SELECT 1/'x'")
        assert not db.is_missing_table(raised.value)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = b"Code: 516. DB::Exception: no such user (AUTHENTICATION_FAILED)"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_a_server_url_is_parsed_by_clickhouse_connect_and_its_password_never_shown(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        url = f"http://ana:s3cret@127.0.0.1:{port}/photos"
        with pytest.raises(StoreError) as raised:
            open_store(tmp_path, clickhouse_url=url)
        assert f"127.0.0.1:{port}" in str(raised.value) and "s3cret" not in str(raised.value)
        with pytest.raises(StoreError):
            open_store(url)  # the URL form: same engine, same answer
    finally:
        server.shutdown()
        server.server_close()
    # clickhouse-connect sent the URL's user and password (HTTP basic auth)
    credentials = {base64.b64decode(auth.split()[1]).decode() for _, auth in _Recorder.seen if auth}
    assert credentials == {"ana:s3cret"}


def test_no_module_above_the_engines_asks_which_engine_it_has():
    """Decisions are made on capabilities; the engine's name is only shown."""
    root = Path(importlib.import_module("clipsql").__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if "engines" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in (
            "isinstance(db, ClickHouseStore)",
            "isinstance(db, DuckDBStore)",
            '.engine == "',
            '.dialect == "',
            '.dialect != "',
            '" in str(exc)',
        ):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []


@pytest.mark.parametrize("scheme", ["chdb", "duckdb"])
def test_the_cli_refreshes_searches_and_reads_status_through_a_store_url(
    scheme, image_server, tmp_path, tiny_clip, capsys, monkeypatch
):
    from clipsql.cli import main

    from conftest import make_release

    monkeypatch.chdir(tmp_path)  # the image cache of a DuckDB URL is ./clipsql-store
    url = f"chdb://{tmp_path / 'store'}" if scheme == "chdb" else f"duckdb://{tmp_path / 'photos.duckdb'}"
    release = make_release(tmp_path / "release", image_server.url, 5)
    code = main(
        ["refresh", "--source", str(release), "--store", url, "--model", str(tiny_clip), "--retries", "0", "-q"]
    )
    assert code == 0, capsys.readouterr().err
    assert main(["search", "text", "a red car", "--store", url, "-k", "3", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert out.count('"photo_id"') == 3
    assert main(["status", "--store", url]) == 0
    out = capsys.readouterr().out
    assert ("chdb:" if scheme == "chdb" else "duckdb:") in out
    cache = tmp_path / ("store" if scheme == "chdb" else "clipsql-store") / "images"
    assert len(list(cache.iterdir())) == 5
    # A URL and an alias together stop before any work, exit 2, one line.
    assert main(["status", "--store", url, "--duckdb", str(tmp_path / "other.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "choose one backend" in err and len(err.strip().splitlines()) == 1
