"""The `clipsql search ...` and `clipsql sql` subcommands (registered by :mod:`clipsql.cli`).

Each search kind calls the :mod:`clipsql.search` function of the same name with the same
options (built here as one :class:`~clipsql.search.SearchOptions` or
:class:`~clipsql.search.FacetOptions` and one :class:`~clipsql.search.Filters`), and prints the DataFrame as a table, JSON or CSV; `--html FILE` also writes an
image grid (:mod:`clipsql.render`). The filter options are made from the filter registry
(:data:`clipsql.search.filters.FILTERS`), one per entry.

    clipsql search text|image|similar|combined|crop|duplicates|facets ... [filters] [--format table|json|csv] [--html FILE]
    clipsql sql [STATEMENT] [--ui auto|harlequin|line] [--format table|json|csv]
    clipsql sql --ddl | --dialect clickhouse|duckdb|myscale [--index-type MSTG|SCANN] [--query NAME [filters]] | --console
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from .errors import BadArgument

FORMATS = ("table", "json", "csv")
#: The score column of a model re-ranked result (clipsql.search.model_rerank.RERANK_SCORE,
#: named here so that the CLI's import loads no search module).
RERANK_SCORE = "rerank_score"


def _filter_options(parser: argparse.ArgumentParser) -> None:
    """One option per entry of the filter registry (:data:`clipsql.search.filters.FILTERS`),
    stored under the filter's name: a Bool filter as --x / --no-x, a list filter repeated."""
    from .search.filters import FILTERS

    group = parser.add_argument_group("filters (all optional; strings match exactly)")
    for spec in FILTERS.values():
        kind = spec.kind
        extra: dict = {}
        if kind == "bool":
            extra = dict(action=argparse.BooleanOptionalAction)
        elif kind == "list":
            extra = dict(action="append", metavar=spec.metavar)
        else:
            extra = dict(type={"int": int, "float": float}.get(kind, str), metavar=spec.metavar)
            if spec.choices:
                extra["choices"] = spec.choices
        more = " (repeat the option for more)" if kind == "list" else ""
        group.add_argument(spec.option, dest=spec.name, default=None, help=spec.help + more, **extra)


def _output_options(parser: argparse.ArgumentParser, html: bool = True) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    if html:
        parser.add_argument(
            "--html",
            metavar="FILE",
            default=None,
            help="also write an image grid of the results to FILE (thumbnails from the store's cache)",
        )


def _page_options(parser: argparse.ArgumentParser, k: int = 10, rerank: bool = True, offset: bool = True) -> None:
    parser.add_argument("-k", type=int, default=k, help=f"how many results (default {k})")
    if offset:
        parser.add_argument("--offset", type=int, default=0, help="skip this many results first (paging)")
    parser.add_argument("--model", default=None, help="stored model label (default: the newest with vectors)")
    if rerank:
        parser.add_argument(
            "--max-distance", type=float, default=None, help="only results with a cosine distance <= this"
        )
        parser.add_argument(
            "--rerank",
            type=_rerank_value,
            default=None,
            metavar="{exact,mmr,model:CHECKPOINT}",
            help="exact: the HNSW index proposes candidates, re-scored exactly (approximate; "
            "without filters only); mmr: diversify the nearest candidates; model:CHECKPOINT (text and "
            "combined): an image-text matching model (BLIP or BLIP-2 ITM; a hub name or a checkpoint "
            "directory) re-scores the nearest candidates against the text (column rerank_score)",
        )
        parser.add_argument("--mmr-lambda", type=float, default=0.5, help="MMR: 1 relevance only .. 0 diversity only")
        parser.add_argument("--overfetch", type=int, default=10, help="candidates per result for --rerank (default 10)")


