"""The ClickHouse cluster store (issue 16, part 3): its DDL, generated from sql/clickhouse/ by
clipsql.engines.cluster, golden-tested and parsed; the named queries over it; the store URL's
`cluster=` option. No ClickHouse server can run here, so:

- the DDL of a cluster `clipsql` (database `unsplash`) is compared with
  tests/golden/cluster_ddl.sql; regenerate it after a change to sql/clickhouse/ with

      .venv/bin/python -c "from clipsql.engines.cluster import cluster_ddl; print(cluster_ddl('clipsql', 'unsplash'), end='')" > tests/golden/cluster_ddl.sql

  and read the diff;
- every statement a cluster store runs (the DDL, the cluster forms of the refresh's and the
  approximate index's scripts) is parsed by chdb's `EXPLAIN AST`, ON CLUSTER and the
  Replicated engine included;
- chdb also *runs* the DDL as a one-shard cluster (a `<remote_servers>` entry naming itself),
  with two things taken out that need a server: the ON CLUSTER clause (chdb runs no distributed
  DDL queue) and the Replicated form of the engine (no Keeper). Every named query then runs over
  the Distributed tables and answers what it answers over the single-node tables. One shard
  cannot show the sharding itself: that is argued in docs/stores.md, not shown;
- the server store is driven with a recording stand-in for clickhouse-connect's client: the
  statements it sends when first opened are the golden DDL.
"""

from __future__ import annotations

import re
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pytest

from clipsql.db import open_store
from clipsql.engines import cluster
from clipsql.engines.cluster import (
    CLUSTER_SETTINGS,
    ann_template,
    check_cluster,
    cluster_ddl,
    cluster_statements,
    fill_width,
    split_cluster,
    store_layout,
)
from clipsql.errors import BadArgument, StoreError
from clipsql.queries import load_queries
from clipsql.resources import sql_dir
from clipsql.sqlfiles import PARAMETER_RE, split_statements

GOLDEN = Path(__file__).parent / "golden" / "cluster_ddl.sql"
CLUSTER, DATABASE = "clipsql", "unsplash"
#: The engine clause every replicated table of the DDL has.
REPLICATED_RE = re.compile(
    r"ENGINE = ReplicatedReplacingMergeTree\('(?P<path>[^']*)', '(?P<replica>[^']*)'(?:, \w+)?\)"
)
DISTRIBUTED_RE = re.compile(
    r"\ACREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<name>\w+) ON CLUSTER (?P<cluster>\w+) AS (?P=db)\.(?P<source>\w+)\n"
    r"ENGINE = Distributed\((?P<c2>\w+), (?P<db2>\w+), (?P<local>\w+)(?:, (?P<key>.+))?\)\Z"
)
CREATE_RE = re.compile(
    r"\ACREATE (?P<kind>TABLE|VIEW) IF NOT EXISTS (?P<db>\w+)\.(?P<name>\w+) ON CLUSTER (?P<cluster>\w+)"
)
#: The session's temporary table that session/build_search_snapshot.sql makes from photo_search.
SESSION_TABLES = {"search_snapshot"}
#: Queries that need the server's text function (clip_text_embedding): parsed, not run here.
NEEDS_TEXT_FUNCTION = {"search_text_sql"}


def ddl_statements() -> list[str]:
    return split_statements(GOLDEN.read_text(encoding="utf-8"))


def dummy_value(name: str, type_: str) -> str:
    """A value of a query parameter, as clickhouse-client passes it (text), fitting the rows
    `cluster_engine` loads (4-wide vectors of the model 'tiny')."""
    if type_ == "Identifier":
        return "photo_embeddings_ann_4"
    if type_.startswith("Nullable("):
        return "\\N"
    if type_ == "Array(Float32)":
        return {"query_b": "[0,1,0,0]"}.get(name, "[1,0,0,0]")
    if type_ == "Array(String)":
        return "['p1','p2']"
    if type_ == "Bool":
        return "false"
    if type_.startswith("Float"):
        return "2"
    if type_.startswith(("UInt", "Int")):
        return {"offset": "0", "min_vectors": "0", "run_version": "0", "k_1": "1", "k_2": "2"}.get(name, "5")
    return {"photo_id": "p1", "eval_set": "e1", "query_kind": "plain", "query": "a red car"}.get(name, "tiny")


