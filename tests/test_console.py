"""The SQL console (issue 13, part 2): `clipsql sql` with no statement, on chdb and DuckDB
stores built with the tiny model. Statements piped in and typed at a terminal (a real
process on a pseudo-terminal) run as `clipsql sql STATEMENT` runs them, clip_text_embedding
included; a failing statement is reported and the console goes on; end of input exits; the
console lets go of the store while it waits for input. Harlequin (the console on a terminal
when installed) is driven headless through its adapter on the store.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

import searchdata
from clipsql import console, search
from clipsql.cli import main
from clipsql.db import open_store
from clipsql.errors import BadArgument, StoreBusy
from etl_support import cli_command, subprocess_env

N = 60
TEXT = "surfing at dawn"
#: The hand-written text search, as the README's console section writes it.
SEARCH = (
    "SELECT photo_id, cosineDistance(embedding, clip_text_embedding('{text}')) AS distance\n"
    "FROM photo_search\n"
    "WHERE model = 'tiny'\n"
    "ORDER BY distance\n"
    "LIMIT 5"
)


@pytest.fixture(scope="module", params=["chdb", "duckdb"])
def db(request, tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp(f"console-{request.param}")
    store = open_store(root, duckdb=str(root / "s.duckdb") if request.param == "duckdb" else None)
    searchdata.load(store, N, model_source=str(tiny_clip))
    yield store
    store.close()


def store_options(db) -> list[str]:
    return ["--store", str(db.root)] + (["--duckdb", db.target.location] if db.engine == "duckdb" else [])


def env(tmp_path: Path) -> dict:
    return dict(
        subprocess_env(),
        TRANSFORMERS_VERBOSITY="error",
        CLIPSQL_HISTORY=str(tmp_path / "history"),
        PROMPT_TOOLKIT_NO_CPR="1",  # no cursor-position request to answer on the pseudo-terminal
        TERM="xterm",
    )


def api_ids(db, k: int = 5) -> list[str]:
    return search.text(TEXT, k, db=db, device="cpu")["photo_id"].tolist()


def json_documents(text: str) -> list:
    """The JSON documents written one after another (the console's --format json)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        while text[at].isspace():
            at += 1
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


# --- statements ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, statements, rest",
    [
        ("SELECT 1;", ["SELECT 1"], ""),
        ("SELECT 1; SELECT 2", ["SELECT 1"], " SELECT 2"),
        ("SELECT 'a;b' AS s;", ["SELECT 'a;b' AS s"], ""),
        ("SELECT 'it''s;' ;x", ["SELECT 'it''s;'"], "x"),
        ("SELECT 'a\\';b';", ["SELECT 'a\\';b'"], ""),
        ('SELECT "x;y", `a;b` FROM t;', ['SELECT "x;y", `a;b` FROM t'], ""),
        ("SELECT 1 -- not the end;\n, 2;", ["SELECT 1 -- not the end;\n, 2"], ""),
        ("/* ; */ SELECT 1;", ["/* ; */ SELECT 1"], ""),
        ("-- only a comment;\n;  ;\n", [], "\n"),
        ("SELECT 'open;\nstill open;", [], "SELECT 'open;\nstill open;"),
        ("SELECT 1 /* open ;", [], "SELECT 1 /* open ;"),
    ],
)
def test_statements_end_at_a_semicolon_outside_quotes_and_comments(text, statements, rest):
    assert console.cut_statements(text) == (statements, rest)


@pytest.mark.parametrize(
    "text, statements",
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1; SELECT 'open", ["SELECT 1", "SELECT 'open"]),
        ("SELECT 1;\n-- the end", ["SELECT 1"]),
        ("SELECT 1; /* open", ["SELECT 1"]),
        ("", []),
    ],
)
def test_at_the_end_of_the_input_an_unfinished_statement_with_code_is_one_more(text, statements):
    assert console.cut_statements(text, final=True) == (statements, "")


