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

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from ..cache import images_dir
from ..constants import MAX_WIDTH
from ..errors import BadArgument, StoreBusy, StoreError
from ..resources import sql_dir
from ..sqlfiles import split_statements, uses_parameter

if TYPE_CHECKING:  # pandas loads with the first DataFrame asked for: a CLI search prints from Arrow
    import pandas as pd

log = logging.getLogger(__name__)

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
SCRIPT_FOLDERS = ("etl", "session", "vector_index")
#: How long an operation waits for a store another process holds, seconds (the CLI's --wait).
DEFAULT_WAIT_S = 300.0
#: A store lets go of an idle one-process engine after this many seconds when another
#: process waits for it (announced in the store's waiting folder) ...
IDLE_RELEASE_S = 0.5
#: ... and after this many seconds in any case, so a notebook kernel left open holds nothing.
MAX_IDLE_S = 30.0

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
    """A store. Use :func:`clipsql.db.open_store`; close it (or use `with`) when done.

    A store object holds its engine only while it works. An operation (a query, a write)
    connects when it needs to, waiting up to :attr:`wait_s` seconds while another process
    holds the store (chdb and DuckDB let one process in at a time); on an engine with that
    rule (:attr:`Capabilities.one_process`) the store lets go of the engine after
    :attr:`idle_release_s` seconds without an operation, so a notebook kernel left open, or a
    refresh that is downloading and embedding, blocks nobody. ``with store.session():`` holds
    the engine across several operations; :meth:`release` lets go at once. What lives only in
    the engine's session is rebuilt after a release: the search snapshot on the next search,
    the text function through :meth:`on_connect`.

    The protocol an engine implements (the methods that raise NotImplementedError here):
    :meth:`translate`, :meth:`_connect`, :meth:`_disconnect`, :meth:`_execute`,
    :meth:`_query_arrow`, :meth:`_insert`, :meth:`_after_load` and :meth:`is_missing_table`;
    the text function is registered by :mod:`clipsql.udf` according to
    :attr:`Capabilities.text_function`.

    Attributes:
        engine: the registry name of the engine ('chdb', 'clickhouse', 'duckdb').
        capabilities: what the engine can do (:class:`Capabilities`).
        root: the store directory (image cache; for chdb also the data).
        description: where the store is, for messages (no password).
        wait_s: how long an operation waits for a store another process holds, seconds; 0
            fails at once. Past it, :class:`~clipsql.errors.StoreBusy` (the CLI's exit 75).
        idle_release_s: on a one-process engine, seconds without an operation after which
            the engine is let go when another process waits for it; None: never for that.
        max_idle_s: on a one-process engine, seconds without an operation after which the
            engine is let go in any case; None keeps it until :meth:`close`.
    """

    engine: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: Search through an in-memory snapshot of the vectors while they take at most this many
    #: bytes (:mod:`clipsql.snapshot`); 0 turns it off. Each engine sets its default.
    search_snapshot_max_bytes: int = 0

    #: How long :meth:`remember` keeps a value, seconds. A write through any Store of this
    #: process forgets everything at once, and so does every new connection (another process
    #: may have written while this one did not hold the store); a write by another process
    #: to a shared ClickHouse server is seen after at most this long.
    MEMO_TTL_S = 30.0
    #: Bumped by every write through any Store of this process; remembered values of an older
    #: generation are stale.
    _generation = 0
    #: Polling of a busy store: first and longest pause between attempts, seconds. An attempt
    #: on a held chdb path fails in about 0.1 s (measured: bench/store_wait.py).
    _WAIT_FIRST_PAUSE_S = 0.05
    _WAIT_MAX_PAUSE_S = 0.5

    def __init__(
        self,
        root: Path,
        description: str,
        *,
        wait_s: float = DEFAULT_WAIT_S,
        idle_release_s: float | None = IDLE_RELEASE_S,
        max_idle_s: float | None = MAX_IDLE_S,
        waiting_dir: Path | None = None,
    ):
        self.root = Path(root)
        self.description = description
        self.wait_s = float(wait_s)
        one_process = self.capabilities.one_process
        self.idle_release_s = idle_release_s if one_process else None
        self.max_idle_s = max_idle_s if one_process else None
        #: Where a process waiting for this store announces itself (a file named by its pid),
        #: so that the holder lets go as soon as it is idle.
        self.waiting_dir = waiting_dir
        self._memo: dict = {}
        self._search_snapshot: Any = None  # clipsql.snapshot's record of what the snapshot holds
        self._lease = threading.RLock()
        self._users = 0  # operations and session() blocks in progress
        self._connected = False
        self._closed = False
        self._last_used = time.monotonic()
        self._idle_timer: threading.Timer | None = None
        self._connect_hooks: dict[str, Callable[[Store], None]] = {}
        self.connections = 0  # how many times the engine was connected (for tests and benches)

    @property
    def dialect(self) -> str:
        """The engine's SQL dialect: the folder of `sql/` it runs ('clickhouse', 'duckdb')."""
        return self.capabilities.dialect

    # --- the protocol: each engine implements these --------------------------------------

    def translate(self, sql: str) -> str:
        """A query written in ClickHouse's dialect ({name:Type} parameters), as this engine runs it."""
        raise NotImplementedError

    def _connect(self) -> None:
        """Open the engine for this store (once; :meth:`_disconnect` undoes it).

        Raises:
            StoreBusy: another process holds the store (told by its lock, naming the holder).
            StoreError: any other reason it cannot be opened.
        """
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Let go of the engine (another process may open the store afterwards)."""
        raise NotImplementedError

    def _execute(self, sql: str, parameters: dict | None) -> None:
        """Run one statement of this engine's dialect that returns nothing."""
        raise NotImplementedError

    def _query_arrow(self, sql: str, parameters: dict | None) -> pa.Table:
        """Run a query of this engine's dialect, parameters bound; an empty result keeps its
        column names and types."""
        raise NotImplementedError

    def _query_df(self, sql: str, parameters: dict | None) -> pd.DataFrame:
        return self._query_arrow(sql, parameters).to_pandas()

    def _query_rows(self, sql: str, parameters: dict | None) -> list[tuple]:
        table = self._query_arrow(sql, parameters)
        return list(zip(*(column.to_pylist() for column in table.columns))) if table.num_columns else []

    def _insert(self, table: str, data: pa.Table) -> None:
        """Insert `data` into `table` (a name of :data:`TABLES`), replacing rows of the same key."""
        raise NotImplementedError

    def _after_load(self) -> bool:
        """See :meth:`after_load`."""
        raise NotImplementedError

    def tables_state(self, tables: tuple[str, ...]) -> tuple | None:
        """A cheap token that changes whenever the rows of `tables` may have changed, by any
        writer (this process, another one, SQL by hand), or None when the engine has no such
        token (then :mod:`clipsql.snapshot` reads the tables' active parts, ~1.5 ms)."""
        return None

    def ann_table(self, dim: int) -> str | None:
        """The table whose vector index answers approximate searches over vectors `dim` wide
        (`photo_embeddings_ann_<dim>`), or None when the engine has no vector index (its
        searches scan exactly). The name is made from the integer, never from a user's text.

        Raises:
            BadArgument: `dim` is not an integer in 1..65535 (models.dim is a UInt16).
        """
        check_width(dim)
        return None

    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by this store's engine, says a table does not exist: told by
        the engine's error code or class, never by its message text."""
        raise NotImplementedError

    # --- holding the engine ---------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[Store]:
        """Hold the engine for the block (connecting first, waiting up to :attr:`wait_s` for a
        store another process holds); blocks nest. Every operation runs in one.

        Raises:
            StoreBusy: the store stayed busy for :attr:`wait_s` seconds.
            StoreError: the store is closed, or cannot be opened.
        """
        with self._lease:
            if self._closed:
                raise StoreError(f"store {self.description} is closed")
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            if not self._connected:
                self._connect_waiting()
            self._users += 1
        try:
            yield self
        finally:
            with self._lease:
                self._users -= 1
                self._last_used = time.monotonic()
                if self._users == 0 and self._connected:
                    self._arm_idle_timer()

    def release(self) -> None:
        """Let go of the engine now unless an operation or session() block is running (the
        next operation connects again)."""
        with self._lease:
            if self._users == 0:
                self._let_go()

    @property
    def connected(self) -> bool:
        """Whether this store holds its engine now."""
        return self._connected

    def on_connect(self, name: str, hook: Callable[[Store], None]) -> None:
        """Run `hook(store)` now (connecting if needed) and after every later connect: for what
        lives in the engine's session, e.g. a function registered on a DuckDB connection.
        A later hook of the same `name` replaces the earlier one."""
        with self.session():
            self._connect_hooks[name] = hook
            hook(self)

    def _connect_waiting(self) -> None:
        """Connect, polling while the store is busy, for up to :attr:`wait_s` seconds. The
        first busy answer is logged once (WARNING) with its holder, so a person sees what
        the command waits for."""
        try:
            self._connect()
        except StoreBusy as busy:
            if self.wait_s <= 0:
                raise
            log.warning("waiting up to %s for %s", _seconds(self.wait_s), str(busy).split("; try again")[0])
            with self._announced_wait():
                self._connect_polling(time.monotonic() + self.wait_s)
        self._connected = True
        self.connections += 1
        # Another process may have written while this one did not hold the store.
        self.forget()
        try:
            for hook in self._connect_hooks.values():
                hook(self)
        except BaseException:
            self._let_go()
            raise

    def _connect_polling(self, deadline: float) -> None:
        pause = self._WAIT_FIRST_PAUSE_S
        while True:
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            try:
                self._connect()
                return
            except StoreBusy as busy:
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"{busy} (waited {self.wait_s:g} s)", path=busy.path, pid=busy.pid, command=busy.command
                    ) from busy
                pause = min(pause * 2, self._WAIT_MAX_PAUSE_S)

    #: How often an idle holder looks for waiting processes, seconds.
    _IDLE_POLL_S = 0.25

    def _arm_idle_timer(self) -> None:
        if self.idle_release_s is None and self.max_idle_s is None:
            return
        delay = min(x for x in (self.idle_release_s, self.max_idle_s) if x is not None)
        self._idle_timer = threading.Timer(max(delay, 0.0), self._on_idle)
        self._idle_timer.daemon = True
        self._idle_timer.start()

    def _on_idle(self) -> None:
        """The idle timer: let go when idle long enough and someone waits, or idle too long;
        else look again shortly."""
        with self._lease:
            self._idle_timer = None
            if self._users or not self._connected or self._closed:
                return
            idle = time.monotonic() - self._last_used
            if self.max_idle_s is not None and idle >= self.max_idle_s:
                why = "idle"
            elif self.idle_release_s is not None and idle >= self.idle_release_s and self._others_waiting():
                why = "wanted by another process"
            else:
                self._idle_timer = threading.Timer(self._IDLE_POLL_S, self._on_idle)
                self._idle_timer.daemon = True
                self._idle_timer.start()
                return
            self._let_go()
            log.debug("%s: engine released after %.1f s idle (%s)", self.description, idle, why)

    def _others_waiting(self) -> bool:
        """Whether another live process announced that it waits for this store."""
        try:
            names = os.listdir(self.waiting_dir) if self.waiting_dir is not None else []
        except OSError:
            return False
        for name in names:
            if name.isdigit() and int(name) != os.getpid() and _alive(int(name)):
                return True
        return False

    @contextlib.contextmanager
    def _announced_wait(self) -> Iterator[None]:
        """Announce this process in :attr:`waiting_dir` for the block (best effort)."""
        mark = None
        if self.waiting_dir is not None:
            try:
                self.waiting_dir.mkdir(parents=True, exist_ok=True)
                mark = self.waiting_dir / str(os.getpid())
                mark.touch()
            except OSError:
                mark = None
        try:
            yield
        finally:
            if mark is not None:
                with contextlib.suppress(OSError):
                    mark.unlink()

    def _let_go(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._connected:
            self._connected = False
            self._search_snapshot = None  # it lived in the engine's session
            self._disconnect()

    def close(self) -> None:
        """Let go of the engine for good (a later operation raises StoreError)."""
        with self._lease:
            self._let_go()
            self._closed = True

    # --- operations -----------------------------------------------------------------------

    def query_arrow(self, sql: str, parameters: dict | None = None) -> pa.Table:
        """Run a query written in this store's dialect; parameters are bound, never formatted.
        The column names and types of an empty result are kept."""
        with self.session():
            return self._query_arrow(sql, parameters)

    def query_df(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """:meth:`query_arrow` as a pandas DataFrame."""
        with self.session():
            return self._query_df(sql, parameters)

    def query_rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """Run a query; its rows as tuples (for small answers)."""
        with self.session():
            return self._query_rows(sql, parameters)

    def query_clickhouse(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """Run a query written in ClickHouse's dialect ({name:Type} parameters) on this store."""
        return self.query_df(self.translate(sql), parameters)

    def after_load(self) -> bool:
        """Bring each width's vector index up to the stored vectors (on engines that have
        one): rows added and removed, the index built for rows added; cheap when nothing
        changed, and a run killed midway is finished by the next. Blocks until done.

        Returns:
            True when there was work of this kind to do (the engine has a vector index).
        """
        with self.session():
            return self._after_load()

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
        with self.session():
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
            with self.session():
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
        with self.session():  # the statements of one script run in one engine session
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


def check_width(dim: object) -> int:
    """`dim` as a vector width: an int in 1..:data:`MAX_WIDTH`.

    Raises:
        BadArgument: anything else (a bool, a float, a number out of range).
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= int(dim) <= MAX_WIDTH:
        raise BadArgument(f"a vector width must be an integer in 1..{MAX_WIDTH}, got {dim!r}")
    return int(dim)


def _seconds(seconds: float) -> str:
    """`seconds` for a message: '300 s (5 min)', '2.5 s'."""
    return f"{seconds:g} s" + (f" ({seconds / 60:g} min)" if seconds >= 120 else "")


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