def parameters_of(statement: str, **given: str) -> dict[str, str]:
    return {m[1]: given.get(m[1], dummy_value(m[1], m[2])) for m in PARAMETER_RE.finditer(statement)}


def one_shard_form(statement: str) -> str:
    """A cluster statement as a one-shard cluster inside chdb runs it: no ON CLUSTER (no
    distributed DDL queue), ReplacingMergeTree for its Replicated form (no Keeper)."""

    def plain(m: re.Match[str]) -> str:
        version = re.search(r", (\w+)\)\Z", m[0])
        return f"ENGINE = ReplacingMergeTree({version[1] if version else ''})"

    return REPLICATED_RE.sub(plain, statement.replace(f" ON CLUSTER {CLUSTER}", ""))


# Rows loaded into both layouts: three photos (p1 in two versions), 4-wide vectors of 'tiny',
# one eval set; fixed timestamps so the two answers can be compared as text.
ROWS = [
    "INSERT INTO photos (photo_id, photo_description, photo_width, photo_height, photo_location_country, "
    "source_version, is_deleted, version) VALUES ('p1', 'one', 10, 5, 'Iceland', 'v', 0, 1), "
    "('p2', 'two', 5, 10, 'Japan', 'v', 0, 1), ('p3', 'three', 5, 5, 'Japan', 'v', 0, 1), "
    "('p1', 'one again', 10, 5, 'Iceland', 'v', 0, 2), ('p4', 'gone', 5, 5, 'Chile', 'v', 0, 1), "
    "('p4', 'gone', 5, 5, 'Chile', 'v', 1, 2)",
    "INSERT INTO photo_embeddings (photo_id, model, embedding, loaded_at, version) VALUES "
    "('p1', 'tiny', [1, 0, 0, 0], '2024-01-01', 1), ('p2', 'tiny', [0, 1, 0, 0], '2024-01-01', 1), "
    "('p3', 'tiny', [0.9, 0.1, 0, 0], '2024-01-01', 1), ('p4', 'tiny', [0, 0, 1, 0], '2024-01-01', 1), "
    "('p3', 'tiny', [0.8, 0.2, 0, 0], '2024-01-01', 2)",
    "INSERT INTO models (model, model_source, dim, version, completed_at) VALUES ('tiny', 'tiny-src', 4, 1, '2024-01-02')",
    "INSERT INTO keywords (photo_id, keyword, version) VALUES ('p1', 'beach', 1), ('p2', 'city', 1), ('p3', 'beach', 1)",
    "INSERT INTO colors (photo_id, hex, keyword, coverage, version) VALUES ('p1', '#fff', 'white', 0.5, 1), "
    "('p1', '#000', 'black', 0.2, 1), ('p2', '#00f', 'blue', 0.9, 1)",
    "INSERT INTO download_status (photo_id, url, status, reason, bytes, permanent, attempts, last_attempt_at, version) "
    "VALUES ('p1', 'u1', 'ok', NULL, 1, 0, 1, '2024-01-01', 1), ('p2', 'u2', 'ok', NULL, 1, 0, 1, '2024-01-01', 1), "
    "('p3', 'u3', 'ok', NULL, 1, 0, 1, '2024-01-01', 1), ('p5', 'u5', 'failed', 'http_error', 0, 1, 3, '2024-01-01', 1)",
    "INSERT INTO etl_runs (run_id, started_at, status, host, pid, model, model_source, source, source_version, "
    "source_ok, source_failed, source_s, download_ok, download_failed, download_skipped, download_s, embed_ok, "
    "embed_failed, embed_skipped, embed_s, load_rows, load_s, index_s, deleted, purged, seconds, version) VALUES "
    "('r1', '2024-01-01', 'ok', 'h', 1, 'tiny', 'tiny-src', 's', 'v', 3, 0, 1, 3, 1, 0, 1, 3, 0, 0, 1, 9, 1, 1, 0, 0, 5, 2)",
    "INSERT INTO eval_sets (eval_set, images_dir, captions_file, captions_format, model, model_source, dim, images, "
    "images_failed, captions, loaded_at, version) VALUES ('e1', 'd', 'c', 'flickr', 'tiny', 'tiny-src', 4, 2, 0, 2, "
    "'2024-01-01', 7)",
    "INSERT INTO eval_images (eval_set, image_id, width, height, orientation, status, version) VALUES "
    "('e1', 'a.jpg', 10, 5, 'landscape', 'ok', 7), ('e1', 'b.jpg', 5, 10, 'portrait', 'ok', 7)",
    "INSERT INTO eval_captions (eval_set, caption_id, image_id, caption, line, version) VALUES "
    "('e1', 0, 'a.jpg', 'a', 1, 7), ('e1', 1, 'b.jpg', 'b', 2, 7)",
    "INSERT INTO eval_image_embeddings (eval_set, image_id, model, embedding, version) VALUES "
    "('e1', 'a.jpg', 'tiny', [1, 0, 0, 0], 7), ('e1', 'b.jpg', 'tiny', [0, 1, 0, 0], 7)",
    "INSERT INTO eval_caption_embeddings (eval_set, query_kind, caption_id, model, embedding, version) VALUES "
    "('e1', 'plain', 0, 'tiny', [0.9, 0.1, 0, 0], 7), ('e1', 'plain', 1, 'tiny', [0.9, 0.1, 0, 0], 7)",
]