@pytest.mark.parametrize(
    "statement, rows",
    [
        ("SELECT 1", True),
        ("  -- why\n (SELECT 1) UNION ALL (SELECT 2)", True),
        ("/* c */ WITH a AS (SELECT 1) SELECT * FROM a", True),
        ("show tables", True),
        ("DESCRIBE photos", True),
        ("EXPLAIN SELECT 1", True),
        ("CREATE TABLE t (x Int32) ENGINE = Memory", False),
        ("INSERT INTO t SELECT 1", False),
        ("ALTER TABLE photos UPDATE is_deleted = 1 WHERE photo_id = 'x'", False),
        ("SET max_threads = 1", False),
        ("", False),
    ],
)
def test_a_statement_that_answers_with_rows_is_told_by_its_first_word(statement, rows):
    assert console.returns_rows(statement) is rows


def test_an_error_is_one_line_without_the_engine_stack_trace():
    engine_error = RuntimeError("Code: 46. DB::Exception: no such function, Stack trace (when copying):\n0. x")
    assert console.describe_error(engine_error) == "RuntimeError: Code: 46. DB::Exception: no such function"
    assert console.describe_error(BadArgument("the SQL statement is empty")) == "the SQL statement is empty"


# --- the runner, in this process -----------------------------------------------------------


def test_the_runner_gives_the_api_rows_and_registers_the_text_function_once(db):
    runner = console.SqlConsole(db, device="cpu")
    rows = runner.run(SEARCH.format(text=TEXT) + ";")
    assert rows is not None and rows["photo_id"].tolist() == api_ids(db)
    first_model = runner.text_function_model
    assert first_model == searchdata.MODEL
    db.release()  # the function outlives a release: DuckDB registers it again on connect
    again = runner.run(SEARCH.format(text=TEXT))
    assert again is not None and again["photo_id"].tolist() == rows["photo_id"].tolist()
    with pytest.raises(BadArgument):
        runner.run(" ;; ")


def test_a_command_answers_nothing_and_its_table_is_there_afterwards(db):
    runner = console.SqlConsole(db)
    create = (
        "CREATE TABLE IF NOT EXISTS console_notes (x Int32) ENGINE = MergeTree ORDER BY x"
        if db.dialect == "clickhouse"
        else "CREATE TABLE IF NOT EXISTS console_notes (x INTEGER)"
    )
    assert runner.run(create) is None
    assert runner.run("INSERT INTO console_notes VALUES (7)") is None
    assert runner.run("SELECT sum(x) AS s FROM console_notes")["s"].tolist() == [7]
    relations = {row[0] for row in runner.catalog_rows()}
    assert {"photo_search", "photos", "console_notes"} <= relations
    assert runner.run("DROP TABLE console_notes") is None


# --- statements piped in: real processes ----------------------------------------------------


