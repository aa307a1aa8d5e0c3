"""The `clipsql` command. Each subcommand calls the Python API function of the same name.

Exit status, the same for every command (:func:`main` applies it): 0 done; 2 an error, one
line on stderr (`clipsql: error: ...`; library errors, engine and OS errors such as a full
disk, bad arguments alike; the traceback goes to the log at -vv); 75 the store is busy
(another process holds it); 130 interrupted (Ctrl-C, SIGTERM).

    clipsql refresh [JOB.toml] [--source SRC] [--model NAME|DIR] [--limit N] [--store DIR | --clickhouse-url URL | --duckdb FILE]
    clipsql status [JOB.toml] [--runs 10] [--store DIR | --clickhouse-url URL | --duckdb FILE]
    clipsql search text|image|similar|combined|crop|duplicates|facets ... [filters] [--format table|json|csv] [--html FILE]
    clipsql sql [STATEMENT] [--ui auto|harlequin|line] [--format table|json|csv]   (no STATEMENT: the SQL console)
    clipsql sql --ddl | --dialect clickhouse|duckdb|myscale [--index-type MSTG|SCANN] [--query NAME] | --console
    clipsql eval --images DIR --captions FILE [--name NAME] [--model NAME|DIR] [--limit N] [--kind KIND] [--json FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading

# The exit statuses live in clipsql.cli_common (the subcommands' modules use them too); they
# are offered here as well, where callers have always found them (see __all__).
from .cli_common import EXIT_BUSY, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_STATUS_HELP
from .constants import VERSION
from .errors import ClipsqlError, StoreBusy
from .settings import LEAVES, TABLE_HELP, TABLES, Setting, Settings, leaves

__all__ = [
    "main",
    "build_parser",
    "arguments_last",
    "report_failure",
    "EXIT_ERROR",
    "EXIT_LOCKED",
    "EXIT_BUSY",
    "EXIT_INTERRUPTED",
    "EXIT_STATUS_HELP",
]


class _UsageError(Exception):
    """argparse could not understand the command line (raised by :class:`_Parser` instead of
    printing the usage and exiting, so that :func:`main` reports it in one line)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _UsageError(self, message)