@pytest.fixture(scope="module")
def cluster_engine(tmp_path_factory):
    """A chdb session holding two databases with the same rows: `unsplash`, the cluster DDL run
    as a one-shard cluster (see :func:`one_shard_form`), and `single`, the single-node DDL."""
    from chdb import session

    root = tmp_path_factory.mktemp("cluster")
    config = root / "config.xml"
    # The shard is this engine itself: a replica on localhost at the engine's own tcp_port is
    # local, so the Distributed tables read and write the local tables in process.
    config.write_text(
        "<clickhouse><tcp_port>9000</tcp_port><remote_servers><clipsql><shard><replica><host>localhost</host>"
        "<port>9000</port></replica></shard></clipsql></remote_servers></clickhouse>\n",
        encoding="utf-8",
    )
    engine = session.Session(f"{root / 'chdb'}?config-file={config}")
    try:
        engine.query(f"CREATE DATABASE {DATABASE}")
        engine.query("CREATE DATABASE single")
        engine.query("SET mutations_sync = 2")
        for name, ddl in (("single", _single_node_ddl()), (DATABASE, cluster_ddl(CLUSTER, DATABASE, widths=(4,)))):
            engine.query(f"USE {name}")
            for statement in split_statements(ddl):
                engine.query(one_shard_form(statement) if name == DATABASE else statement)
        for name in ("single", DATABASE):
            engine.query(f"USE {name}")
            # What a cluster store's client sets for its session (CLUSTER_SETTINGS).
            for setting, value in CLUSTER_SETTINGS.items():
                engine.query(f"SET {setting} = {value!r}")
            for row in ROWS:
                engine.query(row)
        yield engine
    finally:
        engine.close()


def _single_node_ddl() -> str:
    files = [sql_dir() / "clickhouse" / "schema_migrations.sql"]
    files += sorted((sql_dir() / "clickhouse").glob("[0-9][0-9][0-9]_*.sql"))
    return "\n".join(p.read_text(encoding="utf-8") for p in files) + "\n" + fill_width(ann_template(), 4)


def test_the_cluster_ddl_matches_its_golden_file():
    assert cluster_ddl(CLUSTER, DATABASE) == GOLDEN.read_text(encoding="utf-8")


def test_every_statement_a_cluster_store_runs_parses(cluster_engine):
    """The DDL, and the cluster forms of the scripts the refresh and the approximate index run
    (etl/, vector_index/), all parse: `EXPLAIN AST` checks the syntax of ON CLUSTER, the
    Replicated engine's arguments, DELETE ... ON CLUSTER, without running anything."""
    statements = ddl_statements()
    for folder in ("etl", "vector_index"):
        # create_ann_table.sql is in the DDL above, for vectors 512 wide.
        for path in sorted(
            p for p in (sql_dir() / "clickhouse" / folder).glob("*.sql") if "<dim>" not in p.read_text()
        ):
            for statement in split_statements(path.read_text(encoding="utf-8")):
                given = {"ann_table": "photo_embeddings_ann_512"}
                statements += cluster_statements(statement, CLUSTER, DATABASE, given, strict=True)
    kinds = {" ".join(s.split(" ", 2)[:2]) for s in statements if " ON CLUSTER " in s}
    assert kinds == {"CREATE TABLE", "CREATE VIEW", "ALTER TABLE", "DELETE FROM"}
    for statement in statements:
        ast = str(cluster_engine.query(f"EXPLAIN AST {statement}", "TSVRaw", params=parameters_of(statement)))
        assert ast.strip(), statement


