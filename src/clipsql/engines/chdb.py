"""chdb: ClickHouse embedded in this process (the default store), through clickhouse-connect.

Same dialect, DDL and queries as a server (sql/clickhouse/); what differs is here: the data
lives under `<store>/chdb`, only one process may open a path (the engine holds a flock on
`chdb/status`), the text function runs as an executable script from a per-process
user_scripts folder, a failed statement leaves an error behind on the client, and the
store searches through an in-memory snapshot of its vectors (clipsql.snapshot).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from ..errors import StoreError
from ..resources import chdb_scripts_dir, sql_dir
from .base import Capabilities
from .busy import store_busy
from .clickhouse import ClickHouseStore

log = logging.getLogger(__name__)

SCHEMES = ("chdb",)
CAPABILITIES = Capabilities(
    dialect="clickhouse",
    needs_final=True,
    vector_index=True,
    session_snapshot=True,
    text_function="engine_script",
    one_process=True,
)
#: Largest vector column (photo_embeddings' uncompressed bytes, all models) a chdb store
#: copies into its search snapshot (:mod:`clipsql.snapshot`): 4 GiB, about 2,000,000 photos
#: of 512 float32. The searching process then holds the copy (4 bytes per float) plus, past
#: 200,000 photos with faiss-cpu installed, an int8 first pass (1 byte per float):
#: 2.5 GB at 1,000,000 x 512 (bench/search_memory.py).
SEARCH_SNAPSHOT_MAX_BYTES = 4 << 30


class ChdbStore(ClickHouseStore):
    """A chdb store (see the module docstring)."""

    engine = "chdb"
    capabilities = CAPABILITIES
    search_snapshot_max_bytes = SEARCH_SNAPSHOT_MAX_BYTES

    def __init__(self, target, **lease) -> None:
        super().__init__(target, **lease)
        #: {table: its data directory}, found by tables_state once per connection.
        self._table_dirs: dict[str, str] = {}

    def _connect(self):
        self.client = connect_chdb(self.target)
        # Tables may have been dropped and made again while another process held the store.
        self._table_dirs = {}

    def tables_state(self, tables):
        """The names of the entries of each table's data directory: a part directory per data
        part (an insert, merge or mutation makes a new one, a DROP or TRUNCATE removes them),
        so the token changes with the rows, whoever wrote them. ~0.13 ms for four tables
        (os.listdir; measured on a 100-photo store), against ~1.5 ms for system.parts.
        None when a table has no directory (dropped: the caller rebuilds).

        The directories are read without holding the engine (another process may hold it:
        its writes show there too); only finding them, once per connection, is a query."""
        if not set(tables) <= set(self._table_dirs):
            sql = (sql_dir() / "clickhouse" / "session" / "table_data_paths.sql").read_text(encoding="utf-8")
            with self.session():
                rows = self._query_df(sql, {"tables": list(tables)})
            self._table_dirs = {str(name): str(paths[0]) for name, paths in zip(rows["name"], rows["data_paths"])}
        state = []
        for table in tables:
            try:
                state.append((table, tuple(sorted(os.listdir(self._table_dirs[table])))))
            except (KeyError, OSError):  # a table dropped, or made again elsewhere under a new directory
                self._table_dirs = {}
                return None
        return tuple(state)

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
            with contextlib.suppress(Exception):
                self.client.command("SELECT 1")
            raise


def exists(target) -> bool:
    """Whether a chdb store is there (its data directory), without starting the engine."""
    return (target.root / "chdb").is_dir()


def data_path(target) -> Path:
    """The engine's data directory of a store: `<store>/chdb`, absolute."""
    return (target.root / "chdb").resolve()


def holder(target) -> int | None:
    """The pid of the process whose chdb engine has this store open now (0: held, pid not
    readable), or None when it is free; told without starting an engine: a running engine
    holds an exclusive flock on `<data>/status` and has written its PID there."""
    try:
        fd = os.open(data_path(target) / "status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)  # free: released at once
            return None
        found = re.search(rb"PID:\s*(\d+)", os.pread(fd, 4096, 0))
        return int(found.group(1)) if found else 0
    finally:
        os.close(fd)


def open_target(target, **lease) -> ChdbStore:
    """The chdb store under `target.location` (its data in `<location>/chdb`), connected on
    first use; a process waiting for it announces itself in `<location>/waiting/`."""
    return ChdbStore(target, waiting_dir=target.root / "waiting", **lease)


#: ClickHouse's error code CANNOT_OPEN_FILE (src/Common/ErrorCodes.cpp): how the engine says it
#: could not take the lock on `<data>/status`.
CANNOT_OPEN_FILE = 76
_CODE_RE = re.compile(r"\bCode:\s*(\d+)")
#: What the engine says when another process holds the lock on `<data>/status`
#: (ClickHouse's StatusFile).
_HELD_TEXT = "Another server instance in same directory is already running"


def connect_chdb(target):
    """Start this process's chdb engine on the store's data path; its clickhouse-connect client.

    Raises:
        StoreBusy: another process has the engine open on this path (:func:`holder`), or had it
            a moment ago: the engine could not lock the path (CANNOT_OPEN_FILE) although no
            holder is there now (one that was letting go); a wait tries again.
        StoreError: any other failure to open, with the engine's first line of reason.
    """
    return _start_engine(target)


def _start_engine(target):
    import clickhouse_connect

    root = target.root
    path = data_path(target)
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
            client = clickhouse_connect.get_client(
                interface="chdb", path=str(path), chdb_options={"udf_path": str(chdb_scripts_dir(path))}
            )
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
        return client
    if engine_text.strip():
        log.debug("the chdb engine said: %s", engine_text.strip())

    # Busy or not is told by the lock itself, not by the engine's words.
    held = holder(target)
    if held is not None:
        raise store_busy(path.parent, path, held or None, root) from failure
    said_lines = [line.strip() for line in engine_text.splitlines() if line.strip()]
    reason = said_lines[0] if said_lines else (str(failure).strip().splitlines() or [type(failure).__name__])[0]
    reason = re.sub(r"\?udf_path=[^'\s]*", "", reason).split(", Stack trace")[0]
    # chdb raises plain exceptions; the engine's code is in its text, as clickhouse-connect reads it.
    text = f"{failure} {engine_text}"
    # Every code in the text: the exception and the engine's own words may carry different ones.
    codes = {int(code) for code in _CODE_RE.findall(text)}
    # The holder may be gone by now, its status file with it (the engine removes it when it
    # closes): the engine's own words say the lock was held a moment ago, so a wait tries again.
    if CANNOT_OPEN_FILE in codes and ((path / "status").exists() or _HELD_TEXT in text):
        raise store_busy(path.parent, path, None, root) from failure
    raise StoreError(f"cannot open chdb store at {path}: {reason}") from failure
