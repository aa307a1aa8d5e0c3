"""The SQL console of `clipsql sql` with no statement: SQL typed or piped in, run on the store.

One runner, :class:`SqlConsole`, runs every statement the way `clipsql sql "STATEMENT"`
does: ClickHouse SQL (rewritten for DuckDB by :mod:`clipsql.dialect`) through clipsql's own
:class:`~clipsql.engines.base.Store`, so `clip_text_embedding` is registered exactly as there
(:func:`clipsql.udf.register_text_embedding`, on the first statement that calls it), and the
store's lease rules apply: the store is held only while a statement runs (a refresh or a
notebook can use a chdb or DuckDB store while the console waits for input), and a statement
waits up to `--wait` seconds for a store another process holds. Three front ends feed it:

| stdin | front end |
| --- | --- |
| a pipe or a file | :func:`run_script`: each statement in order, its rows on stdout, errors on stderr |
| a terminal, Harlequin installed (`pip install 'clipsql[console]'`) | :func:`run_harlequin`: Harlequin, the SQL IDE for the terminal, on this store |
| a terminal, without Harlequin (or `--ui line`) | :func:`run_line_console`: prompt_toolkit's prompt when installed, else `input()` with readline; history, statements over several lines ending in ';' |

Why Harlequin through an adapter on clipsql's store, not its own adapters (checked with
harlequin 2.17, harlequin-chdb 0.1, harlequin-clickhouse 0.1.1): its DuckDB adapter runs
SQL init scripts but cannot register a Python function, so `clip_text_embedding` could not
exist there; harlequin-chdb opens the data path itself through chdb's ADBC driver, so
clipsql would have to let go of the store and hand it over for the whole session (a refresh
waiting meanwhile: no lease), and the function's script folder (per process, removed when
clipsql exits) would have to be passed in its URI and outlive clipsql;
harlequin-clickhouse speaks the native protocol (clickhouse-driver, port 9000) where a
clipsql store URL names the HTTP interface. Harlequin's adapter interface (a connection
that executes one statement and returns a cursor of rows, and a catalog) is its documented
plugin point, and :func:`harlequin_adapter` implements it on :class:`SqlConsole`: the same
editor, catalog and results on all three engines, with the text function and lease rules of
every other clipsql command.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import BadArgument, ClipsqlError, StoreBusy
from .udf import FUNCTION_NAME, register_text_embedding

if TYPE_CHECKING:
    import pandas as pd

    from .engines.base import Store

log = logging.getLogger(__name__)

#: The front ends `clipsql sql --ui` chooses from (`auto`: Harlequin when installed and
#: stdin and stdout are a terminal, else the line console).
UIS = ("auto", "harlequin", "line")
#: The first word of a statement that answers with rows (run as a query); any other
#: statement (CREATE, INSERT, ALTER, SET, ...) is run as a command and answers nothing.
ROW_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "VALUES", "FROM", "TABLE"}
    | {"PRAGMA", "CALL", "SUMMARIZE", "CHECK"}
)
#: Typed on an empty line of the line console (without ';'): leave it.
EXIT_WORDS = frozenset({"exit", "quit", "\\q"})
#: The line console's history file (`$CLIPSQL_HISTORY`; empty: no history kept).
HISTORY_ENV = "CLIPSQL_HISTORY"
DEFAULT_HISTORY = Path("~/.clipsql_history")
PROMPT = "clipsql> "
CONTINUATION_PROMPT = "     ..> "

#: A frame -> text, as `clipsql sql --format` writes it (the CLI's render_frame).
Render = Callable[["pd.DataFrame"], str]
#: prompt text -> one line typed, without its newline; raises EOFError at the end of input
#: (Ctrl-D) and KeyboardInterrupt for Ctrl-C.
ReadLine = Callable[[str], str]


# --- statements ----------------------------------------------------------------------------


def cut_statements(text: str, *, final: bool = False) -> tuple[list[str], str]:
    """The whole statements at the start of `text`, and the unfinished rest.

    A statement ends at a ';' outside string literals ('...', with '' and backslash escapes,
    as ClickHouse reads them), quoted identifiers ("..." and `...`) and comments (`--` to the
    end of the line, `/* ... */`). Statements with nothing but comments and blanks are dropped.

    Args:
        final: `text` is the end of the input: an unfinished rest with code in it (no ';',
            or an open quote) is one more statement.

    Returns:
        (the statements, without their ';' and stripped; the text after the last ';', as
        given, or '' when `final`).
    """
    statements: list[str] = []
    start = i = 0
    has_code = False
    n = len(text)
    while i < n:
        char = text[i]
        if char in "'\"`":
            i, has_code = _end_of_quoted(text, i), True
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char == ";":
            if has_code:
                statements.append(text[start:i].strip())
            start, i, has_code = i + 1, i + 1, False
        else:
            has_code = has_code or not char.isspace()
            i += 1
    if final:
        return statements + ([text[start:].strip()] if has_code else []), ""
    return statements, text[start:]


def _end_of_quoted(text: str, at: int) -> int:
    """The index after the quoted literal or identifier opening at `at` (len(text) if it is
    not closed yet): a doubled quote or a backslash escapes the next character."""
    quote, i, n = text[at], at + 1, len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


_FIRST_WORD_RE = re.compile(r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)


def returns_rows(statement: str) -> bool:
    """Whether `statement` answers with rows: its first word (after comments and opening
    parentheses) is one of :data:`ROW_KEYWORDS`."""
    found = _FIRST_WORD_RE.match(statement)
    return found is not None and found.group(1).upper() in ROW_KEYWORDS


def describe_error(exc: BaseException) -> str:
    """A statement's failure as one line: clipsql's own message, or the engine error's class
    and first line (without ClickHouse's stack trace)."""
    text = " ".join(str(exc).split("\n", 1)[0].split()).split(", Stack trace")[0]
    return text if isinstance(exc, ClipsqlError) else f"{type(exc).__name__}: {text}".rstrip(": ")


# --- running statements on the store -------------------------------------------------------


class SqlConsole:
    """Runs statements on a store as `clipsql sql "STATEMENT"` does (one at a time: the
    Harlequin front end calls it from several threads).

    Attributes:
        db: the open store (the console does not close it).
        device: where `clip_text_embedding` runs: auto, cpu, cuda[:N], mps.
        text_function_model: the model label `clip_text_embedding` embeds with, once a
            statement registered it (None before).
    """

    def __init__(self, db: Store, *, device: str = "auto"):
        self.db = db
        self.device = device
        self.text_function_model: str | None = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """Where the store is (no password) and its engine, for a banner."""
        return f"{self.db.description} ({self.db.engine})"

    def run(self, statement: str) -> pd.DataFrame | None:
        """Run one statement of ClickHouse SQL (rewritten for DuckDB by the store).

        `clip_text_embedding` is registered first when the statement calls it and this console
        has not registered it yet (the model loads on the function's first call). A statement
        whose first word is in :data:`ROW_KEYWORDS` is a query; any other is a command.

        Args:
            statement: one statement; a trailing ';' is allowed.

        Returns:
            The query's rows (an empty frame keeps its columns), or None for a command.

        Raises:
            BadArgument: an empty statement.
            StoreBusy: another process held the store for all of the store's wait.
            NotFound, ModelError, StoreError: `clip_text_embedding` cannot be registered (no
                vectors in the store; a server without the function).
            Exception: the engine's own error for a statement it refuses.
        """
        text = statement.strip()
        while text.endswith(";"):
            text = text[:-1].rstrip()
        if not text:
            raise BadArgument("the SQL statement is empty")
        with self._lock, self.db.session():
            if self.text_function_model is None and FUNCTION_NAME in text.lower():
                self.text_function_model = register_text_embedding(self.db, device=self.device)
            if returns_rows(text):
                return self.db.query_clickhouse(text)
            self.db.command(self.db.translate(text))
            return None

    def catalog_rows(self) -> list[tuple[str, str, str, str]]:
        """The store's relations and their columns: (relation, kind, column, type) rows, in
        relation order and column position (sql/<dialect>/console/catalog.sql)."""
        with self._lock:
            frame = self.db.query_df(self.db.script_path("catalog", "console").read_text(encoding="utf-8"))
        return [(str(r), str(k), str(c), str(t)) for r, k, c, t in frame.itertuples(index=False)]


# --- the script and the line console -------------------------------------------------------


def run_script(console: SqlConsole, lines: Iterable[str], render: Render, out: TextIO, err: TextIO) -> int:
    """Run the statements of `lines` (a pipe or a file), each as soon as its ';' is read, and
    an unfinished rest at the end (no ';', or an open quote) as one more statement.

    A query's rows go to `out` in `render`'s format, one result after another (a blank line
    between tables); a statement that fails gets one line on `err`, `clipsql: error:
    statement N (line L): ...`, and the next one runs.

    Returns:
        How many statements failed.

    Raises:
        StoreBusy: the store stayed busy for its whole wait (no later statement could run).
    """
    failures = count = shown = 0

    def run(statement: str, first_line: int) -> None:
        nonlocal failures, count, shown
        count += 1
        try:
            frame = console.run(statement)
        except StoreBusy:
            raise
        except Exception as exc:  # a statement the engine refuses, a text function that cannot load
            failures += 1
            log.debug("statement %d failed", count, exc_info=True)
            err.write(f"clipsql: error: statement {count} (line {first_line}): {describe_error(exc)}\n")
            err.flush()
            return
        if frame is not None:
            out.write(("\n" if shown else "") + render(frame) + "\n")
            out.flush()
            shown += 1

    pending, first_line = "", 1  # the unfinished text, and the line where it starts
    for line_number, line in enumerate(lines, start=1):
        if not pending.strip():
            first_line = line_number
        statements, pending = cut_statements(pending + (line if line.endswith("\n") else line + "\n"))
        for statement in statements:
            run(statement, first_line)
            first_line = line_number  # the next statement starts on this line, after the ';'
    for statement in cut_statements(pending, final=True)[0]:
        run(statement, first_line)
    return failures


def run_line_console(
    console: SqlConsole,
    render: Render,
    out: TextIO,
    err: TextIO,
    read_line: ReadLine | None = None,
) -> None:
    """The interactive line console: read lines until a statement ends with ';', run it, show
    its rows (`render`) and how long it took; a failing statement prints one line and the
    console goes on. Ctrl-C drops the statement being typed, or interrupts the one running;
    Ctrl-D (end of input) or `exit`/`quit`/`\\q` on an empty line leaves. SIGTERM still ends
    the process (KeyboardInterrupt, exit status 130 from the CLI).

    Args:
        read_line: prompt -> line (:data:`ReadLine`); default :func:`line_reader`.
    """
    read = read_line or line_reader()
    err.write(
        f"clipsql SQL console on {console.description}: ClickHouse SQL, {FUNCTION_NAME}(text) "
        "available; end a statement with ';', Ctrl-D leaves.\n"
    )
    err.flush()
    pending = ""
    with _terminating_on_sigterm():
        while True:
            try:
                line = read(CONTINUATION_PROMPT if pending.strip() else PROMPT)
            except _Terminated:
                raise
            except KeyboardInterrupt:
                pending = ""
                err.write("^C\n")
                continue
            except EOFError:
                if cut_statements(pending, final=True)[0]:
                    err.write("(the unfinished statement was not run)\n")
                err.write("\n")
                err.flush()
                return
            if not pending.strip() and line.strip().lower() in EXIT_WORDS:
                return
            statements, pending = cut_statements(pending + line + "\n")
            for statement in statements:
                _run_interactively(console, statement, render, out, err)


def _run_interactively(console: SqlConsole, statement: str, render: Render, out: TextIO, err: TextIO) -> None:
    started = time.perf_counter()
    try:
        frame = console.run(statement)
    except _Terminated:
        raise
    except KeyboardInterrupt:
        err.write("clipsql: the statement was interrupted\n")
        return
    except Exception as exc:
        log.debug("statement failed", exc_info=True)
        err.write(f"clipsql: error: {describe_error(exc)}\n")
        err.flush()
        return
    seconds = time.perf_counter() - started
    if frame is not None:
        out.write(render(frame) + "\n")
        out.flush()
        err.write(f"({len(frame)} row{'' if len(frame) == 1 else 's'}, {seconds:.2f} s)\n")
    else:
        err.write(f"(done, {seconds:.2f} s)\n")
    err.flush()


class _Terminated(KeyboardInterrupt):
    """SIGTERM while the line console runs: ends the console (it catches plain Ctrl-C)."""


@contextlib.contextmanager
def _terminating_on_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` for the block (main thread only), so `kill` ends a
    console that goes on after Ctrl-C; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise _Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def history_path() -> Path | None:
    """The line console's history file: `$CLIPSQL_HISTORY`, else ~/.clipsql_history; None
    when the variable is set empty (no history kept)."""
    value = os.environ.get(HISTORY_ENV)
    if value is not None and not value.strip():
        return None
    return Path(value or DEFAULT_HISTORY).expanduser()


def line_reader(history: Path | None = None) -> ReadLine:
    """The line console's input (:data:`ReadLine`): prompt_toolkit's prompt, with its file
    history and line editing, when installed; else `input()`, with readline's editing and
    history where Python has readline. `history`: default :func:`history_path`."""
    history = history if history is not None else history_path()
    try:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
    except ImportError:
        return _readline_reader(history)
    session: Any = PromptSession(history=FileHistory(str(history)) if history is not None else InMemoryHistory())
    return lambda prompt: session.prompt(prompt)


def _readline_reader(history: Path | None) -> ReadLine:
    try:
        import readline
    except ImportError:  # no readline (Windows): plain input()
        return input
    if history is not None:
        with contextlib.suppress(OSError):
            history.touch()  # append_history_file needs the file
            readline.read_history_file(history)

    def read(prompt: str) -> str:
        line = input(prompt)
        if history is not None and line.strip():
            with contextlib.suppress(OSError):
                readline.append_history_file(1, history)
        return line

    return read


# --- Harlequin -----------------------------------------------------------------------------


def harlequin_installed() -> bool:
    """Whether Harlequin can be imported (the `console` extra)."""
    import importlib.util

    return importlib.util.find_spec("harlequin") is not None


def _short_type(type_name: str) -> str:
    """A column type as Harlequin shows it, 1-3 characters: '#' an integer, '#.#' a float,
    's' text, '[]' an array, 'd' a date, 'ts' a time, 't/f' a boolean, '?' anything else."""
    name = type_name.lower()
    for unwrap in ("nullable(", "lowcardinality("):
        name = name.replace(unwrap, "")
    if name.startswith("array") or name.endswith("[]") or name.startswith("list"):
        return "[]"
    for needle, label in (
        ("bool", "t/f"),
        ("int", "#"),
        ("float", "#.#"),
        ("double", "#.#"),
        ("decimal", "#.#"),
        ("real", "#.#"),
        ("datetime", "ts"),
        ("timestamp", "ts"),
        ("date", "d"),
        ("string", "s"),
        ("char", "s"),
        ("text", "s"),
        ("utf8", "s"),
        ("uuid", "uid"),
    ):
        if needle in name:
            return label
    return "?"


def harlequin_adapter(console: SqlConsole) -> Any:
    """A Harlequin adapter (harlequin.adapter.HarlequinAdapter) whose connection runs every
    statement through `console`: rows as a pyarrow Table, errors as HarlequinQueryError, and a
    catalog of the store's relations and columns (:meth:`SqlConsole.catalog_rows`).

    Raises:
        BadArgument: Harlequin is not installed.
    """
    try:
        import pyarrow as pa
        from harlequin.adapter import HarlequinAdapter, HarlequinConnection, HarlequinCursor
        from harlequin.autocomplete.completion import HarlequinCompletion
        from harlequin.catalog import Catalog, CatalogItem
        from harlequin.exception import HarlequinQueryError
    except ImportError as exc:
        raise BadArgument(
            "the Harlequin console is not installed: pip install 'clipsql[console]' (or use --ui line)"
        ) from exc

    class ResultCursor(HarlequinCursor):
        """The rows of one statement, already run (a pyarrow Table)."""

        def __init__(self, table: pa.Table) -> None:
            self.table = table
            self.limit: int | None = None

        def columns(self) -> list[tuple[str, str]]:
            return [(field.name, _short_type(str(field.type))) for field in self.table.schema]

        def set_limit(self, limit: int) -> ResultCursor:
            self.limit = max(int(limit), 0)
            return self

        def fetchall(self) -> pa.Table:
            return self.table if self.limit is None else self.table.slice(0, self.limit)

    class StoreConnection(HarlequinConnection):
        """Harlequin's connection: the console's store."""

        def __init__(self) -> None:
            super().__init__(init_message=f"clipsql: {console.description}; {FUNCTION_NAME}(text) available")

        def execute(self, query: str) -> ResultCursor | None:
            try:
                frame = console.run(query)
            except Exception as exc:
                raise HarlequinQueryError(msg=describe_error(exc), title="clipsql could not run your query:") from exc
            if frame is None:
                return None
            return ResultCursor(_to_arrow(pa, frame))

        def get_catalog(self) -> Catalog:
            relations: dict[str, CatalogItem] = {}
            for relation, kind, column, type_name in console.catalog_rows():
                item = relations.get(relation)
                if item is None:
                    label = "v" if "view" in kind.lower() else "t"
                    item = CatalogItem(_quoted(relation), _quoted(relation), relation, label, [], kind)
                    relations[relation] = item
                item.children.append(
                    CatalogItem(
                        f"{_quoted(relation)}.{_quoted(column)}",
                        _quoted(column),
                        column,
                        _short_type(type_name),
                        [],
                        type_name,
                    )
                )
            return Catalog(items=list(relations.values()))

        def get_completions(self) -> list[HarlequinCompletion]:
            return [HarlequinCompletion(FUNCTION_NAME, "fn", f"{FUNCTION_NAME}(", 900)]

    class StoreAdapter(HarlequinAdapter):
        """The clipsql store as a Harlequin adapter."""

        ADAPTER_DETAILS = "clipsql's store: chdb, a ClickHouse server or DuckDB, with clip_text_embedding."

        def __init__(self, conn_str: Sequence[str] = (), read_only: bool = False, **options: Any) -> None:
            self.conn_str = conn_str

        def connect(self) -> StoreConnection:
            return StoreConnection()

        @property
        def connection_id(self) -> str:
            return console.db.description

    return StoreAdapter()


def _quoted(identifier: str) -> str:
    """`identifier` as SQL writes it: bare when it is a plain lowercase word, else in double quotes."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", identifier):
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def _to_arrow(pa: Any, frame: pd.DataFrame) -> Any:
    """A result frame as a pyarrow Table (Harlequin's results viewer); a column pyarrow cannot
    type (mixed values) is shown as text."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.Table.from_pandas(frame.astype(str), preserve_index=False)


def harlequin_app(console: SqlConsole) -> Any:
    """Harlequin's app (harlequin.Harlequin) on the console's store, not started: its query
    history and editor buffers are kept per store (Harlequin's own cache folders).

    Raises:
        BadArgument: Harlequin is not installed.
    """
    adapter = harlequin_adapter(console)
    from harlequin import Harlequin

    return Harlequin(
        adapter=adapter,
        adapter_name="clipsql",
        connection_hash=hashlib.sha256(console.db.description.encode()).hexdigest()[:16],
        no_download_tzdata=True,
    )


def run_harlequin(console: SqlConsole) -> int:
    """Harlequin, the SQL IDE for the terminal, on the console's store; blocks until it is
    closed (Ctrl-Q).

    Returns:
        Harlequin's exit status (0; 1 it crashed; 2 it could not start).

    Raises:
        BadArgument: Harlequin is not installed.
    """
    app = harlequin_app(console)
    app.run()
    return int(app.return_code or 0)