def test_local_tables_are_replicated_with_the_shard_and_replica_macros():
    layout = store_layout()
    replicated = {}
    for statement in ddl_statements():
        created = CREATE_RE.match(statement)
        assert created or statement.startswith("ALTER TABLE"), statement
        if created:
            assert (created["db"], created["cluster"]) == (DATABASE, CLUSTER), statement
        engine = REPLICATED_RE.search(statement)
        if engine:
            replicated[created["name"]] = (engine["path"], engine["replica"])
        assert "ENGINE = ReplacingMergeTree" not in statement and "ENGINE = MergeTree" not in statement
    sharded = sorted(layout.sharded) + ["photo_embeddings_ann_512"]
    assert sorted(layout.sharded) == [
        "collections",
        "colors",
        "conversions",
        "download_status",
        "keywords",
        "photo_embeddings",
        "photos",
    ]
    for name in sharded:
        assert replicated.pop(f"{name}_local") == (f"/clickhouse/tables/{{shard}}/{DATABASE}/{name}_local", "{replica}")
    # The tables without photo_id: one replicated table every host holds whole (one Keeper path
    # for the cluster; a replica name unique in it even where {replica} repeats per shard).
    assert set(replicated) == set(layout.every_host) >= {"models", "etl_runs", "schema_migrations", "eval_sets"}
    for name, (path, replica) in replicated.items():
        assert (path, replica) == (f"/clickhouse/tables/all/{DATABASE}/{name}", "{shard}-{replica}")


def test_distributed_tables_shard_by_photo_id_under_the_names_the_queries_use():
    statements = ddl_statements()
    distributed = {}
    for statement in statements:
        if "ENGINE = Distributed(" in statement:
            m = DISTRIBUTED_RE.match(statement)
            assert m, statement
            assert m["source"] == m["local"] == m["name"] + "_local"
            assert (m["db"], m["db2"], m["cluster"], m["c2"]) == (DATABASE, DATABASE, CLUSTER, CLUSTER)
            distributed[m["name"]] = m["key"]
    layout = store_layout()
    assert set(distributed) == set(layout.sharded) | {"photo_search", "photo_embeddings_ann_512"}
    # Each has photo_id (the tables by their columns, photo_search by its first column), so each shards by it.
    assert set(distributed.values()) == {"cityHash64(photo_id)"}
    locals_ = {CREATE_RE.match(s)["name"]: s for s in statements if CREATE_RE.match(s)}
    for name in distributed:
        local = locals_[name + "_local"]
        assert re.search(r"^\s*photo_id String,$|^\s*e\.photo_id AS photo_id,$", local, re.M), name
        # The local table (or view) comes before the Distributed table made AS it.
        assert statements.index(local) < next(
            i for i, s in enumerate(statements) if s.startswith(f"CREATE TABLE IF NOT EXISTS {DATABASE}.{name} ")
        )


def test_photo_search_joins_each_shards_own_rows():
    """photo_search's local view reads only local tables, joined on photo_id and grouped by
    photo_id: every row it combines is of one photo, whose rows are all on one shard, so the
    Distributed table over the views answers what the view answers on one server."""
    (view,) = [s for s in ddl_statements() if s.startswith(f"CREATE VIEW IF NOT EXISTS {DATABASE}.photo_search_local ")]
    read = re.findall(r"\b(?:FROM|JOIN)\s+([\w.]+)", view)
    assert set(read) == {f"{DATABASE}.{t}_local" for t in ("photo_embeddings", "photos", "keywords", "colors")}
    assert re.findall(r"\bON\s+(\S+)\s*=\s*(\S+)", view) == [("p.photo_id", "e.photo_id")] + [
        (f"{a}.photo_id", "e.photo_id") for a in ("k", "c")
    ]
    assert re.findall(r"GROUP BY (\w+)", view) == ["photo_id", "photo_id"]


def _query_tables(engine, sql: str, parameters: dict[str, str]) -> set[str]:
    ast = str(engine.query(f"EXPLAIN AST {sql}", "TSVRaw", params=parameters))
    tables = set(re.findall(r"^\s*TableIdentifier (\S+)", ast, re.M))
    ctes = set(re.findall(r"(?:\bWITH|,)\s*(\w+)\s+AS\s*\(", sql))
    return tables - ctes


