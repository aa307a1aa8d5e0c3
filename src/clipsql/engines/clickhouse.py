"""A ClickHouse server through clickhouse-connect (and the client-based store chdb shares).

Runs the DDL and scripts of sql/clickhouse/ and the named queries verbatim. The URL
(`http(s)://user:password@host:8123/database?setting=value`) is parsed by clickhouse-connect
itself (its `dsn`); the database is created when missing.

A URL with `?cluster=NAME` opens a cluster store: the database is created ON CLUSTER, every
statement clipsql runs passes through :func:`clipsql.engines.cluster.cluster_statements`
(replicated local tables per shard, Distributed tables under the names the queries use), and
the client's session has :data:`clipsql.engines.cluster.CLUSTER_SETTINGS`.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from typing import Any

import pyarrow as pa

from ..errors import BadArgument, StoreError
from ..resources import sql_dir
from ..sqlfiles import split_statements
from ..sqlfiles import uses_parameter
from .base import Capabilities, Store, check_width
from .cluster import CLUSTER_SETTINGS, ann_template, cluster_statements, database_ddl, fill_width, split_cluster

SCHEMES = ("http", "https")
CAPABILITIES = Capabilities(
    dialect="clickhouse",
    needs_final=True,
    vector_index=True,
    session_snapshot=True,
    text_function="server_installed",
    one_process=False,
)
#: Prefix of the per-width approximate-index tables (sql/clickhouse/vector_index/create_ann_table.sql).
ANN_TABLE_PREFIX = "photo_embeddings_ann_"
#: ClickHouse's error code UNKNOWN_TABLE (src/Common/ErrorCodes.cpp), which clickhouse-connect's
#: DatabaseError carries as `.code` (and `.name`).
UNKNOWN_TABLE = 60
_DATABASE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ClickHouseStore(Store):
    """A store on a ClickHouse engine reached through a clickhouse-connect client (a server
    here; chdb in :mod:`clipsql.engines.chdb`).

    Attributes:
        client: the clickhouse-connect client while the engine is held (None otherwise).
        cluster: the cluster the store spans (its URL's `cluster=`), None for one server.
        database: the store's database on a cluster (its statements name it), else None.
    """

    engine = "clickhouse"
    capabilities = CAPABILITIES

    def __init__(self, target, cluster: str | None = None, **lease) -> None:
        super().__init__(target.root, target.description, **lease)
        self.target = target
        self.client: Any = None
        self.cluster = cluster
        self.database = check_url(target)[1] if cluster is not None else None

    def translate(self, sql):
        return sql

    def _connect(self):
        self.client = connect_server(self.target)

    def _disconnect(self):
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _execute(self, sql, parameters):
        if self.cluster is None:
            with self._recovering():
                self.client.command(sql, parameters=parameters)
            return
        # A cluster store: the statement's cluster form, each part with the parameters it uses.
        for statement in cluster_statements(sql, self.cluster, str(self.database), parameters):
            used = {n: v for n, v in (parameters or {}).items() if uses_parameter(statement, n)}
            with self._recovering():
                self.client.command(statement, parameters=used or None)

    def tables_state(self, tables):
        """None on one server (the snapshot reads system.parts). A cluster store has no search
        snapshot: that check would read the Distributed tables, which hold no parts, so a
        snapshot would never be seen stale.

        Raises:
            StoreError: on a cluster store (leave `search_snapshot_max_bytes` at 0 there).
        """
        if self.cluster is not None:
            raise StoreError(
                f"store {self.description}: a cluster store has no search snapshot; leave search_snapshot_max_bytes at 0"
            )
        return super().tables_state(tables)

    def _query_arrow(self, sql, parameters):
        # Arrow keeps the column names and types of an empty result.
        with self._recovering():
            return self.client.query_arrow(sql, parameters=parameters, use_strings=True)

    def _query_rows(self, sql, parameters):
        # No Arrow: the small answers read on every search (the snapshot's state) are faster so.
        with self._recovering():
            return self.client.query(sql, parameters=parameters).result_rows

    @contextlib.contextmanager
    def _recovering(self):
        """Where the engine needs it, leave the client usable after a failed statement (chdb)."""
        yield

    def _insert(self, table, data: pa.Table):
        self.client.insert_arrow(table, data)

    def ann_table(self, dim):
        return ann_table_name(dim)

    def _after_load(self):
        """Bring every width's approximate index (photo_embeddings_ann_<dim>) up to
        photo_embeddings: create the table of a width seen for the first time, add the rows
        it lacks, remove those whose vector is gone, and build the HNSW index when rows were
        added (blocks until done). Each step is idempotent and cheap when there is nothing to
        do, so it runs after every refresh, and one killed midway is finished by the next.
        The widths are those of the stored vectors (sql/clickhouse/vector_index/)."""

        def sql(name: str) -> str:
            return (sql_dir() / "clickhouse" / "vector_index" / f"{name}.sql").read_text(encoding="utf-8")

        for dim in (int(d) for d in self._query_df(sql("vector_widths"), None)["dim"]):
            for statement in split_statements(ann_table_ddl(dim)):
                self._execute(statement, None)
            table = {"ann_table": self.ann_table(dim)}
            width = {**table, "dim": dim}
            before = int(self._query_df(sql("ann_row_count"), table)["n"].iloc[0])
            self._execute(sql("add_ann_rows"), width)
            added = int(self._query_df(sql("ann_row_count"), table)["n"].iloc[0]) - before
            if int(self._query_df(sql("stale_ann_rows"), width)["n"].iloc[0]):
                self._execute(sql("drop_stale_ann_rows"), width)
            if added:
                self._execute(sql("materialize_ann_index"), table)
        self.forget()
        return True

    def is_missing_table(self, exc):
        return getattr(exc, "code", None) == UNKNOWN_TABLE or getattr(exc, "name", None) == "UNKNOWN_TABLE"


def ann_table_name(dim: int) -> str:
    """`photo_embeddings_ann_<dim>`, the approximate-index table of vectors `dim` wide.

    Raises:
        BadArgument: `dim` is not an integer in 1..65535.
    """
    return ANN_TABLE_PREFIX + str(check_width(dim))


def ann_table_ddl(dim: int) -> str:
    """The DDL of the approximate-index table of vectors `dim` wide
    (sql/clickhouse/vector_index/create_ann_table.sql with its `<dim>` filled in).

    Raises:
        BadArgument: `dim` is not an integer in 1..65535.
    """
    # An integer, checked and written into the text: ClickHouse takes only literals as index arguments.
    return fill_width(ann_template(), dim)


def exists(target) -> bool:
    """True: whether a server has the database is known only by connecting (which creates it)."""
    return True


def holder(target):
    """None: a server has no one-process rule, so no process holds it."""
    return None


def open_target(target, **lease) -> ClickHouseStore:
    """The store on the server `target.location` names (connected on first use; `lease`: the
    keywords of :class:`~clipsql.engines.base.Store` such as wait_s).

    Raises:
        BadArgument: not an http(s) URL with a host, a database name that is not an identifier,
            or a `cluster=` that is not one (given twice, empty, other characters).
    """
    check_url(target)
    return ClickHouseStore(target, cluster=cluster_of(target), **lease)


def cluster_of(target) -> str | None:
    """The cluster a server URL's `cluster=` parameter names (None: one server), checked.

    Raises:
        BadArgument: `cluster=` given twice, empty, or not an identifier.
    """
    return split_cluster(target.location)[1]


def check_url(target) -> tuple[str, str]:
    """(scheme, database) of the server URL `target.location`, checked before any connection.

    Raises:
        BadArgument: not an http(s) URL with a host, or a database name that is not an identifier.
    """
    parts = urllib.parse.urlsplit(target.location)
    try:
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise BadArgument(f"ClickHouse URL {target.description!r}: {exc}") from None
    if parts.scheme not in SCHEMES or not hostname:
        raise BadArgument(
            f"ClickHouse URL must look like http(s)://user:password@host:8123/database, got {target.description!r}"
        )
    database = urllib.parse.unquote(parts.path.strip("/")) or "default"
    if not _DATABASE_RE.fullmatch(database):
        raise BadArgument(f"ClickHouse database name {database!r} must be letters, digits and _")
    return parts.scheme, database


def connect_server(target):
    """A clickhouse-connect client of the server `target.location` names, its database created
    when missing (on a cluster store: ON CLUSTER, and the client's session with
    :data:`~clipsql.engines.cluster.CLUSTER_SETTINGS`).

    Raises:
        BadArgument: a malformed URL (:func:`check_url`, :func:`cluster_of`).
        StoreError: the server cannot be reached or refuses.
    """
    import clickhouse_connect

    scheme, database = check_url(target)
    # clickhouse-connect would send the cluster= parameter to the server as a setting.
    url, cluster = split_cluster(target.location)
    session = {"settings": dict(CLUSTER_SETTINGS)} if cluster is not None else {}
    try:
        # The scheme picks the interface: clickhouse-connect reads user, password, host, port,
        # database and ?settings from the DSN, but not http vs https.
        admin = clickhouse_connect.get_client(dsn=url, interface=scheme, database="default")
        # Identifiers, checked above.
        admin.command(
            database_ddl(cluster, database) if cluster is not None else f"CREATE DATABASE IF NOT EXISTS {database}"
        )
        admin.close()
        return clickhouse_connect.get_client(dsn=url, interface=scheme, database=database, **session)
    except Exception as exc:
        raise StoreError(f"cannot connect to ClickHouse at {target.description}: {exc}") from exc