def _rerank_value(text: str) -> str:
    """--rerank's value: exact, mmr or model:CHECKPOINT (the checkpoint is checked by the search)."""
    from .search.options import MODEL_RERANK_PREFIX, RERANKS

    if text in RERANKS or (text.startswith(MODEL_RERANK_PREFIX) and text[len(MODEL_RERANK_PREFIX) :].strip()):
        return text
    raise argparse.ArgumentTypeError(f"choose from {', '.join(RERANKS)} or {MODEL_RERANK_PREFIX}CHECKPOINT")


def add_search_commands(
    commands, common: argparse.ArgumentParser, add_store_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register `clipsql search KIND` on the `commands` subparsers of the main parser."""
    from .cli_common import EXIT_STATUS_HELP

    p = commands.add_parser(
        "search",
        help="search the store (text, image, similar, combined, crop, duplicates, facets)",
        description="Search with the named queries of queries/. Every kind takes the same "
        "filters, paging and output options.",
        epilog=EXIT_STATUS_HELP,
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind(name: str, help_text: str, handler, k: int = 10, rerank: bool = True, html: bool = True):
        sub = kinds.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog="Ids and queries that start with '-' (115 of 7,174 Unsplash ids do) may be "
            "typed as they are, or after -- (clipsql search similar -- -abc). " + EXIT_STATUS_HELP,
        )
        _page_options(sub, k=k, rerank=rerank, offset=name != "facets")
        if name != "duplicates":
            sub.add_argument("--device", default="auto", help="where the CLIP model runs: auto, cpu, cuda[:N], mps")
        _output_options(sub, html=html)
        _filter_options(sub)
        add_store_options(sub)
        sub.set_defaults(func=handler)
        return sub

    t = kind("text", "text -> photos", _search_text)
    t.add_argument("query", nargs="+", help="the text to search for (several words form one text)")
    _query_precision_option(t)
    t = kind("image", "image file or URL -> photos (reverse image search)", _search_image)
    t.add_argument("source", help="an image file or an http(s) URL")
    t = kind("similar", "photos similar to an indexed photo (pure SQL: its stored vector)", _search_similar)
    t.add_argument("photo_id", help="the indexed photo")
    t = kind("combined", "weighted text terms and images -> photos", _search_combined)
    _query_precision_option(t)
    t.add_argument(
        "query",
        nargs="*",
        default=[],
        help="terms: plain words form a phrase, -term subtracts, W:term weighs (e.g. 'beach -people 2:sunset'; "
        "quoted or not)",
    )
    t.add_argument(
        "--image",
        dest="images",
        action="append",
        default=[],
        metavar="SRC",
        help="an image file or URL to add (repeat for more)",
    )
    t.add_argument("--text-weight", type=float, default=1.0, help="weight of the text terms (default 1)")
    t.add_argument("--image-weight", type=float, default=1.0, help="weight of the images (default 1)")
    t = kind("crop", "a box of an image or of an indexed photo -> photos", _search_crop)
    t.add_argument("source", nargs="?", default=None, help="an image file or URL (or give --photo-id)")
    t.add_argument("--photo-id", default=None, help="crop this indexed photo (from the store's image cache)")
    t.add_argument(
        "--box",
        required=True,
        metavar="L,T,R,B",
        help="left,top,right,bottom: fractions 0..1 of width and height, or pixels",
    )
    t = kind(
        "duplicates",
        "pairs of photos closer than a distance threshold (exact, quadratic)",
        _search_duplicates,
        k=100,
        rerank=False,
    )
    t.add_argument("--max-distance", type=float, default=0.05, help="cosine distance threshold (default 0.05)")
    t = kind(
        "facets",
        "counts per country, city, photographer, camera_make, keyword and color among the top-k photos of a query",
        _search_facets,
        k=100,
        rerank=False,
        html=False,
    )
    t.add_argument("query", nargs="*", default=[], help="the text query (or give --image or --photo-id)")
    t.add_argument("--image", default=None, metavar="SRC", help="an image file or URL as the query")
    t.add_argument("--photo-id", default=None, help="an indexed photo's vector as the query")
    t.add_argument("--per-facet", type=int, default=10, help="values per facet (default 10)")
    t.add_argument("--facet", dest="facets", action="append", default=None, help="only this facet (repeat for more)")
    t.add_argument("--max-distance", type=float, default=None, help="only photos with a cosine distance <= this")


def add_sql_command(commands, common: argparse.ArgumentParser, add_store_options: Callable | None = None) -> None:
    """Register `clipsql sql`: run a statement on the store, open the SQL console on it, or
    print DDL and queries in an engine's dialect."""
    from .cli_common import EXIT_STATUS_HELP
    from .console import UIS
    from .dialect import MYSCALE_INDEX_TYPES

    p = commands.add_parser(
        "sql",
        parents=[common],
        help="run SQL on the store (a statement, or a console), or print the DDL or a named query",
        epilog=EXIT_STATUS_HELP,
        description="With a STATEMENT (ClickHouse SQL, e.g. over the photo_search relation), run it on the "
        "store (chdb, a server or DuckDB through the dialect layer) and print its rows; "
        "clip_text_embedding is registered first when the statement uses it. Without one, open the SQL "
        "console on the store: statements typed (Harlequin when installed, pip install 'clipsql[console]'; "
        "else a line console, statements ending in ';') or piped in (echo 'SELECT 1;' | clipsql sql: each "
        "statement's rows on stdout, a failed one reported on stderr and the rest run; exit status 2 when "
        "any failed). --ddl, --dialect or --query print instead: the DDL of an engine (clickhouse and "
        "chdb, duckdb, myscale) or one named query of queries/ in that engine's form; for MyScale the DDL "
        "is followed by the search query's distance() form.",
    )
    p.add_argument("statement", nargs="?", default=None, metavar="STATEMENT", help="a SQL statement to run")
    p.add_argument(
        "--ui",
        choices=UIS,
        default="auto",
        help="the console on a terminal: harlequin, line, or auto (default: Harlequin when installed)",
    )
    p.add_argument("--ddl", action="store_true", help="print the DDL of --dialect (default clickhouse)")
    p.add_argument(
        "--dialect",
        choices=("clickhouse", "duckdb", "myscale"),
        default=None,
        help="print the DDL (or --query) in this engine's form",
    )
    p.add_argument(
        "--index-type",
        choices=MYSCALE_INDEX_TYPES,
        default="MSTG",
        help="MyScale vector index: MSTG (MyScale Cloud) or SCANN (open-source MyScaleDB)",
    )
    p.add_argument(
        "--query",
        default=None,
        metavar="NAME",
        help="print a query of queries/ (e.g. search_photos); with filter options (--country X ...) "
        "it is printed with their conditions in place of its '-- @filters' line",
    )
    p.add_argument(
        "--console",
        action="store_true",
        help="print one clickhouse-client command per query of queries/ and the filters (docs/console.md)",
    )
    p.add_argument(
        "--format", choices=FORMATS, default="table", help="output format of a statement's rows (default table)"
    )
    p.add_argument("--device", default="auto", help="where clip_text_embedding runs: auto, cpu, cuda[:N], mps")
    _filter_options(p)  # for --query NAME
    if add_store_options is not None:
        add_store_options(p)
    p.set_defaults(func=_sql)


# --- handlers ----------------------------------------------------------------------------


def _filters(args: argparse.Namespace):
    from .search.filters import FILTERS, Filters

    # Every filter option stores under the filter's name (argparse dest); absent: None.
    return Filters.of(**{name: getattr(args, name, None) for name in FILTERS})


def _image_dir(args: argparse.Namespace) -> Path:
    # The image cache is <store>/images for every backend (see clipsql.db.Store.image_dir).
    from .db import store_root

    return store_root(args.store) / "images"


def _query_precision_option(sub: argparse.ArgumentParser) -> None:
    from .precision import PRECISIONS

    sub.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="precision of the query's text tower: fp32 (default: the model's own vector), auto (on the CPU int8 "
        "where the model keeps the cosine to fp32 >= 0.999, else fp32), int8, bf16, fp16",
    )


