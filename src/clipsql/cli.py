"""The `clipsql` command. Each subcommand calls the Python API function of the same name;
library errors (:class:`clipsql.errors.ClipsqlError`) become one line on stderr and exit 2.

    clipsql refresh --source SRC [--model NAME|DIR] [--limit N] [--store DIR | --clickhouse-url URL | --duckdb FILE]
    clipsql search text "a dog on a beach" -k 10 [--format table|json|csv]
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

    p = commands.add_parser("refresh", parents=[common], help="run the ETL: source -> download -> embed -> load",
                            description="Download, embed and load the photos of a source into the store. "
                                        "A rerun fetches, embeds and doubles nothing already done.")
    p.add_argument("--source", default=DEFAULT_SOURCE,
                   help=f"Unsplash release zip, its URL, a folder of *.tsv000 parts, a photos TSV, "
                        f"or an image folder (default: {DEFAULT_SOURCE})")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CLIP hub name or local checkpoint directory (default {DEFAULT_MODEL})")
    p.add_argument("--model-name", default=None, help="label stored with the vectors (default: hub name or directory name)")
    p.add_argument("--limit", type=int, default=None, help="only the first N photos of the source")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per model forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    p.add_argument("--workers", type=int, default=DownloadOptions.workers, help="concurrent downloads")
    p.add_argument("--width", type=int, default=DownloadOptions.width,
                   help="Unsplash dynamic-URL width in pixels (w=); 0 keeps URLs as given")
    p.add_argument("--timeout", type=float, default=DownloadOptions.read_timeout_s, help="read timeout per request, seconds")
    p.add_argument("--retries", type=int, default=DownloadOptions.retries, help="retries per request (429, 5xx, connection errors)")
    p.add_argument("--max-bytes", type=int, default=DownloadOptions.max_bytes, help="largest image accepted, bytes")
    p.add_argument("--retry-failed", action="store_true", help="also retry photos that failed permanently before")
    _add_store_options(p)
    p.set_defaults(func=_refresh)

    p = commands.add_parser("search", help="search the store")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    t = kinds.add_parser("text", parents=[common], help="text -> photos")
    t.add_argument("query", help="the text to search for")
    t.add_argument("-k", type=int, default=10, help="how many photos (top-k)")
    t.add_argument("--model", default=None, help="stored model label (default: the newest with vectors)")
    t.add_argument("--device", default="auto")
    t.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _add_store_options(t)
    t.set_defaults(func=_search_text)
    return parser


def _refresh(args: argparse.Namespace) -> int:
    from .refresh import refresh

    options = DownloadOptions(workers=args.workers, width=args.width, read_timeout_s=args.timeout,
                              retries=args.retries, max_bytes=args.max_bytes)
    summary = refresh(args.source, model=args.model, model_name=args.model_name, limit=args.limit,
                      store=args.store, clickhouse_url=args.clickhouse_url, duckdb=args.duckdb,
                      batch_size=args.batch_size, download=options, device=args.device,
                      retry_failed=args.retry_failed, progress=not args.quiet)
    print(summary.format())
    return 0


def _search_text(args: argparse.Namespace) -> int:
    from . import search

    frame = search.text(args.query, args.k, model=args.model, store=args.store,
                        clickhouse_url=args.clickhouse_url, duckdb=args.duckdb, device=args.device)
    print(_render(frame[["photo_id", "distance", "description", "photo_url"]], args.format))
    return 0


def _render(frame, fmt: str) -> str:
    if fmt == "json":
        return frame.to_json(orient="records", force_ascii=False, indent=1)
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    with_text = frame.fillna("").astype({"distance": float})
    return with_text.to_string(index=False, max_colwidth=60, float_format=lambda x: f"{x:.4f}")


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