def test_piped_statements_print_their_rows_and_a_failing_one_does_not_stop_the_rest(db, tmp_path):
    script = (
        "SELECT 40 +\n  2 AS answer;\n"
        "SELECT no_such_function();\n"
        "-- the README's search, over several lines\n"
        f"{SEARCH.format(text=TEXT)};\n"
        "SELECT 'a;b' AS s; SELECT count() AS n FROM photo_search\n"  # the last one without ';'
    )
    db.release()
    done = subprocess.run(
        cli_command("sql", "--format", "json", "--device", "cpu", "--wait", "60", *store_options(db)),
        input=script,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr  # a statement failed: the script's status says so
    answer, found, text, count = json_documents(done.stdout)
    assert answer == [{"answer": 42}]
    assert [row["photo_id"] for row in found] == api_ids(db)
    assert text == [{"s": "a;b"}]
    assert count == [{"n": N - len(searchdata.DELETED)}]
    errors = [line for line in done.stderr.splitlines() if line.startswith("clipsql: error:")]
    assert len(errors) == 1 and errors[0].startswith("clipsql: error: statement 2 (line 3): ")
    assert "no_such_function" in errors[0]


def test_a_clean_script_exits_0(db, tmp_path):
    db.release()
    done = subprocess.run(
        cli_command("sql", "--format", "csv", *store_options(db)),
        input="SELECT 1 AS one;\n",
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (done.returncode, done.stdout) == (0, "one\n1\n"), done.stderr


@pytest.mark.parametrize("script", ["", "\n\n", "-- nothing\n;\n", " ; ;"])
def test_a_script_without_statements_runs_nothing(script):
    out, err = io.StringIO(), io.StringIO()
    runner = console.SqlConsole(None)  # type: ignore[arg-type]  # never asked to run anything
    assert console.run_script(runner, io.StringIO(script), str, out, err) == 0
    assert (out.getvalue(), err.getvalue()) == ("", "")


def test_harlequin_needs_a_terminal(db, tmp_path):
    done = subprocess.run(
        cli_command("sql", "--ui", "harlequin", *store_options(db)),
        input="SELECT 1;",
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "--ui harlequin needs a terminal" in done.stderr


def test_the_console_lets_go_of_the_store_while_it_waits_for_input(db, tmp_path):
    """A console left open at its prompt blocks no one: another command gets the store, and
    the console's next statement runs after it."""
    db.release()
    console_process = subprocess.Popen(
        cli_command("sql", "--format", "csv", "--wait", "60", *store_options(db)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(tmp_path),
        text=True,
    )
    try:
        console_process.stdin.write("SELECT 1 AS first;\n")
        console_process.stdin.flush()
        assert [console_process.stdout.readline() for _ in range(2)] == ["first\n", "1\n"]
        other = subprocess.run(
            cli_command("sql", "SELECT 2 AS other", "--format", "csv", "--wait", "60", *store_options(db)),
            env=env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert (other.returncode, other.stdout) == (0, "other\n2\n"), other.stderr
        out, err = console_process.communicate("SELECT 3 AS second;\n", timeout=300)
    finally:
        if console_process.poll() is None:
            console_process.kill()
    assert console_process.returncode == 0, err
    assert out.split() == ["second", "3"]


def test_a_busy_store_ends_a_script_with_exit_75(db, tmp_path):
    with db.session():  # this process holds the engine for the whole command
        done = subprocess.run(
            cli_command("sql", "--wait", "0", *store_options(db)),
            input="SELECT 1;\n",
            env=env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 75 and "is busy" in done.stderr


def test_a_store_that_stays_busy_stops_the_runner(db):
    runner = console.SqlConsole(db)

    def busy(statement):
        raise StoreBusy("store x is busy")

    runner.run = busy  # type: ignore[method-assign]
    with pytest.raises(StoreBusy):
        console.run_script(runner, ["SELECT 1;\n", "SELECT 2;\n"], str, io.StringIO(), io.StringIO())


# --- typed at a terminal: a real process on a pseudo-terminal ---------------------------------


class Terminal:
    """`clipsql ARGS` on a pseudo-terminal: what it writes, and keys typed into it.

    prompt_toolkit redraws its prompt as it likes, so :meth:`wait_for` looks for each text
    after the last one it found: `wait_for("4242")` then `wait_for("clipsql>")` is the prompt
    drawn after the answer, when typing is read again."""

    def __init__(self, args: list[str], environment: dict):
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            cli_command(*args), stdin=slave, stdout=slave, stderr=slave, env=environment, close_fds=True
        )
        os.close(slave)
        self.seen = b""
        self.mark = 0

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """Read until `text` is written after the last text found; the screen from there."""
        wanted, deadline = text.encode(), time.monotonic() + timeout
        while self.seen.find(wanted, self.mark) < 0 and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    break
        at = self.seen.find(wanted, self.mark)
        screen = self.seen[self.mark :].decode("utf-8", "replace")
        assert at >= 0, f"{text!r} not seen; the screen since the last text found:\n{screen[-3000:]}"
        self.mark = at + len(wanted)
        return screen

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.mark.parametrize("db", ["chdb"], indirect=True)  # the front end is the same on every engine
def test_the_line_console_runs_what_is_typed_and_goes_on_after_an_error(db, tmp_path):
    db.release()
    terminal = Terminal(["sql", "--ui", "line", "--device", "cpu", *store_options(db)], env(tmp_path))
    try:
        terminal.wait_for("clipsql>")
        terminal.type("SELECT 4200 +\r")  # a statement over two lines
        terminal.wait_for("..>")
        terminal.type("42 AS answer;\r")
        terminal.wait_for("4242")
        terminal.wait_for("clipsql>")
        terminal.type("SELECT no_such_function();\r")
        terminal.wait_for("clipsql: error: ")
        terminal.wait_for("clipsql>")
        terminal.type("SELECT 'dropped\r")  # Ctrl-C drops the statement being typed
        terminal.wait_for("..>")
        terminal.type("\x03")
        terminal.wait_for("clipsql>")
        terminal.type(SEARCH.format(text=TEXT).replace("\n", " ") + ";\r")
        screen = terminal.wait_for("(5 rows")
        terminal.wait_for("clipsql>")
        terminal.type("\x04")  # Ctrl-D
        assert terminal.process.wait(timeout=120) == 0
    finally:
        terminal.close()
    shown = screen.split("distance")[-1]
    assert all(photo_id in shown for photo_id in api_ids(db))
    assert "dropped" not in shown
    history = (tmp_path / "history").read_text(encoding="utf-8")
    assert "SELECT 4200 +" in history and "no_such_function" in history


@pytest.mark.parametrize("db", ["chdb"], indirect=True)  # the front end is the same on every engine
def test_sigterm_ends_the_line_console_with_exit_130(db, tmp_path):
    db.release()
    terminal = Terminal(["sql", "--ui", "line", *store_options(db)], env(tmp_path))
    try:
        terminal.wait_for("clipsql>")
        terminal.process.send_signal(signal.SIGTERM)
        assert terminal.process.wait(timeout=120) == 130
    finally:
        terminal.close()


# --- Harlequin -------------------------------------------------------------------------------


def test_the_harlequin_adapter_runs_statements_and_lists_the_store(db):
    pytest.importorskip("harlequin")
    from harlequin.exception import HarlequinQueryError

    connection = console.harlequin_adapter(console.SqlConsole(db, device="cpu")).connect()
    cursor = connection.execute(SEARCH.format(text=TEXT))
    assert cursor.columns() == [("photo_id", "s"), ("distance", "#.#")]
    assert cursor.fetchall().column("photo_id").to_pylist() == api_ids(db)
    assert cursor.set_limit(2).fetchall().num_rows == 2
    with pytest.raises(HarlequinQueryError, match="no_such_function"):
        connection.execute("SELECT no_such_function()")
    catalog = {item.label: item for item in connection.get_catalog().items}
    relation = catalog["photo_search"]
    assert relation.type_label == "v" and relation.query_name == "photo_search"
    columns = {column.label: column.type_label for column in relation.children}
    assert (columns["photo_id"], columns["embedding"], columns["keywords"]) == ("s", "[]", "[]")
    assert "clip_text_embedding" in [completion.label for completion in connection.get_completions()]


@pytest.mark.parametrize("db", ["chdb"], indirect=True)  # the front end is the same on every engine
def test_the_harlequin_app_shows_the_rows_of_a_query(db, tmp_path, monkeypatch):
    pytest.importorskip("harlequin")
    import asyncio

    for variable in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    app = console.harlequin_app(console.SqlConsole(db))

    async def run_a_query() -> list:
        async with app.run_test(size=(160, 50)) as pilot:
            for _ in range(300):
                await pilot.pause(0.1)
                if app.editor is not None and app.connection is not None:
                    break
            app.editor.text = "SELECT photo_id FROM photo_search WHERE model = 'tiny' ORDER BY photo_id LIMIT 3"
            await app.action_run_query()
            table = None
            for _ in range(600):
                await pilot.pause(0.1)
                table = app.results_viewer.get_visible_table()
                if table is not None and table.row_count:
                    break
            rows = [table.get_row_at(i) for i in range(table.row_count)] if table is not None else []
            await app.action_quit()
            return rows

    rows = asyncio.run(run_a_query())
    assert [row[0] for row in rows] == ["p0000", "p0001", "p0002"]  # the text function: the adapter's test
    assert app.return_code in (None, 0)


# --- printing texts stays reachable ---------------------------------------------------------


def test_ddl_and_named_queries_are_printed_with_an_option(capsys):
    assert main(["sql", "--ddl"]) == 0
    assert "CREATE TABLE IF NOT EXISTS photos" in capsys.readouterr().out
    assert main(["sql", "--dialect", "duckdb", "--query", "similar_photos"]) == 0
    assert "CAST($photo_id AS VARCHAR)" in capsys.readouterr().out