def test_the_named_queries_read_only_distributed_tables_views_and_whole_tables(cluster_engine):
    statements = ddl_statements()
    distributed = {DISTRIBUTED_RE.match(s)["name"] for s in statements if DISTRIBUTED_RE.match(s)}
    every_host = {CREATE_RE.match(s)["name"] for s in statements if CREATE_RE.match(s)} - distributed
    every_host = {name for name in every_host if not name.endswith("_local")}
    assert every_host == set(store_layout().every_host)
    seen = set()
    for name, query in sorted(load_queries().items()):
        parameters = {p: dummy_value(p, v.type) for p, v in query.parameters.items()}
        parameters.update(ann_table="photo_embeddings_ann_512")
        tables = _query_tables(cluster_engine, query.executable_sql, parameters)
        assert tables, name
        assert tables <= distributed | every_host | SESSION_TABLES, (
            f"{name} reads {sorted(tables - distributed - every_host)}"
        )
        seen |= tables
    assert {"photos", "photo_embeddings", "photo_search", "photo_embeddings_ann_512", "models"} <= seen
    # The session table of the search snapshot is made from photo_search.
    snapshot = (sql_dir() / "clickhouse" / "session" / "build_search_snapshot.sql").read_text(encoding="utf-8")
    assert _query_tables(cluster_engine, split_statements(snapshot)[-1], {"model": "tiny"}) == {"photo_search"}


def _answer(engine, database: str, sql: str, parameters: dict[str, str]) -> str:
    engine.query(f"USE {database}")
    return str(engine.query(sql, "CSV", params=parameters))


def test_the_named_queries_run_over_the_distributed_tables_and_answer_as_on_one_server(cluster_engine):
    engines = str(cluster_engine.query(f"SELECT name, engine FROM system.tables WHERE database = '{DATABASE}'", "CSV"))
    kinds = dict(line.replace('"', "").split(",") for line in engines.strip().splitlines())
    assert kinds["photos"] == kinds["photo_search"] == kinds["photo_embeddings_ann_4"] == "Distributed"
    assert kinds["photo_search_local"] == "View" and kinds["models"] == "ReplacingMergeTree"
    snapshot = (sql_dir() / "clickhouse" / "session" / "build_search_snapshot.sql").read_text(encoding="utf-8")
    for database in ("single", DATABASE):
        cluster_engine.query(f"USE {database}")
        cluster_engine.query(
            "INSERT INTO photo_embeddings_ann_4 (photo_id, model, embedding, version) "
            "SELECT photo_id, model, embedding, version FROM photo_embeddings FINAL WHERE length(embedding) = 4"
        )
        for statement in split_statements(snapshot):
            cluster_engine.query(statement, "CSV", params={"model": "tiny"})
    answered = 0
    for name, query in sorted(load_queries().items()):
        if name in NEEDS_TEXT_FUNCTION:
            continue
        parameters = {p: dummy_value(p, v.type) for p, v in query.parameters.items()}
        sql = query.executable_sql
        over_cluster = _answer(cluster_engine, DATABASE, sql, parameters)
        assert over_cluster == _answer(cluster_engine, "single", sql, parameters), name
        answered += bool(over_cluster.strip())
    assert answered >= 30  # the rows reach most queries: the comparison is not of empty answers
    # FINAL over the Distributed tables keeps one row per key; deleted photos stay out of photo_search.
    search = _answer(cluster_engine, DATABASE, "SELECT photo_id, description FROM photo_search ORDER BY photo_id", {})
    assert search.split() == ['"p1","one', 'again"', '"p2","two"', '"p3","three"']


