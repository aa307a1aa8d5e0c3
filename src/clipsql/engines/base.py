"""The engine protocol: what every store does, and the capabilities record that says how
engines differ.

An engine module (:mod:`clipsql.engines.chdb`, :mod:`~clipsql.engines.clickhouse`,
:mod:`~clipsql.engines.duckdb`) subclasses :class:`Store` and implements its seven protocol
methods; everything else a store does (upserts, scripts, counts, remembered lookups) is built
here on those seven, once for every engine. Code above the engines never asks which engine
it has: it reads :attr:`Store.capabilities` (as clickhouse-connect's drivers expose what a
backend supports rather than what it is).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa

from ..cache import images_dir
from ..errors import BadArgument, StoreError
from ..resources import sql_dir
from ..sqlfiles import split_statements, uses_parameter

#: Every table clipsql writes; an upsert into any other name is refused.
TABLES = (
    "photos",
    "keywords",
    "collections",
    "colors",
    "conversions",
    "photo_embeddings",
    "models",
    "download_status",
    "etl_runs",
    "schema_migrations",
    # clipsql eval's captioned image sets (sql/<dialect>/003_eval.sql)
    "eval_sets",
    "eval_images",
    "eval_captions",
    "eval_image_embeddings",
    "eval_caption_embeddings",
)
#: Folders of `sql/<dialect>/` that :meth:`Store.run_script` runs files from.
SCRIPT_FOLDERS = ("etl", "session")
#: How the SQL function `clip_text_embedding` runs on an engine (:attr:`Capabilities.text_function`):
#: a Python function inside this process (DuckDB), an executable script that the in-process
#: engine starts (chdb's user_scripts), or one the server's administrator installed (server).
TEXT_FUNCTION_KINDS = ("in_process", "engine_script", "server_installed")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What an engine can do; the only thing code above the engines branches on.

    Attributes:
        dialect: the folder of `sql/` whose DDL and scripts the engine runs ('clickhouse',
            'duckdb'); the named queries of queries/ are ClickHouse text, which
            :meth:`Store.translate` rewrites for other dialects.
        needs_final: reads of a ReplacingMergeTree table need FINAL to see one row per key
            (ClickHouse); False where the table keeps one row per key itself (DuckDB).
        vector_index: the vector table has an approximate (HNSW) index, built after a load
            by :meth:`Store.after_load`.
        session_snapshot: the engine keeps session temporary tables that a search can read
            (clipsql.snapshot); whether a store uses one is `Store.search_snapshot_max_bytes`.
        text_function: how `clip_text_embedding` runs, one of :data:`TEXT_FUNCTION_KINDS`.
        one_process: only one process may open the store at a time (chdb's data path,
            DuckDB's file): another one finds it busy.
    """

    dialect: str
    needs_final: bool
    vector_index: bool
    session_snapshot: bool
    text_function: str
    one_process: bool

    def __post_init__(self):
        if self.text_function not in TEXT_FUNCTION_KINDS:
            raise ValueError(f"text_function must be one of {TEXT_FUNCTION_KINDS}, got {self.text_function!r}")