def _store_kwargs(args: argparse.Namespace) -> dict:
    return dict(store=args.store, clickhouse_url=args.clickhouse_url, duckdb=args.duckdb, wait_s=args.wait)


def _common(args: argparse.Namespace, *, device: bool = True) -> dict:
    """The arguments every photo search kind takes from the command line: filters, options
    (page and re-ranking), model, device (for kinds that run the model) and backend."""
    from .search import SearchOptions

    # Filters are built (and checked) before the options, as the command always did.
    filters = _filters(args)
    options = SearchOptions(
        k=args.k,
        offset=args.offset,
        max_distance=args.max_distance,
        rerank=args.rerank,
        mmr_lambda=args.mmr_lambda,
        overfetch=args.overfetch,
    )
    common = dict(options=options, filters=filters, model=args.model, output=_output(args), **_store_kwargs(args))
    if device:
        common["device"] = args.device
    return common


def _narrowing(args: argparse.Namespace, distance: bool = True) -> tuple[list[str], list[str]]:
    """What the user set that narrows the results: (filters, other), each as 'name=value'
    (the option names without dashes: country='Iceland', keyword='beach', max-distance=0.1)."""
    from .search.filters import FILTERS

    filters = []
    for dest, spec in FILTERS.items():
        name = spec.option.lstrip("-")
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, bool):
            filters.append(name if value else f"no-{name}")
        elif isinstance(value, list):
            filters += [f"{name}={v!r}" for v in value]
        else:
            filters.append(f"{name}={value!r}")
    other = []
    if distance and getattr(args, "max_distance", None) is not None:
        other.append(f"max-distance={args.max_distance:g}")
    if getattr(args, "offset", 0):
        other.append(f"offset={args.offset}")
    return filters, other