def test_the_refreshs_deletes_run_on_the_local_tables(cluster_engine):
    """The purge of photos gone from the source: on a cluster, DELETE ... ON CLUSTER on the local
    tables, its condition reading the local photos (run here as the one-shard cluster runs it)."""
    purge = (sql_dir() / "clickhouse" / "etl" / "purge_gone_photos.sql").read_text(encoding="utf-8")
    for database in ("single", DATABASE):
        cluster_engine.query(f"USE {database}")
        for statement in split_statements(purge):
            forms = cluster_statements(statement, CLUSTER, DATABASE) if database == DATABASE else [statement]
            if database == DATABASE:
                assert (
                    forms[0].startswith(f"DELETE FROM {DATABASE}.") and f"_local ON CLUSTER {CLUSTER} WHERE" in forms[0]
                )
            for form in forms:
                cluster_engine.query(one_shard_form(form), "CSV", params={"run_version": "2"})
    left = "SELECT photo_id FROM {t} FINAL ORDER BY photo_id"
    for table in ("photos", "photo_embeddings", "download_status", "keywords", "colors"):
        assert _answer(cluster_engine, DATABASE, left.format(t=table), {}) == _answer(
            cluster_engine, "single", left.format(t=table), {}
        )
    assert _answer(cluster_engine, DATABASE, left.format(t="photos"), {}).split() == ['"p1"', '"p4"']


# --- the cluster name and the store URL ----------------------------------------------------