class Store:
    """An open store. Use :func:`clipsql.db.open_store`; close it (or use `with`) when done.

    The protocol an engine implements (the seven methods that raise NotImplementedError
    here): :meth:`translate`, :meth:`_execute`, :meth:`query_arrow`, :meth:`_insert`,
    :meth:`after_load`, :meth:`close` and :meth:`is_missing_table`; the text function is
    registered by :mod:`clipsql.udf` according to :attr:`Capabilities.text_function`.

    Attributes:
        engine: the registry name of the engine ('chdb', 'clickhouse', 'duckdb').
        capabilities: what the engine can do (:class:`Capabilities`).
        root: the store directory (image cache; for chdb also the data).
        description: where the store is, for messages (no password).
    """

    engine: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: Search through an in-memory snapshot of the vectors while they take at most this many
    #: bytes (:mod:`clipsql.snapshot`); 0 turns it off. Each engine sets its default.
    search_snapshot_max_bytes: int = 0

    #: How long :meth:`remember` keeps a value, seconds. A write through any Store of this
    #: process (a notebook that runs a refresh, say) forgets everything at once; a write by
    #: another process (a refresh against a shared ClickHouse server) is seen after at most
    #: this long. chdb stores have no other writer: one process per data path.
    MEMO_TTL_S = 30.0
    #: Bumped by every write through any Store of this process; remembered values of an older
    #: generation are stale.
    _generation = 0

    def __init__(self, root: Path, description: str):
        self.root = Path(root)
        self.description = description
        self._memo: dict = {}
        self._search_snapshot: Any = None  # clipsql.snapshot's record of what the snapshot holds

    @property
    def dialect(self) -> str:
        """The engine's SQL dialect: the folder of `sql/` it runs ('clickhouse', 'duckdb')."""
        return self.capabilities.dialect

    # --- the protocol: each engine implements these --------------------------------------

    def translate(self, sql: str) -> str:
        """A query written in ClickHouse's dialect ({name:Type} parameters), as this engine runs it."""
        raise NotImplementedError

    def _execute(self, sql: str, parameters: dict | None) -> None:
        """Run one statement of this engine's dialect that returns nothing."""
        raise NotImplementedError

    def query_arrow(self, sql: str, parameters: dict | None = None) -> pa.Table:
        """Run a query written in this store's dialect; parameters are bound, never formatted.
        The column names and types of an empty result are kept."""
        raise NotImplementedError

    def _insert(self, table: str, data: pa.Table) -> None:
        """Insert `data` into `table` (a name of :data:`TABLES`), replacing rows of the same key."""
        raise NotImplementedError

    def after_load(self) -> bool:
        """Finish a load so that searches see it at full speed (build the vector index of the
        rows inserted with it deferred); blocks until done.

        Returns:
            True when there was work of this kind to do (the engine has a vector index).
        """
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by this store's engine, says a table does not exist: told by
        the engine's error code or class, never by its message text."""
        raise NotImplementedError

    # --- built on the protocol ------------------------------------------------------------

    def query_df(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """:meth:`query_arrow` as a pandas DataFrame."""
        return self.query_arrow(sql, parameters).to_pandas()

    def query_rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """Run a query; its rows as tuples (for small answers)."""
        table = self.query_arrow(sql, parameters)
        return list(zip(*(column.to_pylist() for column in table.columns))) if table.num_columns else []

    def query_clickhouse(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """Run a query written in ClickHouse's dialect ({name:Type} parameters) on this store."""
        return self.query_df(self.translate(sql), parameters)

    def remember(self, key, compute):
        """`compute()`, kept under `key` for :data:`MEMO_TTL_S` seconds unless anything is
        written meanwhile (a model lookup costs a query of 3-6 ms; search asks it every call)."""
        now = time.monotonic()
        hit = self._memo.get(key)
        if hit is not None and hit[0] == Store._generation and now - hit[1] < self.MEMO_TTL_S:
            return hit[2]
        value = compute()
        self._memo[key] = (Store._generation, now, value)
        return value

    def forget(self) -> None:
        """Make every value :meth:`remember` keeps, in every Store of this process, stale
        (called on every write)."""
        Store._generation += 1

    @property
    def search_snapshot(self):
        """:mod:`clipsql.snapshot`'s record of what this store's search snapshot holds (None:
        no snapshot in this session); set by :meth:`record_search_snapshot`."""
        return self._search_snapshot

    def record_search_snapshot(self, record) -> None:
        """Keep :mod:`clipsql.snapshot`'s `record` of what the session's snapshot holds (None
        once it is dropped)."""
        self._search_snapshot = record

    @property
    def image_dir(self) -> Path:
        """The image cache: `<root>/images/<photo_id>.jpg` (:mod:`clipsql.cache`)."""
        return images_dir(self.root)

    def command(self, sql: str, parameters: dict | None = None, *, changes_data: bool = True) -> None:
        """Run a statement that returns nothing (DDL, INSERT ... SELECT). `changes_data=False`
        for one that touches only the session's own temporary tables: what :meth:`remember`
        keeps stays valid."""
        if changes_data:
            self.forget()
        self._execute(sql, parameters)

    def upsert(self, table: str, data: pa.Table) -> None:
        """Insert `data` (columns by name) into `table`, replacing rows with the same key.

        Raises:
            BadArgument: `table` is not one of :data:`TABLES`.
        """
        if table not in TABLES:
            raise BadArgument(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        self.forget()
        if data.num_rows:
            self._insert(table, data)

    def script_path(self, name: str, folder: str) -> Path:
        """`sql/<dialect>/<folder>/<name>.sql` (it may not exist)."""
        return sql_dir() / self.dialect / folder / f"{name}.sql"

    def run_script(self, name: str, parameters: dict | None = None, *, folder: str = "etl") -> None:
        """Run the statements of `sql/<dialect>/<folder>/<name>.sql`, in order, values bound:
        the refresh's data-changing statements (`etl`) or a session's own tables (`session`).

        The files are written once per dialect (ClickHouse `{name:Type}`, DuckDB `$name`
        parameters); each statement gets the parameters it uses.

        Raises:
            BadArgument: `folder` is not one of :data:`SCRIPT_FOLDERS`.
            StoreError: no such script for this store's dialect.
        """
        if folder not in SCRIPT_FOLDERS:
            raise BadArgument(f"unknown script folder {folder!r}; expected one of {', '.join(SCRIPT_FOLDERS)}")
        path = self.script_path(name, folder)
        if not path.is_file():
            raise StoreError(f"no {folder} script {name!r} for {self.dialect} ({path} is missing)")
        parameters = parameters or {}
        for statement in split_statements(path.read_text(encoding="utf-8")):
            used = {n: v for n, v in parameters.items() if uses_parameter(statement, n)}
            self.command(statement, used or None, changes_data=folder != "session")

    def count(self, table: str, final: bool = True) -> int:
        """Rows of `table` as reads see them (one per key: FINAL where the engine needs it)."""
        if table not in TABLES:
            raise BadArgument(f"unknown table {table!r}")
        # The table name is one of TABLES (checked above), never a user's text.
        suffix = " FINAL" if final and self.capabilities.needs_final and table != "schema_migrations" else ""
        return int(self.query_clickhouse(f"SELECT count() AS n FROM {table}{suffix}")["n"].iloc[0])

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