def _no_searchable_photos(args: argparse.Namespace) -> str | None:
    """'no results: <store> has no searchable photos ...' when the store (the model) has none,
    else None. Asked only after a search without filters found nothing."""
    import numpy as np

    from . import search
    from .db import open_store
    from .errors import ClipsqlError

    try:
        with open_store(**_store_kwargs(args)) as db:
            label, _, dim = search.resolve_model(db, args.model)
            probe = np.zeros(dim, dtype=np.float32)
            probe[0] = 1.0
            if search.nearest(db, probe, model=label, k=1, output="arrow").num_rows == 0:
                return (
                    f"no results: {db.description} has no searchable photos for model {label!r} (none loaded, "
                    f"or all flagged deleted); run `clipsql refresh`"
                )
    except ClipsqlError:
        return None
    return None


def _why_empty(args: argparse.Namespace, what: str = "photos") -> str:
    """One line saying why a search found nothing: the filters (and distance bound, offset)
    that were set, or that the store has no searchable photos."""
    filters, other = _narrowing(args)
    if filters:
        return f"no {what} match: {', '.join(filters + other)}; `clipsql search facets` lists the values the store has"
    if other:
        return f"no {what} match: {', '.join(other)}"
    return _no_searchable_photos(args) or "(no results)"


def _output(args: argparse.Namespace) -> str:
    """The form a photo search's result is asked in: a pyarrow Table, printed without loading
    pandas (0.3-0.4 s of a cold `clipsql search text`, bench/cold_search.py); a DataFrame
    for a re-ranked search (the re-rankings work in pandas, and load torch besides)."""
    return "arrow" if args.rerank is None else "pandas"