def _add_setting(group, leaf: Setting) -> None:
    """The command-line option of one setting of the tree (:class:`clipsql.settings.Setting`).

    Its default is None, so that an option not given leaves the job file's value (or the
    tree's default, which the help text shows) in place."""
    kwargs: dict = dict(dest=leaf.dest, default=None, help=leaf.help_text())
    if leaf.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction  # --purge / --no-purge
    else:
        if leaf.kind is not str:
            kwargs["type"] = leaf.kind
        if leaf.metavar is not None:
            kwargs["metavar"] = leaf.metavar
    group.add_argument(leaf.option, **kwargs)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    """The [store] settings as options: --store, and the backends, one at most."""
    group = parser.add_argument_group("store", TABLE_HELP["store"])
    backend = group.add_mutually_exclusive_group()
    for leaf in leaves("store"):
        _add_setting(backend if leaf.backend else group, leaf)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `clipsql` command (also used to document it)."""
    common = _Parser(add_help=False)  # the subcommands' parents: of the parser class they are made with
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser = _Parser(prog="clipsql", description="SQL-centric multimodal photo search.", epilog=EXIT_STATUS_HELP)
    parser.add_argument("--version", action="version", version=f"clipsql {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "refresh",
        parents=[common],
        help="run the ETL: source -> download -> embed -> load",
        description="Download, embed and load the photos of a source into the store. "
        "A rerun fetches, embeds and doubles nothing already done; photos gone "
        "from the source are flagged deleted (or purged). Settings come from "
        "the defaults, then the JOB file, then the options given here; each "
        "group below is a table of the job file.",
        epilog=EXIT_STATUS_HELP,
    )
    p.add_argument(
        "job", nargs="?", default=None, help="a job file (TOML, e.g. etl/unsplash_lite.toml) holding these settings"
    )
    for table in TABLES:  # one option per setting of the tree, grouped as the job file's tables
        if table != "store":
            group = p.add_argument_group(table, TABLE_HELP[table])
            for leaf in leaves(table):
                _add_setting(group, leaf)
    _add_store_options(p)
    p.set_defaults(func=_refresh)

    p = commands.add_parser(
        "status",
        parents=[common],
        help="last refresh runs, table sizes, failures by reason",
        description="Print the last refresh runs (etl_runs), the rows of each table, the "
        "models and the download failures by reason.",
        epilog=EXIT_STATUS_HELP,
    )
    p.add_argument("job", nargs="?", default=None, help="a job file whose store to read (e.g. etl/unsplash_lite.toml)")
    p.add_argument("--runs", type=int, default=10, help="how many of the last runs to list (default 10)")
    _add_store_options(p)
    p.set_defaults(func=_status)

    from .cli_search import add_search_commands, add_sql_command

    add_search_commands(commands, common, _add_store_options)
    add_sql_command(commands, common, _add_store_options)

    from .cli_eval import add_eval_command

    add_eval_command(commands, common, _add_store_options)
    return parser


def _one_line(text: object) -> str:
    """A message as one line: its non-empty lines joined."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def report_failure(action: str, exc: BaseException) -> int:
    """An engine or OS error of a command (not a :class:`ClipsqlError`): one line on stderr
    naming `action` and the error, the traceback in the log at -vv; returns exit status 2."""
    logging.getLogger("clipsql").debug("%s failed", action, exc_info=exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(
        f"clipsql: error: {action} failed: {type(exc).__name__}: {first} (run with -vv for the traceback)",
        file=sys.stderr,
    )
    return EXIT_ERROR


def _refresh(args: argparse.Namespace) -> int:
    from .jobs import run_job

    overrides = {leaf.dest: getattr(args, leaf.dest) for leaf in LEAVES}  # SIGTERM: handled by main()
    summary = run_job(args.job, progress=not args.quiet, **overrides)
    print(summary.format())
    return 0


def _status(args: argparse.Namespace) -> int:
    from .status import status

    store = Settings.load(args.job, **{leaf.dest: getattr(args, leaf.dest) for leaf in leaves("store")}).store
    frame = status(
        store.path, clickhouse_url=store.clickhouse_url, duckdb=store.duckdb, runs=args.runs, wait_s=store.wait_s
    )
    print(frame.format())
    return 0


# --- the command line: arguments that start with '-' ---------------------------------------

#: How the hint for a positional argument that starts with '-' names it, with an example.
_DASH_HINTS = {
    "photo_id": ("ids", "-abc"),
    "query": ("a query", "'-people beach'"),
    "source": ("a file name", "./-photo.jpg"),
    "job": ("a job file", "-nightly.toml"),
}


def _subcommands(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs is None or action.nargs == 1


def _value_fits(action: argparse.Action, text: str) -> bool:
    """Whether `text` is a value the option `action` accepts (its type and choices)."""
    convert = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return action.choices is None or value in action.choices


def _option(parser: argparse.ArgumentParser, token: str) -> tuple[argparse.Action | None, str | None]:
    """(the option, its attached value or None) when argparse reads `token` as an option of
    `parser`: `--name`, `--name=value`, an abbreviation `--na`, `-k`, `-k5` (a value the
    option accepts), a cluster of flags `-vq`; else (None, None): `token` is an argument."""
    actions = parser._option_string_actions
    if len(token) < 2 or token[0] != "-":
        return None, None
    if token in actions:
        return actions[token], None
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        found = (
            [actions[name]]
            if name in actions
            else (
                [a for o, a in actions.items() if o.startswith(name)] if parser.allow_abbrev and len(name) > 2 else []
            )
        )
        return (found[0], value if eq else None) if found else (None, None)  # an ambiguous prefix: argparse says so
    action, rest = actions.get(token[:2]), token[2:]
    if action is None or rest.startswith("-"):
        return None, None
    if _takes_value(action):
        value = rest[1:] if rest.startswith("=") else rest  # -k5 or -k=5
        return (action, value) if _value_fits(action, value) else (None, None)
    return _option(parser, "-" + rest) if action.nargs == 0 else (None, None)


def arguments_last(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """`argv` with the command's options first and its positional arguments after a `--`, and
    the parser of that (sub)command.

    argparse reads any token that starts with '-' as an option, so `clipsql search similar
    --2IBUMom1I` (115 of 7,174 Unsplash ids start with '-'), `search combined -people beach`
    and `--photo-id -abc` fail. Here every token that is not one of the command's options
    (exactly as argparse reads them: abbreviations, `-k5`, `-vq`), nor the value of one, is
    moved after `--`; an option's value that starts with '-' is attached (`--photo-id=-abc`,
    `-k-1`). A token after the user's own `--` stays an argument. For commands whose argument
    is free text (search text, combined, facets) an unknown `--word` is left where it is, so
    that argparse still reports a mistyped option. Commands without positional arguments
    are left as given.
    """
    parser_at, i = parser, 0
    while (sub := _subcommands(parser_at)) is not None:
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
            i += 1  # -h, --version
        if i >= len(argv) or argv[i] not in sub.choices:
            return list(argv), parser_at
        parser_at, i = sub.choices[argv[i]], i + 1
    positional_actions = [a for a in parser_at._actions if not a.option_strings]
    if not positional_actions:
        return list(argv), parser_at
    free_text = any(a.nargs in ("*", "+") for a in positional_actions)
    options: list[str] = []
    arguments: list[str] = []
    rest = argv[i:]
    j = 0
    while j < len(rest):
        token = rest[j]
        j += 1
        if token == "--":
            arguments += rest[j:]
            break
        action, attached = _option(parser_at, token)
        if action is None:
            if free_text and token.startswith("--") and len(token) > 2:
                options.append(token)  # a mistyped option, most likely: argparse reports it
            else:
                arguments.append(token)
            continue
        options.append(token)
        if (
            attached is None
            and _takes_value(action)
            and j < len(rest)
            and rest[j] != "--"
            and _option(parser_at, rest[j])[0] is None
        ):
            value = rest[j]
            j += 1
            if value.startswith("-"):
                options[-1] = f"{token}={value}" if token.startswith("--") else token + value
            else:
                options.append(value)
    return argv[:i] + options + (["--"] + arguments if arguments else []), parser_at


def _usage_message(exc: _UsageError, leaf: argparse.ArgumentParser) -> str:
    """argparse's complaint as one line, with how to pass an argument that starts with '-'."""
    message = _one_line(exc.message)
    prog = exc.parser.prog if exc.parser is not None and exc.parser.prog != "clipsql" else leaf.prog
    hints = [f"see `{prog} --help`"]
    value_of = re.match(r"argument (-\w|--[\w-]+)(?:/\S+)?: expected one argument", message)
    if value_of:
        name = value_of.group(1)
        hints.append(f"write a value that starts with '-' as {name}{'=' if name.startswith('--') else ''}-abc")
    lost = ("arguments are required", "unrecognized arguments")
    for action in leaf._actions if any(text in message for text in lost) else ():
        if not action.option_strings and action.dest in _DASH_HINTS:
            noun, example = _DASH_HINTS[action.dest]
            hints.append(f"put {noun} starting with '-' after --: {leaf.prog} -- {example}")
            break
    return f"{message} ({'; '.join(hints)})"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `clipsql` console script; returns the exit status, the same contract
    for every command: 0 done; 2 an error (one line on stderr, whatever raised it; the
    traceback goes to the log at -vv); 75 the store is busy (:class:`StoreBusy`, another
    refresh's :class:`~clipsql.lock.StoreLocked`); 130 interrupted (Ctrl-C, SIGTERM)."""
    import signal

    log = logging.getLogger("clipsql")
    received: list[int] = []

    def interrupt(signum, frame):
        # systemd, Airflow and kill stop a command with SIGTERM: it ends as Ctrl-C does (a
        # refresh records an interrupted run). The signal is noted, because an engine may
        # turn the KeyboardInterrupt raised here into its own error (DuckDB: RuntimeError
        # 'Query interrupted'): the command still ends as interrupted, exit status 130.
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous: dict = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum == signal.SIGINT and signal.getsignal(signum) is not signal.default_int_handler:
                continue  # SIGINT ignored (nohup, a background job) or handled by the caller: left so
            previous[signum] = signal.signal(signum, interrupt)
    action = "clipsql"
    try:
        parser = build_parser()
        line, leaf = arguments_last(parser, [str(a) for a in (sys.argv[1:] if argv is None else argv)])
        action = leaf.prog.removeprefix("clipsql ")
        try:
            args = parser.parse_args(line)
        except _UsageError as exc:
            print(f"clipsql: error: {_usage_message(exc, leaf)}", file=sys.stderr)
            return EXIT_ERROR
        level = logging.WARNING - 10 * min(args.verbose, 2)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return args.func(args)
    except KeyboardInterrupt:
        print("clipsql: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if received:  # the engine's form of the interrupt
            log.debug("%s interrupted by signal %s", action, received[0], exc_info=True)
            print("clipsql: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, StoreBusy):  # StoreLocked included: another refresh
            log.debug("%s: the store is busy", action, exc_info=True)
            print(f"clipsql: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_BUSY
        if isinstance(exc, ClipsqlError):
            log.debug("%s failed", action, exc_info=True)
            print(f"clipsql: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        return report_failure(action, exc)  # an engine or OS error (a full disk, a broken store), or a bug
    finally:
        for signum, handler in previous.items():  # main() called from Python (tests, notebooks)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


#: Commands after which nothing of this process is left to run: their console script ends
#: without tearing the interpreter down (see :func:`run`).
QUICK_EXIT_COMMANDS = frozenset({"search"})


def _only_daemon_threads() -> bool:
    main_thread = threading.main_thread()
    return all(t.daemon for t in threading.enumerate() if t is not main_thread)


def run() -> None:
    """The `clipsql` console script: :func:`main`, then exit with its status.

    After a command of :data:`QUICK_EXIT_COMMANDS` the output is flushed, logging shut down and
    the atexit functions run, as a normal exit does, and the process then ends with
    ``os._exit`` instead of tearing down every module: measured (python -c, 2 cores) the
    teardown of pandas, pyarrow and ONNX Runtime costs 0.3-0.4 s, a sixth of a cold text
    search. Other commands exit normally (a refresh's worker threads are joined).
    """
    code = main()
    if len(sys.argv) > 1 and sys.argv[1] in QUICK_EXIT_COMMANDS and _only_daemon_threads():
        import atexit

        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away (| head): an error, silently
            code = code or EXIT_ERROR
        logging.shutdown()
        atexit._run_exitfuncs()  # noqa: SLF001 - what interpreter shutdown runs first
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
