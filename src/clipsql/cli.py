"""The `clipsql` command. Each subcommand calls the Python API function of the same name;
library errors (:class:`clipsql.errors.ClipsqlError`) become one line on stderr and exit 2.

    clipsql refresh [JOB.toml] [--source SRC] [--model NAME|DIR] [--limit N] [--store DIR | --clickhouse-url URL | --duckdb FILE]
    clipsql status [JOB.toml] [--runs 10] [--store DIR | --clickhouse-url URL | --duckdb FILE]
    clipsql search text|image|similar|combined|crop|duplicates|facets ... [filters] [--format table|json|csv] [--html FILE]
    clipsql sql --dialect clickhouse|duckdb|myscale [--index-type MSTG|SCANN] [--query NAME]
    clipsql eval --images DIR --captions FILE [--name NAME] [--model NAME|DIR] [--limit N] [--kind KIND] [--json FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .download import DownloadOptions
from .embed import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from .errors import ClipsqlError
from .refresh import DEFAULT_CHUNK_SIZE, DEFAULT_RETRY_BACKOFF_S
from .sources import DEFAULT_SOURCE

EXIT_ERROR = 2


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store (one backend; default: chdb on disk under --store)")
    group.add_argument("--store", default=None,
                       help="store directory: chdb data and the image cache (default $CLIPSQL_STORE or ./clipsql-store)")
    backend = group.add_mutually_exclusive_group()
    backend.add_argument("--clickhouse-url", default=None,
                         help="ClickHouse server, http(s)://user:password@host:8123/database (default $CLICKHOUSE_URL)")
    backend.add_argument("--duckdb", default=None, metavar="FILE", help="a DuckDB database file instead of chdb")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `clipsql` command (also used to document it)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser = argparse.ArgumentParser(prog="clipsql", description="SQL-centric multimodal photo search.")
    parser.add_argument("--version", action="version", version=f"clipsql {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = DownloadOptions()
    p = commands.add_parser("refresh", parents=[common], help="run the ETL: source -> download -> embed -> load",
                            description="Download, embed and load the photos of a source into the store. "
                                        "A rerun fetches, embeds and doubles nothing already done; photos gone "
                                        "from the source are flagged deleted (or purged). Settings come from "
                                        "the defaults, then the JOB file, then the options given here. "
                                        "Exit status: 0 done, 2 error (one line on stderr), 75 another refresh "
                                        "holds the store.")
    p.add_argument("job", nargs="?", default=None,
                   help="a job file (TOML, e.g. etl/unsplash_lite.toml) holding these settings")
    p.add_argument("--source", default=None,
                   help=f"Unsplash release zip, its URL, a folder of *.tsv000 parts, a photos TSV, "
                        f"or an image folder (default: {DEFAULT_SOURCE})")
    p.add_argument("--model", default=None, help=f"CLIP hub name or local checkpoint directory (default {DEFAULT_MODEL})")
    p.add_argument("--model-name", default=None, help="label stored with the vectors (default: hub name or directory name)")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N photos of the source (then none is flagged deleted)")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per model forward pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--chunk-size", type=int, default=None,
                   help=f"photos downloaded, embedded and loaded at a time (default {DEFAULT_CHUNK_SIZE})")
    p.add_argument("--device", default=None, help="auto, cpu, cuda[:N] or mps (default auto)")
    p.add_argument("--workers", type=int, default=None, help=f"concurrent downloads (default {d.workers})")
    p.add_argument("--width", type=int, default=None,
                   help=f"Unsplash dynamic-URL width in pixels (w=); 0 keeps URLs as given (default {d.width})")
    p.add_argument("--timeout", type=float, default=None, help=f"read timeout per request, seconds (default {d.read_timeout_s:g})")
    p.add_argument("--retries", type=int, default=None,
                   help=f"retries per request within a run (429, 5xx, connection errors; default {d.retries})")
    p.add_argument("--max-bytes", type=int, default=None, help=f"largest image accepted, bytes (default {d.max_bytes})")
    p.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=None,
                   help="retry every failed photo now, permanent failures (HTTP 4xx, undecodable) included")
    p.add_argument("--retry-backoff", type=float, default=None, metavar="SECONDS",
                   help="a transient failure is retried by a later run once last attempt + SECONDS * 2^(attempts-1) "
                        f"has passed (default {DEFAULT_RETRY_BACKOFF_S:g})")
    p.add_argument("--purge", action=argparse.BooleanOptionalAction, default=None,
                   help="remove photos gone from the source from every table and the image cache, "
                        "instead of flagging them deleted")
    _add_store_options(p)
    p.set_defaults(func=_refresh)

    p = commands.add_parser("status", parents=[common], help="last refresh runs, table sizes, failures by reason",
                            description="Print the last refresh runs (etl_runs), the rows of each table, the "
                                        "models and the download failures by reason.")
    p.add_argument("job", nargs="?", default=None, help="a job file whose store to read (e.g. etl/unsplash_lite.toml)")
    p.add_argument("--runs", type=int, default=10, help="how many of the last runs to list (default 10)")
    _add_store_options(p)
    p.set_defaults(func=_status)

    from .cli_search import add_search_commands, add_sql_command

    add_search_commands(commands, common, _add_store_options)
    add_sql_command(commands, common)

    from .cli_eval import add_eval_command

    add_eval_command(commands, common, _add_store_options)
    return parser


#: Exit status when another refresh holds the store (sysexits EX_TEMPFAIL: try again later).
EXIT_LOCKED = 75


def report_failure(action: str, exc: Exception) -> int:
    """An engine or OS error of a command (not a :class:`ClipsqlError`): one line on stderr
    naming `action` and the error, the traceback in the log at -vv; returns exit status 1."""
    logging.getLogger("clipsql").debug("%s failed", action, exc_info=True)
    first = str(exc).splitlines()[0] if str(exc) else ""
    print(f"clipsql: error: {action} failed: {type(exc).__name__}: {first} (run with -vv for the traceback)",
          file=sys.stderr)
    return 1


def _refresh(args: argparse.Namespace) -> int:
    import signal

    from .jobs import SETTINGS, run_job
    from .lock import StoreLocked

    overrides = {name: getattr(args, name) for name in SETTINGS}

    def stop(signum, frame):  # systemd and Airflow stop a job with SIGTERM: end as an interrupted run
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        summary = run_job(args.job, progress=not args.quiet, **overrides)
    except StoreLocked as exc:
        print(f"clipsql: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (ClipsqlError, KeyboardInterrupt):
        raise
    except Exception as exc:  # an engine or OS error
        return report_failure("refresh", exc)
    print(summary.format())
    return 0


def _status(args: argparse.Namespace) -> int:
    from .jobs import job_settings
    from .status import status

    s = job_settings(args.job, store=args.store, clickhouse_url=args.clickhouse_url, duckdb=args.duckdb)
    frame = status(s["store"], clickhouse_url=s["clickhouse_url"], duckdb=s["duckdb"], runs=args.runs)
    print(frame.format())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `clipsql` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.func(args)
    except ClipsqlError as exc:
        print(f"clipsql: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("clipsql: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