def _photos_out(args: argparse.Namespace, result, title: str) -> int:
    """Print a photo search's result (a DataFrame, or a pyarrow Table where :func:`_output`
    asked for one) in `args.format`, and write `args.html`."""
    arrow = _output(args) == "arrow"
    columns = ["photo_id", "distance", "description", "photo_url"]
    if not arrow and RERANK_SCORE in result.columns:  # a model re-ranking (always a DataFrame)
        columns.insert(2, RERANK_SCORE)  # its score beside the distance
    if (result.num_rows == 0 if arrow else result.empty) and args.format == "table":
        print(_why_empty(args))
    elif arrow and args.format in ("table", "csv"):
        print(render_photo_table(result, args.format, table_columns=columns))
    else:  # JSON is pandas' (its number and escaping rules kept)
        print(render_frame(result.to_pandas() if arrow else result, args.format, table_columns=columns))
    if not arrow:
        _unscored_note(result)
    if args.html:
        from .render import write_html_grid

        write_html_grid(result.to_pandas() if arrow else result, args.html, _image_dir(args), title=title)
    return 0


def _unscored_note(frame) -> None:
    """On stderr: the candidates a model re-ranking could not score (no image), if any."""
    import sys

    unscored = frame.attrs.get("rerank_unscored") or {}
    if unscored:
        shown = "; ".join(f"{photo_id}: {why}" for photo_id, why in list(unscored.items())[:5])
        more = f" (and {len(unscored) - 5} more)" if len(unscored) > 5 else ""
        print(
            f"note: {len(unscored)} candidate(s) had no image for the re-ranker and were kept after the scored "
            f"ones ({RERANK_SCORE} empty): {shown}{more}",
            file=sys.stderr,
        )


def _search_text(args: argparse.Namespace) -> int:
    from . import search

    query = " ".join(args.query)
    return _photos_out(args, search.text(query, precision=args.precision, **_common(args)), f"text: {query}")


def _search_image(args: argparse.Namespace) -> int:
    from . import search

    return _photos_out(args, search.image(args.source, **_common(args)), f"image: {args.source}")


def _search_similar(args: argparse.Namespace) -> int:
    from . import search

    frame = search.similar(args.photo_id, **_common(args, device=False))
    return _photos_out(args, frame, f"similar to {args.photo_id}")


def _search_combined(args: argparse.Namespace) -> int:
    from . import search

    query = " ".join(args.query)
    frame = search.combined(
        query,
        images=args.images,
        text_weight=args.text_weight,
        image_weight=args.image_weight,
        precision=args.precision,
        **_common(args),
    )
    return _photos_out(args, frame, f"combined: {query} {' '.join(args.images)}".strip())


def _search_crop(args: argparse.Namespace) -> int:
    from . import search

    box = search.parse_box(args.box)
    frame = search.crop(args.source, box, photo_id=args.photo_id, **_common(args))
    return _photos_out(args, frame, f"crop {args.box} of {args.source or args.photo_id}")


def _search_duplicates(args: argparse.Namespace) -> int:
    from . import search

    frame = search.duplicates(
        args.max_distance, args.k, offset=args.offset, model=args.model, filters=_filters(args), **_store_kwargs(args)
    )
    if frame.empty and args.format == "table":
        filters, other = _narrowing(args, distance=False)
        print(
            f"no near-duplicate pairs within max-distance={args.max_distance:g}"
            + (f" among photos with {', '.join(filters)}" if filters else "")
            + (f" ({', '.join(other)})" if other else "")
        )
    else:
        print(render_frame(frame, args.format))
    if args.html:
        from .render import write_html_pairs

        write_html_pairs(frame, args.html, _image_dir(args), title=f"near-duplicates within {args.max_distance:g}")
    return 0


def _search_facets(args: argparse.Namespace) -> int:
    from . import search

    query = " ".join(args.query) if args.query else None
    filters = _filters(args)
    options = search.FacetOptions(n=args.k, per_facet=args.per_facet, by=args.facets, max_distance=args.max_distance)
    frame = search.facets(
        query,
        image=args.image,
        photo_id=args.photo_id,
        options=options,
        filters=filters,
        model=args.model,
        device=args.device,
        **_store_kwargs(args),
    )
    print(_why_empty(args) if frame.empty and args.format == "table" else render_frame(frame, args.format))
    return 0


