"""DuckDB through its Python API.

Runs sql/duckdb/ (tables with primary keys: one row per key, so no FINAL; no vector index:
searches scan exactly) and the named queries after :func:`clipsql.dialect.to_duckdb`; the
ClickHouse functions the queries use are defined as macros (`clipsql.dialect.DUCKDB_MACROS`)
on every connection. One process may open a file for writing; the text function is a Python
function registered on the connection.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import dialect
from ..errors import StoreError
from .base import Capabilities, Store
from .busy import posix_lock_holder, store_busy

SCHEMES = ("duckdb",)
CAPABILITIES = Capabilities(
    dialect="duckdb",
    needs_final=False,
    vector_index=False,
    session_snapshot=False,
    text_function="in_process",
    one_process=True,
)
#: Attempts to open a file whose lock DuckDB could not take while no process holds it any
#: more (a holder letting go at that moment).
_OPEN_ATTEMPTS = 4
#: The name under which an upsert's Arrow table is visible to the INSERT that reads it.
_INCOMING = "_clipsql_incoming"


class DuckDBStore(Store):
    """A DuckDB store; ClickHouse query texts pass through :mod:`clipsql.dialect`.

    Attributes:
        connection: the duckdb connection while the engine is held (None otherwise); a
            function registered on it lives as long as it (see :meth:`Store.on_connect`).
    """

    engine = "duckdb"
    capabilities = CAPABILITIES

    def __init__(self, target, **lease) -> None:
        super().__init__(target.root, target.description, **lease)
        self.target = target
        self.connection: Any = None
        if target.location == ":memory:":  # a throwaway database lives only as long as its connection
            self.idle_release_s = self.max_idle_s = None

    def translate(self, sql):
        return dialect.to_duckdb(sql)

    def _connect(self):
        self.connection = connect_duckdb(self.target)
        for macro in dialect.DUCKDB_MACROS:
            self.connection.execute(macro)

    def _disconnect(self):
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def _execute(self, sql, parameters):
        self.connection.execute(sql, parameters or None)

    def _query_arrow(self, sql, parameters):
        # A relation, not execute()'s DB-API result: duckdb 2.0 warns on every Arrow fetch of
        # the latter ("makes an extra copy of the rows"), and a CLI search now reads Arrow.
        return self.connection.sql(sql, params=parameters or None).to_arrow_table()

    def _query_df(self, sql, parameters):
        # Straight to pandas: DuckDB's own conversion keeps its column types as the first wave had them.
        with warnings.catch_warnings():
            # duckdb's fetch_df calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates:
            # a warning on every query that only duckdb can fix, so it is not shown to users.
            warnings.filterwarnings("ignore", message="The inplace keyword")
            return self.connection.execute(sql, parameters or None).fetch_df()

    def _insert(self, table, data: pa.Table):
        self.connection.register(_INCOMING, data)
        try:
            # `table` is one of base.TABLES (Store.upsert checks it), never a user's text.
            self.connection.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM {_INCOMING}")
        finally:
            self.connection.unregister(_INCOMING)

    def _after_load(self):
        return False  # no vector index to build: DuckDB searches scan

    def is_missing_table(self, exc):
        import duckdb

        return isinstance(exc, duckdb.CatalogException)


def exists(target) -> bool:
    """Whether the DuckDB file is there (':memory:' always is)."""
    return target.location == ":memory:" or Path(target.location).exists()


def holder(target) -> int | None:
    """The pid of the process holding the DuckDB file now (0: held, pid unknown), or None."""
    if target.location == ":memory:":
        return None
    return posix_lock_holder(Path(target.location))


def open_target(target, **lease) -> DuckDBStore:
    """The DuckDB store in the file `target.location` (':memory:': a throwaway one), connected on
    first use; a process waiting for it announces itself in `<file>.waiting/`."""
    waiting = None if target.location == ":memory:" else Path(target.location + ".waiting")
    return DuckDBStore(target, waiting_dir=waiting, **lease)


def connect_duckdb(target):
    """A connection to the DuckDB file `target.location`, created when missing.

    Raises:
        StoreBusy: another process holds the file (its POSIX lock, read from /proc/locks).
        StoreError: any other failure to open.
    """
    import duckdb

    location = target.location
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return duckdb.connect(location)
        except duckdb.Error as exc:
            if not isinstance(exc, duckdb.IOException):
                raise StoreError(f"cannot open DuckDB file {location}: {exc}") from exc
            if (held := holder(target)) is not None:
                raise store_busy(location, location, held or None, target.root) from exc
            if attempt == _OPEN_ATTEMPTS - 1:
                raise StoreError(f"cannot open DuckDB file {location}: {exc}") from exc
            # No lock is held now: its holder let go between DuckDB's attempt and our look.
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
