"""A ClickHouse server through clickhouse-connect (and the client-based store chdb shares).

Runs the DDL and scripts of sql/clickhouse/ and the named queries verbatim. The URL
(`http(s)://user:password@host:8123/database?setting=value`) is parsed by clickhouse-connect
itself (its `dsn`); the database is created when missing.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse

import pyarrow as pa

from ..errors import BadArgument, StoreError
from .base import Capabilities, Store

SCHEMES = ("http", "https")
CAPABILITIES = Capabilities(
    dialect="clickhouse",
    needs_final=True,
    vector_index=True,
    session_snapshot=True,
    text_function="server_installed",
    one_process=False,
)
#: Insert settings of the vector table: build the HNSW index in merges (or MATERIALIZE INDEX),
#: not per insert, which costs ~8 s per 25k x 512 vectors on 2 cores (measured, see
#: docs/speed.md: 18.7 s under load).
DEFERRED_INDEX_SETTINGS = {"materialize_skip_indexes_on_insert": 0}
#: ClickHouse's error code UNKNOWN_TABLE (src/Common/ErrorCodes.cpp), which clickhouse-connect's
#: DatabaseError carries as `.code` (and `.name`).
UNKNOWN_TABLE = 60
_DATABASE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ClickHouseStore(Store):
    """A store on a ClickHouse engine reached through a clickhouse-connect client (a server
    here; chdb in :mod:`clipsql.engines.chdb`)."""

    engine = "clickhouse"
    capabilities = CAPABILITIES

    def __init__(self, client, target_root, description: str):
        super().__init__(target_root, description)
        self.client = client

    def translate(self, sql):
        return sql

    def _execute(self, sql, parameters):
        with self._recovering():
            self.client.command(sql, parameters=parameters)

    def query_arrow(self, sql, parameters=None):
        # Arrow keeps the column names and types of an empty result.
        with self._recovering():
            return self.client.query_arrow(sql, parameters=parameters, use_strings=True)

    def query_rows(self, sql, parameters=None):
        # No Arrow: the small answers read on every search (the snapshot's state) are faster so.
        with self._recovering():
            return self.client.query(sql, parameters=parameters).result_rows

    @contextlib.contextmanager
    def _recovering(self):
        """Where the engine needs it, leave the client usable after a failed statement (chdb)."""
        yield

    def _insert(self, table, data: pa.Table):
        settings = DEFERRED_INDEX_SETTINGS if table == "photo_embeddings" else None
        self.client.insert_arrow(table, data, settings=settings)

    def after_load(self):
        """Build the HNSW index for parts inserted with it deferred (blocks until done)."""
        self.command("ALTER TABLE photo_embeddings MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 1")
        return True

    def materialize_vector_index(self) -> None:
        """:meth:`after_load` (the first wave's name)."""
        self.after_load()

    def close(self):
        self.client.close()

    def is_missing_table(self, exc):
        return getattr(exc, "code", None) == UNKNOWN_TABLE or getattr(exc, "name", None) == "UNKNOWN_TABLE"


def exists(target) -> bool:
    """True: whether a server has the database is known only by connecting (which creates it)."""
    return True


def open_target(target) -> ClickHouseStore:
    """Connect to the server `target.location` names, creating its database if missing.

    Raises:
        BadArgument: not an http(s) URL with a host, or a database name that is not an identifier.
        StoreError: the server cannot be reached or refuses.
    """
    import clickhouse_connect

    url, shown = target.location, target.description
    parts = urllib.parse.urlsplit(url)
    try:
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise BadArgument(f"ClickHouse URL {shown!r}: {exc}") from None
    if parts.scheme not in SCHEMES or not hostname:
        raise BadArgument(f"ClickHouse URL must look like http(s)://user:password@host:8123/database, got {shown!r}")
    database = urllib.parse.unquote(parts.path.strip("/")) or "default"
    if not _DATABASE_RE.fullmatch(database):
        raise BadArgument(f"ClickHouse database name {database!r} must be letters, digits and _")
    try:
        # The scheme picks the interface: clickhouse-connect reads user, password, host, port,
        # database and ?settings from the DSN, but not http vs https.
        admin = clickhouse_connect.get_client(dsn=url, interface=parts.scheme, database="default")
        admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")  # an identifier, checked above
        admin.close()
        client = clickhouse_connect.get_client(dsn=url, interface=parts.scheme, database=database)
    except Exception as exc:
        raise StoreError(f"cannot connect to ClickHouse at {shown}: {exc}") from exc
    return ClickHouseStore(client, target.root, shown)