@pytest.mark.parametrize("name", ["a-b", "1abc", "", "clip sql", "c;DROP TABLE photos", "ÿ", None, 7])
def test_a_cluster_name_that_is_not_an_identifier_is_refused_before_any_work(name, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError("connected before checking the cluster name")

    monkeypatch.setattr(clickhouse_connect, "get_client", no_connection)
    with pytest.raises(BadArgument, match="cluster name"):
        check_cluster(name)
    with pytest.raises(BadArgument, match="cluster name"):
        cluster_ddl(name, DATABASE)
    with pytest.raises(BadArgument, match="cluster name"):
        cluster_statements("SELECT 1", name, DATABASE)
    if isinstance(name, str):
        url = "http://ana:s3cret@127.0.0.1:8123/unsplash?cluster=" + name.replace(" ", "%20").replace(";", "%3B")
        with pytest.raises(BadArgument, match="cluster name") as raised:
            open_store(url, wait_s=0)
        assert "s3cret" not in str(raised.value)


def test_the_cluster_parameter_is_read_once_and_kept_from_clickhouse_connect():
    assert split_cluster("http://h:8123/db") == ("http://h:8123/db", None)
    assert split_cluster("http://h:8123/db?cluster=clipsql") == ("http://h:8123/db", "clipsql")
    assert split_cluster("http://h/db?max_threads=2&cluster=c_1&x=%20y") == ("http://h/db?max_threads=2&x=%20y", "c_1")
    for url in ("http://h/db?cluster=a&cluster=b", "http://h/db?cluster=", "http://h/db?cluster=a.b"):
        with pytest.raises(BadArgument):
            split_cluster(url)
    with pytest.raises(BadArgument, match="database name"):
        cluster_ddl(CLUSTER, "un-splash")
    with pytest.raises(BadArgument, match="Identifier"):  # a table name is written in only when it is the store's
        cluster_statements("ALTER TABLE {t:Identifier} MATERIALIZE INDEX i", CLUSTER, DATABASE, {"t": "system.users"})
    with pytest.raises(BadArgument, match="no cluster form"):
        cluster_statements("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x", CLUSTER, DATABASE, strict=True)
    # A console user's own table, or a session's temporary one, runs as written.
    own = "CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x"
    assert cluster_statements(own, CLUSTER, DATABASE) == [own]
    assert cluster_statements("DROP TEMPORARY TABLE IF EXISTS s", CLUSTER, DATABASE, strict=True) == [
        "DROP TEMPORARY TABLE IF EXISTS s"
    ]


class _RecordingClient:
    """Stands in for clickhouse-connect's HTTP client: records what it is asked, answers the
    few queries a store asks when it opens and after a load."""

    def __init__(self, calls: list, dsn: str, database: str, settings: dict | None):
        self.calls = calls
        self.dsn, self.database, self.settings = dsn, database, settings
        #: How many rows the approximate-index table holds, before and after the rows are added.
        self.ann_counts = iter([0, 2])

    def command(self, sql, parameters=None):
        self.calls.append((sql, parameters))

    def query_arrow(self, sql, parameters=None, use_strings=True):
        if "SELECT version FROM schema_migrations" in sql:  # none applied yet
            return pa.table({"version": pa.array([], pa.uint32())})
        if "SELECT DISTINCT length(embedding) AS dim" in sql:  # vector_index/vector_widths.sql
            return pa.table({"dim": pa.array([512], pa.uint64())})
        if "SELECT count() AS n FROM {ann_table:Identifier}\n" in sql + "\n":  # ann_row_count.sql
            return pa.table({"n": pa.array([next(self.ann_counts)], pa.uint64())})
        if "SELECT count() AS n FROM {ann_table:Identifier} FINAL" in sql:  # stale_ann_rows.sql
            return pa.table({"n": pa.array([1], pa.uint64())})
        raise AssertionError(f"unexpected query: {sql}")

    def insert_arrow(self, table, data):
        self.calls.append((f"INSERT INTO {table}", data.num_rows))

    def close(self):
        pass


def test_a_cluster_store_runs_the_golden_ddl_when_first_opened_and_the_cluster_forms_after(tmp_path, monkeypatch):
    calls: list = []
    clients: list[_RecordingClient] = []

    def get_client(*, dsn, interface, database, settings=None):
        assert interface == "http"
        clients.append(_RecordingClient(calls, dsn, database, settings))
        return clients[-1]

    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)
    url = f"http://ana:s3cret@ch1:8123/{DATABASE}?max_execution_time=60&cluster={CLUSTER}"
    with open_store(url) as db:
        assert db.cluster == CLUSTER and f"cluster={CLUSTER}" in db.description and "s3cret" not in db.description
        # clickhouse-connect gets the URL without cluster= (it would send it as a setting).
        assert [c.dsn for c in clients] == [f"http://ana:s3cret@ch1:8123/{DATABASE}?max_execution_time=60"] * 2
        assert (clients[0].database, clients[0].settings) == ("default", None)
        assert (clients[1].database, clients[1].settings) == (DATABASE, dict(CLUSTER_SETTINGS))
        assert calls[0] == (f"CREATE DATABASE IF NOT EXISTS {DATABASE} ON CLUSTER {CLUSTER}", None)
        sent = [sql for sql, parameters in calls[1:] if not sql.startswith("INSERT INTO schema_migrations")]
        assert sent == split_statements(cluster_ddl(CLUSTER, DATABASE, widths=()))
        recorded = [c for c in calls if c[0] == "INSERT INTO schema_migrations"]
        assert recorded == [("INSERT INTO schema_migrations", 1)] * (len(cluster.ddl_files()) - 1)  # one per migration

        # After a load: the width's approximate index is made, filled and pruned on every shard.
        del calls[:]
        db.after_load()
        ann = "photo_embeddings_ann_512"
        assert [sql for sql, _ in calls[:2]] == split_statements(
            cluster_ddl(CLUSTER, DATABASE).split(
                "-- sql/clickhouse/vector_index/create_ann_table.sql, vectors 512 wide\n"
            )[1]
        )
        insert, delete, materialize = calls[2:]
        # The insert runs as written, over the Distributed tables.
        assert insert == (
            (sql_dir() / "clickhouse" / "vector_index" / "add_ann_rows.sql").read_text(),
            {"ann_table": ann, "dim": 512},
        )
        assert delete == (
            f"DELETE FROM {DATABASE}.{ann}_local ON CLUSTER {CLUSTER} WHERE (model, photo_id) NOT IN (SELECT model, "
            f"photo_id FROM {DATABASE}.photo_embeddings_local FINAL WHERE length(embedding) = {{dim:UInt32}})",
            {"dim": 512},
        )
        assert materialize == (
            f"ALTER TABLE {DATABASE}.{ann}_local ON CLUSTER {CLUSTER} MATERIALIZE INDEX embedding_hnsw "
            "SETTINGS mutations_sync = 1",
            None,
        )
        del calls[:]
        db.run_script("purge_gone_photos", {"run_version": 7})
        assert len(calls) == 7 and all(p == {"run_version": 7} for _, p in calls)
        assert all(re.match(rf"DELETE FROM {DATABASE}\.\w+_local ON CLUSTER {CLUSTER} WHERE", sql) for sql, _ in calls)
        # A cluster store has no search snapshot: its staleness check would read no parts.
        with pytest.raises(StoreError, match="no search snapshot"):
            db.tables_state(("photos",))


def test_the_layout_follows_the_ddl_files():
    layout = store_layout()
    assert layout.is_sharded("photo_embeddings_ann_768") and not layout.is_sharded("models")
    assert layout.sharded_views == {"photo_search"}
    assert not layout.knows("photos_local") and not layout.knows("search_snapshot")
    assert cluster.SHARDING_KEY == "cityHash64(photo_id)"
