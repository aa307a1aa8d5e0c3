"""Stores: one interface over chdb (embedded ClickHouse), a ClickHouse server and DuckDB.

Public entry point: :func:`open_store`. A :class:`Store` runs SQL with bound parameters,
upserts Arrow tables, runs the named queries of queries/, applies the DDL migrations
of `sql/<dialect>/` (:func:`migrate`) and runs the refresh's few data-changing statements
(flag or purge photos gone from the source) from `sql/<dialect>/etl/` (:meth:`Store.run_script`). Engines differ only in `sql/<dialect>/` and in
:mod:`clipsql.dialect`.

A store also has a directory on disk (`root`): the image cache lives in `root/images`,
and for chdb the database files in `root/chdb`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import dialect
from .cache import images_dir
from .errors import BadArgument, StoreBusy, StoreError
from .resources import chdb_scripts_dir, sql_dir
from .sqlfiles import split_statements, uses_parameter

log = logging.getLogger(__name__)

DEFAULT_STORE = "clipsql-store"
#: Every table clipsql writes; an upsert into any other name is refused.
TABLES = ("photos", "keywords", "collections", "colors", "conversions", "photo_embeddings",
          "models", "download_status", "etl_runs", "schema_migrations",
          # clipsql eval's captioned image sets (sql/<dialect>/003_eval.sql)
          "eval_sets", "eval_images", "eval_captions", "eval_image_embeddings", "eval_caption_embeddings")
_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
#: chdb insert setting: build the HNSW index in merges (or MATERIALIZE INDEX), not per insert,
#: which costs ~8 s per 25k x 512 vectors on 2 cores (measured, see docs/speed.md: 18.7 s under load).
DEFERRED_INDEX_SETTINGS = {"materialize_skip_indexes_on_insert": 0}
#: Largest vector column (photo_embeddings' uncompressed bytes, all models) a chdb store
#: copies into its search snapshot (:mod:`clipsql.snapshot`): 1 GiB, about 500,000 photos
#: of 512 float32.
SEARCH_SNAPSHOT_MAX_BYTES = 1 << 30
#: Folders of `sql/<dialect>/` that :meth:`Store.run_script` runs files from.
SCRIPT_FOLDERS = ("etl", "session")


def store_root(store: str | os.PathLike | None = None) -> Path:
    """The store directory a backend option set uses: `store`, else :func:`default_store_dir`."""
    return Path(store) if store is not None else default_store_dir()


def default_store_dir() -> Path:
    """`$CLIPSQL_STORE`, else `./clipsql-store`."""
    return Path(os.environ.get("CLIPSQL_STORE") or DEFAULT_STORE)


def chosen_clickhouse_url(clickhouse_url: str | None = None, duckdb: str | os.PathLike | None = None) -> str | None:
    """The ClickHouse server a backend option set chooses: `clickhouse_url`, else
    `$CLICKHOUSE_URL` unless a DuckDB file is given; None: an embedded store (chdb or DuckDB).
    :func:`open_store` and :func:`clipsql.status.status` choose the backend through this."""
    return clickhouse_url or (None if duckdb else os.environ.get("CLICKHOUSE_URL"))


def vectors_array(vectors: np.ndarray) -> pa.ListArray:
    """An Arrow list<float32> column of (n, d) float32 vectors, built without a copy per row
    (one flat buffer and its offsets): the `embedding` column of every vector table."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), type=pa.float32()))