def render_frame(frame, fmt: str, table_columns: list[str] | None = None) -> str:
    """A DataFrame as text: 'table' (aligned, the given columns), 'json' (records) or 'csv'.

    Raises:
        BadArgument: an unknown format.
    """
    if fmt == "json":
        return frame.to_json(orient="records", force_ascii=False, indent=1)
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt != "table":
        raise BadArgument(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    shown = frame[table_columns] if table_columns else frame
    if shown.empty:
        return "(no results)"
    if RERANK_SCORE in shown.columns:  # NaN: a photo the re-ranker had no image of, shown empty
        shown = shown.assign(**{RERANK_SCORE: ["" if math.isnan(x) else f"{x:.4f}" for x in shown[RERANK_SCORE]]})
    floats = {c: float for c in shown.columns if c == "distance"}
    return (
        shown.fillna("")
        .astype(floats)
        .to_string(index=False, max_colwidth=TABLE_MAX_COLWIDTH, float_format=lambda x: f"{x:.4f}")
    )


#: The widest a table cell is printed, characters; a longer value ends in "..." (pandas'
#: ``max_colwidth``, as :func:`render_frame` passes it).
TABLE_MAX_COLWIDTH = 60
#: What pandas' ``to_string`` writes for these characters of a text cell (pprint_thing's escapes).
_TABLE_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def render_photo_table(table, fmt: str, table_columns: list[str] | None = None) -> str:
    """A photo result held as a pyarrow Table (text and float64 columns), as text, the same
    text :func:`render_frame` gives for it as a DataFrame (tests/test_search_cli.py holds
    them equal), without loading pandas: 'table' (aligned, the given columns) or 'csv'.

    The table follows pandas' ``to_string(index=False)``: every cell right-aligned to its
    column's widest, columns one space apart, a float column's header one space wider
    (pandas leaves room for a sign), floats with 4 decimals, tabs and line breaks escaped,
    cells over :data:`TABLE_MAX_COLWIDTH` characters cut to end in "...", nulls empty.
    CSV is the csv module's minimal quoting, as pandas writes it.

    Raises:
        BadArgument: a format other than 'table' or 'csv' (JSON goes through pandas).
    """
    import pyarrow as pa

    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        rows = zip(*(_csv_cells(table.column(name).to_pylist()) for name in table.column_names))
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise BadArgument(f"format must be table or csv for a photo table, got {fmt!r}")
    shown = table.select(table_columns) if table_columns else table
    if shown.num_rows == 0:
        return "(no results)"
    columns = []
    for name in shown.column_names:
        column = shown.column(name)
        values = column.to_pylist()
        if pa.types.is_floating(column.type):
            header, cells = " " + name, ["" if v is None else f"{v:.4f}" for v in values]
        else:
            header, cells = name, [_table_cell(v) for v in values]
        width = max(len(header), *(len(c) for c in cells))
        columns.append([header.rjust(width)] + [c.rjust(width) for c in cells])
    return "\n".join(" ".join(line) for line in zip(*columns))


def _csv_cells(values: list) -> list:
    # pandas writes a null, and a float NaN, as an empty field.
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def _table_cell(value) -> str:
    text = "" if value is None else str(value).translate(_TABLE_ESCAPES)
    return text if len(text) <= TABLE_MAX_COLWIDTH else text[: TABLE_MAX_COLWIDTH - 3] + "..."


#: The vector width the printed DDL shows its approximate-index table for (CLIP ViT-B/32).
DDL_EXAMPLE_WIDTH = 512


def sql_text(dialect_name: str, query: str | None = None, index_type: str = "MSTG", filters=None) -> str:
    """What `clipsql sql` prints: the engine's DDL, or one named query in its form (with
    `filters`, a :class:`clipsql.search.Filters`, their conditions in place of its
    ``-- @filters`` line and their parameters declared); for MyScale the DDL followed by the
    search query's distance() form.

    Raises:
        BadArgument: an unknown dialect or index type, filters without a query.
        NotFound: an unknown query name. QueryFileError: filters for a query that takes none.
    """
    from . import dialect
    from .db import migration_files
    from .engines.clickhouse import ann_table_ddl, ann_table_name
    from .queries import get_query

    if dialect_name not in ("clickhouse", "duckdb", "myscale"):
        raise BadArgument(f"dialect must be clickhouse, duckdb or myscale, got {dialect_name!r}")
    if filters is not None and filters.active and query is None:
        raise BadArgument("filter options go with --query NAME (they print that query with them in place)")
    if query is not None:
        named = get_query(query)
        text = (named.with_filters(filters.conditions()) if filters is not None else named).sql
        if dialect_name == "duckdb":
            return dialect.to_duckdb(text) + "\n"
        if dialect_name == "myscale":
            return dialect.to_myscale(text)
        return text
    ddl = "\n".join(
        p.read_text(encoding="utf-8")
        for p in migration_files("clickhouse" if dialect_name == "myscale" else dialect_name)
    )
    if dialect_name == "duckdb":
        return ddl
    # The approximate index is a table per vector width, made by clipsql when a model of that
    # width first loads; shown for ViT-B/32's 512.
    ddl += f"\n-- One per width of the stored vectors; {DDL_EXAMPLE_WIDTH} here:\n" + ann_table_ddl(DDL_EXAMPLE_WIDTH)
    if dialect_name != "myscale":
        return ddl
    search_form = dialect.to_myscale(get_query("search_photos_ann").sql)
    return (
        dialect.myscale_ddl(ddl, index_type) + "\n-- Query form: queries/search_photos_ann.sql for MyScale "
        f"(cosineDistance -> distance; ann_table = {ann_table_name(DDL_EXAMPLE_WIDTH)})\n" + search_form
    )


def _sql(args: argparse.Namespace) -> int:
    if args.statement is not None:
        return _run_statement(args)
    filters = _filters(args)
    if args.console:
        from .queries import console_commands
        from .search.filters import console_filters

        print(console_commands() + "\n" + console_filters(), end="")
        return 0
    if args.ddl or args.dialect is not None or args.query is not None or filters.active:
        print(sql_text(args.dialect or "clickhouse", args.query, args.index_type, filters), end="")
        return 0
    return _sql_console(args)


def _sql_console(args: argparse.Namespace) -> int:
    """`clipsql sql` with no statement: the statements piped in, or the console on a terminal
    (:mod:`clipsql.console`). Exit status 0; 2 when a piped statement failed."""
    import sys

    from . import console
    from .cli_common import EXIT_ERROR
    from .db import open_store

    interactive = sys.stdin.isatty()
    if not interactive and args.ui == "harlequin":
        raise BadArgument("--ui harlequin needs a terminal; stdin is a pipe or a file")

    def render(frame) -> str:
        return render_frame(frame, args.format)

    with open_store(**_store_kwargs(args)) as db:
        runner = console.SqlConsole(db, device=args.device)
        if not interactive:
            return EXIT_ERROR if console.run_script(runner, sys.stdin, render, sys.stdout, sys.stderr) else 0
        use_harlequin = args.ui == "harlequin" or (
            args.ui == "auto" and sys.stdout.isatty() and console.harlequin_installed()
        )
        if use_harlequin:
            return console.run_harlequin(runner)
        console.run_line_console(runner, render, sys.stdout, sys.stderr)
        return 0


def _run_statement(args: argparse.Namespace) -> int:
    """`clipsql sql STATEMENT`: the statement's rows in --format (the user's own SQL, run as
    written: a console, not a query built from values)."""
    from .console import SqlConsole
    from .db import open_store

    with open_store(**_store_kwargs(args)) as db:
        # The console's runner: a query prints its rows, a command (INSERT, ALTER, ...) nothing.
        frame = SqlConsole(db, device=args.device).run(args.statement)
    if frame is not None:
        print(render_frame(frame, args.format))
    return 0
