"""DuckDB through its Python API.

Runs sql/duckdb/ (tables with primary keys: one row per key, so no FINAL; no vector index:
searches scan exactly) and the named queries after :func:`clipsql.dialect.to_duckdb`; the
ClickHouse functions the queries use are defined as macros (`clipsql.dialect.DUCKDB_MACROS`)
on every connection. One process may open a file for writing; the text function is a Python
function registered on the connection.
"""

from __future__ import annotations

import warnings
from pathlib import Path

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
#: The name under which an upsert's Arrow table is visible to the INSERT that reads it.
_INCOMING = "_clipsql_incoming"


class DuckDBStore(Store):
    """A DuckDB store; ClickHouse query texts pass through :mod:`clipsql.dialect`.

    Attributes:
        connection: the duckdb connection (the text function is registered on it).
    """

    engine = "duckdb"
    capabilities = CAPABILITIES

    def __init__(self, connection, root: Path, description: str):
        super().__init__(root, description)
        self.connection = connection
        for macro in dialect.DUCKDB_MACROS:
            connection.execute(macro)

    def translate(self, sql):
        return dialect.to_duckdb(sql)

    def _execute(self, sql, parameters):
        self.connection.execute(sql, parameters or None)

    def query_arrow(self, sql, parameters=None):
        return self.connection.execute(sql, parameters or None).fetch_arrow_table()

    def query_df(self, sql, parameters=None):
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

    def after_load(self):
        return False  # no vector index to build: DuckDB searches scan

    def close(self):
        self.connection.close()

    def is_missing_table(self, exc):
        import duckdb

        return isinstance(exc, duckdb.CatalogException)


def exists(target) -> bool:
    """Whether the DuckDB file is there (':memory:' always is)."""
    return target.location == ":memory:" or Path(target.location).exists()


def open_target(target) -> DuckDBStore:
    """Open (and create) the DuckDB file `target.location` (':memory:' for a throwaway one).

    Raises:
        StoreBusy: another process holds the file (its POSIX lock, read from /proc/locks).
        StoreError: any other failure to open.
    """
    import duckdb

    location = target.location
    try:
        connection = duckdb.connect(location)
    except duckdb.Error as exc:
        if (
            isinstance(exc, duckdb.IOException)
            and location != ":memory:"
            and (holder := posix_lock_holder(Path(location))) is not None
        ):
            raise store_busy(location, location, holder or None, target.root) from exc
        raise StoreError(f"cannot open DuckDB file {location}: {exc}") from exc
    return DuckDBStore(connection, target.root, f"duckdb:{location}")
