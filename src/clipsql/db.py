"""Stores: open one by its URL (or the first wave's options), and migrate its schema.

Public entry points: :func:`open_store` and :func:`use_store`. A :class:`Store` runs SQL with
bound parameters, upserts Arrow tables, runs the named queries of queries/, applies the DDL
migrations of `sql/<dialect>/` (:func:`migrate`) and runs the refresh's few data-changing
statements from `sql/<dialect>/etl/` (:meth:`Store.run_script`). How engines differ lives in
:mod:`clipsql.engines` (one module per engine, a capabilities record, one registry) and in
`sql/<dialect>/`; this module only chooses and opens.

A store also has a directory on disk (`root`): the image cache lives in `root/images`,
and for chdb the database files in `root/chdb`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from .engines import TABLES, Capabilities, Store, StoreTarget, default_store_dir, open_target, resolve_target
from .engines.base import DEFAULT_WAIT_S, SCRIPT_FOLDERS
from .engines.chdb import SEARCH_SNAPSHOT_MAX_BYTES, ChdbStore
from .engines.clickhouse import ClickHouseStore
from .engines.duckdb import DuckDBStore
from .errors import BadArgument, StoreError
from .resources import sql_dir
from .sqlfiles import split_statements

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WAIT_S",
    "SCRIPT_FOLDERS",
    "SEARCH_SNAPSHOT_MAX_BYTES",
    "TABLES",
    "Capabilities",
    "ChdbStore",
    "ClickHouseStore",
    "DuckDBStore",
    "Store",
    "StoreTarget",
    "check_wait",
    "default_store_dir",
    "migrate",
    "migration_files",
    "open_store",
    "resolve_target",
    "split_statements",
    "store_root",
    "use_store",
    "vectors_array",
]

_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def store_root(store: str | os.PathLike | None = None) -> Path:
    """The store directory (image cache) that `store` (a URL or a directory; None: the
    default) names: :func:`clipsql.engines.resolve_target`'s `root`.

    Raises:
        BadArgument: a store URL that names no path.
    """
    return resolve_target(store).root


def vectors_array(vectors: np.ndarray) -> pa.ListArray:
    """An Arrow list<float32> column of (n, d) float32 vectors, built without a copy per row
    (one flat buffer and its offsets): the `embedding` column of every vector table."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), type=pa.float32()))


def open_store(
    store: str | os.PathLike | None = None,
    *,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    migrate_schema: bool = True,
    wait_s: float | None = None,
) -> Store:
    """Open (and create, and migrate) a store.

    The store holds its engine only while it works (see :class:`clipsql.engines.base.Store`):
    on chdb and DuckDB, which let one process in at a time, it lets go when idle, and every
    operation waits up to `wait_s` seconds for a store another process holds.

    Args:
        store: a store URL (`chdb:///path`, `http(s)://user:password@host:8123/database`,
            `duckdb:///file.duckdb`; see :mod:`clipsql.engines`) or a chdb store directory;
            default `$CLIPSQL_STORE`, else ./clipsql-store.
        clickhouse_url, duckdb: the first wave's options, kept as aliases: a server URL (or
            `$CLICKHOUSE_URL`) or a DuckDB file (':memory:' for a throwaway one), with `store`
            the image cache directory.
        migrate_schema: apply the dialect's migrations not yet applied.
        wait_s: seconds to wait for a store another process holds (0: fail at once); None:
            `$CLIPSQL_WAIT`, else :data:`DEFAULT_WAIT_S` (300).

    Raises:
        BadArgument: two backends named, a malformed URL, or a bad `wait_s`.
        StoreError: the store cannot be opened (StoreBusy: a chdb path or DuckDB file another
            process held for all of `wait_s`).
    """
    target = resolve_target(store, clickhouse_url=clickhouse_url, duckdb=duckdb)
    result = open_target(target, wait_s=check_wait(wait_s))
    try:
        with result.session():  # connect now: a store that cannot be opened says so here
            if migrate_schema:
                migrate(result)
    except BaseException:
        result.close()
        raise
    return result


def check_wait(wait_s: float | str | None) -> float:
    """The wait for a busy store, seconds: `wait_s`, else `$CLIPSQL_WAIT`, else
    :data:`DEFAULT_WAIT_S`.

    Raises:
        BadArgument: not a finite number from 0 to 86,400 (a day).
    """
    where = "wait_s"
    if wait_s is None:
        wait_s, where = os.environ.get("CLIPSQL_WAIT") or DEFAULT_WAIT_S, "$CLIPSQL_WAIT"
    try:
        value = float(wait_s)
    except (TypeError, ValueError):
        raise BadArgument(f"{where} must be a number of seconds, got {wait_s!r}") from None
    if isinstance(wait_s, bool) or not 0 <= value <= 86_400:  # NaN fails too
        raise BadArgument(f"{where} must be from 0 to 86400 seconds, got {wait_s!r}")
    return value


@contextlib.contextmanager
def use_store(
    db: Store | None = None,
    store: str | os.PathLike | None = None,
    *,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    wait_s: float | None = None,
) -> Iterator[Store]:
    """`db` itself when given (left open: the caller owns it, e.g. a notebook's store), else
    :func:`open_store` of the other arguments, closed on exit. The Python API functions take
    both forms through this; the block holds the engine (one session) either way."""
    if db is not None:
        with db.session():
            yield db
    else:
        with open_store(store, clickhouse_url=clickhouse_url, duckdb=duckdb, wait_s=wait_s) as new, new.session():
            yield new


# --- migrations --------------------------------------------------------------------------


#: sql/<dialect>/ file creating schema_migrations (not a numbered migration: it records them).
SCHEMA_MIGRATIONS_FILE = "schema_migrations.sql"


def migration_files(dialect_name: str) -> list[Path]:
    """The ordered DDL files of a dialect: sql/<dialect>/NNN_name.sql."""
    folder = sql_dir() / dialect_name
    files = sorted(p for p in folder.glob("*.sql") if _MIGRATION_NAME_RE.match(p.name))
    numbers = [p.name[:3] for p in files]
    if len(set(numbers)) != len(numbers):
        raise StoreError(f"two migrations in {folder} share a number: {numbers}")
    return files


def migrate(store: Store) -> list[str]:
    """Apply the store dialect's migrations not yet recorded in schema_migrations, in order.

    Each file's statements are idempotent (CREATE ... IF NOT EXISTS), so a run killed between
    a file's DDL and its record re-applies it harmlessly.

    Returns:
        The names of the files applied now.
    """
    # The table that records them is created by its own file, outside the numbered sequence.
    for statement in split_statements((sql_dir() / store.dialect / SCHEMA_MIGRATIONS_FILE).read_text(encoding="utf-8")):
        store.command(statement)
    applied = {int(v) for v in store.query_arrow("SELECT version FROM schema_migrations").column("version").to_pylist()}
    done = []
    for path in migration_files(store.dialect):
        number = int(path.name[:3])
        if number in applied:
            continue
        started = time.perf_counter()
        for statement in split_statements(path.read_text(encoding="utf-8")):
            store.command(statement)
        store.upsert("schema_migrations", pa.table({"version": pa.array([number], pa.uint32()), "name": [path.name]}))
        log.info("applied migration %s in %.2f s", path.name, time.perf_counter() - started)
        done.append(path.name)
    return done