class Store:
    """An open store. Use :func:`open_store`; close it (or use `with`) when done.

    Attributes:
        engine: 'chdb', 'clickhouse' or 'duckdb'.
        dialect: 'clickhouse' (chdb and server) or 'duckdb'.
        root: the store directory (image cache, chdb data).
        description: where the store is, for messages (no password).
    """

    engine: str
    dialect: str
    #: Search through an in-memory snapshot of the vectors while they take at most this many
    #: bytes (:mod:`clipsql.snapshot`); 0 turns it off. chdb stores start at
    #: :data:`SEARCH_SNAPSHOT_MAX_BYTES`, the others at 0 (a server may opt in; DuckDB cannot).
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
        self._search_snapshot = None  # clipsql.snapshot's record of what the snapshot holds

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

    # Subclasses implement these four.
    def _execute(self, sql: str, parameters: dict | None) -> None:
        raise NotImplementedError

    def query_df(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """Run a query written in this store's dialect; parameters are bound, never formatted."""
        raise NotImplementedError

    def _insert(self, table: str, data: pa.Table) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by this store's engine, says a table does not exist: told by
        the engine's error code or class, never by its message text."""
        raise NotImplementedError

    # Shared behaviour.
    def query_clickhouse(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """Run a query written in ClickHouse's dialect ({name:Type} parameters) on this store."""
        return self.query_df(sql if self.dialect == "clickhouse" else dialect.to_duckdb(sql), parameters)

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
        path = sql_dir() / self.dialect / folder / f"{name}.sql"
        if not path.is_file():
            raise StoreError(f"no {folder} script {name!r} for {self.dialect} ({path} is missing)")
        parameters = parameters or {}
        for statement in split_statements(path.read_text(encoding="utf-8")):
            used = {n: v for n, v in parameters.items() if uses_parameter(statement, n)}
            self.command(statement, used or None, changes_data=folder != "session")

    def count(self, table: str, final: bool = True) -> int:
        """Rows of `table` as reads see them (one per key)."""
        if table not in TABLES:
            raise BadArgument(f"unknown table {table!r}")
        suffix = " FINAL" if final and self.dialect == "clickhouse" and table != "schema_migrations" else ""
        return int(self.query_df(f"SELECT count() AS n FROM {table}{suffix}" if self.dialect == "clickhouse"
                                 else f"SELECT count(*) AS n FROM {table}")["n"].iloc[0])

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ClickHouseStore(Store):
    """chdb or a ClickHouse server, both through clickhouse-connect."""

    dialect = "clickhouse"

    def __init__(self, client, engine: str, root: Path, description: str):
        super().__init__(root, description)
        self.client = client
        self.engine = engine

    def _execute(self, sql, parameters):
        with self._recovering():
            self.client.command(sql, parameters=parameters)

    def query_df(self, sql, parameters=None):
        # Through Arrow: it keeps the column names and types of an empty result.
        with self._recovering():
            return self.client.query_arrow(sql, parameters=parameters, use_strings=True).to_pandas()

    @contextlib.contextmanager
    def _recovering(self):
        """Re-raise a failed query's error, leaving the connection usable. With chdb
        (clickhouse-connect 1.12, chdb 4.4) a query that fails while it runs (throwIf, a
        bad cast mid-stream) leaves its error behind, and the next query on the client reads
        that instead of its own result ("Message metadata too long"); a throwaway SELECT
        takes it, so a notebook's next query works."""
        try:
            yield
        except Exception:
            if self.engine == "chdb":
                with contextlib.suppress(Exception):
                    self.client.command("SELECT 1")
            raise

    def _insert(self, table, data):
        settings = DEFERRED_INDEX_SETTINGS if table == "photo_embeddings" else None
        self.client.insert_arrow(table, data, settings=settings)

    def query_rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """Run a query; its rows as tuples (no DataFrame: for small answers read often)."""
        with self._recovering():
            return self.client.query(sql, parameters=parameters).result_rows

    def materialize_vector_index(self) -> None:
        """Build the HNSW index for parts inserted with it deferred (blocks until done)."""
        self.command("ALTER TABLE photo_embeddings MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 1")

    def close(self):
        self.client.close()

    def is_missing_table(self, exc):
        # clickhouse-connect's DatabaseError carries the server's code: 60 is UNKNOWN_TABLE
        # (ClickHouse src/Common/ErrorCodes.cpp).
        return getattr(exc, "code", None) == 60 or getattr(exc, "name", None) == "UNKNOWN_TABLE"


class DuckDBStore(Store):
    """DuckDB through its Python API; ClickHouse query texts pass through :mod:`clipsql.dialect`."""

    dialect = "duckdb"
    engine = "duckdb"

    def __init__(self, connection, root: Path, description: str):
        super().__init__(root, description)
        self.connection = connection
        for macro in dialect.DUCKDB_MACROS:
            connection.execute(macro)

    def _execute(self, sql, parameters):
        self.connection.execute(sql, parameters or None)

    def query_df(self, sql, parameters=None):
        with warnings.catch_warnings():
            # duckdb's fetch_df calls DataFrame.drop(inplace=True), which pandas 3.1 deprecates:
            # a warning on every query that only duckdb can fix, so it is not shown to users.
            warnings.filterwarnings("ignore", message="The inplace keyword")
            return self.connection.execute(sql, parameters or None).fetch_df()

    def _insert(self, table, data):
        self.connection.register("_clipsql_incoming", data)
        try:
            self.connection.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM _clipsql_incoming")
        finally:
            self.connection.unregister("_clipsql_incoming")

    def close(self):
        self.connection.close()

    def is_missing_table(self, exc):
        import duckdb

        return isinstance(exc, duckdb.CatalogException)


def open_store(store: str | os.PathLike | None = None, *, clickhouse_url: str | None = None,
               duckdb: str | os.PathLike | None = None, migrate_schema: bool = True) -> Store:
    """Open (and create, and migrate) a store.

    Exactly one backend is used: `duckdb` (a DuckDB file; ':memory:' for a throwaway one),
    else `clickhouse_url` (or `$CLICKHOUSE_URL`; http(s)://user:password@host:port/database),
    else chdb on disk under `store` (default :func:`default_store_dir`). `store` is also the
    image cache directory for every backend.

    Raises:
        BadArgument: both `duckdb` and `clickhouse_url` given, or a malformed URL.
        StoreError: the store cannot be opened (e.g. a chdb path locked by another process).
    """
    clickhouse_url = chosen_clickhouse_url(clickhouse_url, duckdb)
    if duckdb and clickhouse_url:
        raise BadArgument("choose one backend: --duckdb or --clickhouse-url, not both")
    root = store_root(store)
    root.mkdir(parents=True, exist_ok=True)
    if duckdb:
        import duckdb as duckdb_module

        target = str(duckdb)
        try:
            result: Store = DuckDBStore(duckdb_module.connect(target), root, f"duckdb:{target}")
        except duckdb_module.Error as exc:
            if isinstance(exc, duckdb_module.IOException) and target != ":memory:" and (
                    holder := _posix_lock_holder(Path(target))) is not None:
                raise _store_busy(target, target, holder or None, root) from exc
            raise StoreError(f"cannot open DuckDB file {target}: {exc}") from exc
    elif clickhouse_url:
        result = _open_clickhouse(clickhouse_url, root)
    else:
        result = _open_chdb(root)
    if migrate_schema:
        try:
            migrate(result)
        except BaseException:
            result.close()
            raise
    return result


@contextlib.contextmanager
def use_store(db: Store | None = None, store: str | os.PathLike | None = None, *, clickhouse_url: str | None = None,
           duckdb: str | os.PathLike | None = None) -> Iterator[Store]:
    """`db` itself when given (left open: the caller owns it, e.g. a notebook's store), else
    :func:`open_store` of the other arguments, closed on exit. The Python API functions take
    both forms through this."""
    if db is not None:
        yield db
    else:
        with open_store(store, clickhouse_url=clickhouse_url, duckdb=duckdb) as new:
            yield new


def _posix_lock_holder(path: Path) -> int | None:
    """The pid of the process holding a POSIX (fcntl) lock on `path` (DuckDB locks its file
    so), read from Linux's /proc/locks by the file's device and inode; 0 when a lock is
    held by a process that cannot be told; None when no lock is held (or not on Linux)."""
    try:
        st = path.stat()
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 22747 fe:00:2148082 0 EOF" (a "->" marks a waiter)
        if len(fields) >= 6 and fields[1] == "POSIX" and "->" not in fields:
            inode = fields[5].rsplit(":", 1)[-1]
            if inode.isdigit() and int(inode) == st.st_ino:
                return int(fields[4]) if fields[4].isdigit() else 0
    return None


def _store_busy(where, path, pid: int | None, root: Path) -> StoreBusy:
    """The StoreBusy error of a store another process holds: its pid and, when readable, its
    command line (/proc/<pid>/cmdline, or the refresh lock file of the store)."""
    from .lock import StoreLock

    argv: list[str] = []
    if pid is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            pass
    refresh = StoreLock.holder(root)  # a refresh records itself in <store>/refresh.lock
    if not argv and refresh is not None and refresh.pid == pid and refresh.command:
        argv = refresh.command.split()
    if argv:  # `python -m clipsql.cli ARGS` and `.../bin/clipsql ARGS` both shown as `clipsql ARGS`
        argv[0] = os.path.basename(argv[0])
        if argv[0].startswith("python") and argv[1:3] == ["-m", "clipsql.cli"]:
            argv = argv[2:]
        elif argv[0].startswith("python") and len(argv) > 1 and not argv[1].startswith("-"):
            argv = argv[1:]
        if os.path.basename(argv[0]) in ("clipsql", "cli.py", "clipsql.cli"):
            argv = ["clipsql"] + argv[1:]
    command = " ".join(" ".join(argv).split())
    if len(command) > 160:
        command = command[:157] + "..."
    who = "another process" if pid is None else "this process" if pid == os.getpid() else f"pid {pid}"
    if command:
        who += f" ({command})"
    elif refresh is not None and refresh.pid == pid:
        who += f" (a refresh started {refresh.started_at})"
    return StoreBusy(f"store {where} is busy: held by {who}; try again when it ends",
                     path=path, pid=pid, command=command)


def _open_chdb(root: Path) -> ClickHouseStore:
    import errno
    import fcntl
    import sys
    import tempfile

    import clickhouse_connect

    path = (root / "chdb").resolve()
    # The engine prints why an open failed on stderr (fd 2) itself, beside the exception it
    # raises: that text is caught here, so that a failure is one message (the CLI's one line).
    with tempfile.TemporaryFile() as said:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(said.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no fd 2 to catch
            saved = None
        try:
            # udf_path: the engine's user_scripts folder (empty, in a temporary directory), where
            # clipsql.udf.register_text_embedding can later put clip_text_embedding. It only takes
            # effect when this opens the process's chdb engine.
            client = clickhouse_connect.get_client(interface="chdb", path=str(path),
                                                   chdb_options={"udf_path": str(chdb_scripts_dir(path))})
            failure = None
        except Exception as exc:  # chdb raises plain RuntimeError/Exception subclasses
            client, failure = None, exc
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
        said.seek(0)
        engine_text = said.read().decode("utf-8", "replace")
    if failure is None:
        if engine_text.strip():  # what the engine says on a good open is shown as before
            os.write(2, engine_text.encode("utf-8"))
        store = ClickHouseStore(client, "chdb", root, f"chdb:{path}")
        store.search_snapshot_max_bytes = SEARCH_SNAPSHOT_MAX_BYTES
        return store
    if engine_text.strip():
        log.debug("the chdb engine said: %s", engine_text.strip())

    # Busy or not is told by the lock itself, not by the engine's words: a running engine holds
    # an exclusive flock on <path>/status and has written its PID there.
    busy, content = False, b""
    try:
        fd = os.open(path / "status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        fd = None
    if fd is not None:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)  # free: released at once
            if busy:
                content = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
    if busy:
        found = re.search(rb"PID:\s*(\d+)", content)
        raise _store_busy(path.parent, path, int(found.group(1)) if found else None, root) from failure
    said_lines = [line.strip() for line in engine_text.splitlines() if line.strip()]
    reason = said_lines[0] if said_lines else (str(failure).strip().splitlines() or [type(failure).__name__])[0]
    reason = re.sub(r"\?udf_path=[^'\s]*", "", reason).split(", Stack trace")[0]
    raise StoreError(f"cannot open chdb store at {path}: {reason}") from failure


def _open_clickhouse(url: str, root: Path) -> ClickHouseStore:
    import clickhouse_connect

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadArgument(f"ClickHouse URL must look like http(s)://user:password@host:8123/database, got {_safe(url)!r}")
    database = parts.path.strip("/") or "default"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise BadArgument(f"ClickHouse database name {database!r} must be letters, digits and _")
    kwargs = dict(host=parts.hostname, port=parts.port or (8443 if parts.scheme == "https" else 8123),
                  username=urllib.parse.unquote(parts.username or "default"),
                  password=urllib.parse.unquote(parts.password or ""), secure=parts.scheme == "https")
    try:
        admin = clickhouse_connect.get_client(**kwargs)
        admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")  # name checked above
        admin.close()
        client = clickhouse_connect.get_client(database=database, **kwargs)
    except Exception as exc:
        raise StoreError(f"cannot connect to ClickHouse at {_safe(url)}: {exc}") from exc
    return ClickHouseStore(client, "clickhouse", root, _safe(url))


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


# --- migrations --------------------------------------------------------------------------


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
    if store.dialect == "clickhouse":
        store.command("CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
                      "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                      "ENGINE = ReplacingMergeTree ORDER BY version")
    else:
        store.command("CREATE TABLE IF NOT EXISTS schema_migrations (version UINTEGER PRIMARY KEY, "
                      "name VARCHAR NOT NULL, applied_at TIMESTAMPTZ DEFAULT current_timestamp)")
    applied = set(store.query_df("SELECT version FROM schema_migrations")["version"].astype(int))
    done = []
    for path in migration_files(store.dialect):
        number = int(path.name[:3])
        if number in applied:
            continue
        started = time.perf_counter()
        for statement in split_statements(path.read_text(encoding="utf-8")):
            store.command(statement)
        store.upsert("schema_migrations", pa.table({"version": pa.array([number], pa.uint32()),
                                                    "name": [path.name]}))
        log.info("applied migration %s in %.2f s", path.name, time.perf_counter() - started)
        done.append(path.name)
    return done
