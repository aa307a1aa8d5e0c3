"""The `clipsql eval` subcommand (registered by :mod:`clipsql.cli`): text -> image Recall@k
and MRR of a model on a captioned image set, through :func:`clipsql.evaluate.evaluate`; of
several models side by side (`--model` repeated), through :func:`clipsql.evaluate.evaluate_models`.

    clipsql eval --images DIR --captions FILE [--captions-format auto|flickr8k|csv|coco|tsv] [--name NAME]
                 [--model NAME|DIR ...] [--language L] [--limit N] [--kind KIND ...] [--json FILE]
                 [--store DIR | --duckdb FILE | ...]

Prints the metrics table (with several models: one column per model) on stdout and writes the
JSON report (default `<store>/eval/<name>.json`; its path goes to stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .constants import DEFAULT_MODEL
from .embed import DEFAULT_BATCH_SIZE


def add_eval_command(
    commands, common: argparse.ArgumentParser, add_store_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register `clipsql eval` on the `commands` subparsers of the main parser."""
    from .cli_common import EXIT_STATUS_HELP
    from .evaluate import CAPTION_FORMATS, QUERY_KINDS

    kinds = "; ".join(f"{k}: {d[0]}" for k, d in QUERY_KINDS.items())
    p = commands.add_parser(
        "eval",
        parents=[common],
        help="text -> image Recall@1/5/10 and MRR on a captioned image set (Flickr8k, COCO), of one or more models",
        description="Embed a captioned image set (Flickr8k token file, Kaggle Flickr8k CSV, COCO captions "
        "JSON or a TSV with a language column) with a model, load it into the store's eval tables "
        "(replacing an earlier load of the same --name) and compute text -> image Recall@1/5/10 and MRR "
        "in SQL (queries/eval_metrics.sql): rank = 1 + images strictly closer by cosine distance, ties "
        f"broken by image_id. Query kinds: {kinds}. Images that are missing or undecodable are "
        "reported, not fatal. With --model given more than once, every model is evaluated on the "
        "same captions (each into the set <name>@<model label>) and the metrics are printed side by "
        "side, one column per model.",
        epilog=EXIT_STATUS_HELP,
    )
    p.add_argument("--images", required=True, metavar="DIR", help="the folder of the image files the captions name")
    p.add_argument(
        "--captions",
        required=True,
        metavar="FILE",
        help="captions: Flickr8k 'name.jpg#0<TAB>caption' lines, the Kaggle 'image,caption' CSV, COCO captions JSON "
        "(an annotation may carry a \"language\"), or a TSV with the header 'image<TAB>caption<TAB>language'",
    )
    p.add_argument(
        "--captions-format",
        choices=("auto",) + CAPTION_FORMATS,
        default="auto",
        help="the captions file's format (default: told by its suffix and first line)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="the eval set's name; a rerun with the same name replaces the set (default: the images folder's "
        "name, <folder>-<language> with --language; several models: <name>@<model label> each)",
    )
    p.add_argument(
        "--language",
        default=None,
        metavar="L",
        help="only the captions of this language (a TSV's language column, a COCO annotation's \"language\"; "
        "compared without regard to case), e.g. de, zh, ar",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="NAME|DIR",
        help=f"CLIP hub name or local checkpoint directory (default {DEFAULT_MODEL}); repeat to compare "
        "several models side by side on the same captions",
    )
    p.add_argument(
        "--model-name",
        dest="model_names",
        action="append",
        default=None,
        help="label stored with the vectors (default: hub name or directory name); with several --model, "
        "one --model-name per model, in the same order",
    )
    p.add_argument("--device", default="auto", help="where the CLIP model runs: auto, cpu, cuda[:N], mps")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images (and captions) per model call (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="only the first N images of the captions file and their captions (e.g. 1000)",
    )
    p.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        choices=tuple(QUERY_KINDS),
        default=None,
        help="measure only this query kind (repeat for more; default all)",
    )
    p.add_argument(
        "--json", metavar="FILE", default=None, help="write the JSON report here (default <store>/eval/<name>.json)"
    )
    add_store_options(p)
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from .db import store_root
    from .errors import BadArgument
    from .evaluate import EvalReport, ModelComparison, default_json_path, evaluate, evaluate_models

    models = args.models or [DEFAULT_MODEL]
    if args.model_names is not None and len(args.model_names) != len(models):
        raise BadArgument(f"give one --model-name per --model ({len(models)}), got {len(args.model_names)}")
    common: dict[str, Any] = dict(
        name=args.name,
        captions_format=args.captions_format,
        language=args.language,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        kinds=args.kinds,
        store=args.store,
        clickhouse_url=args.clickhouse_url,
        duckdb=args.duckdb,
        wait_s=args.wait,
        progress=not args.quiet,
    )
    # Errors (library, engine, OS) and interrupts become an exit status in clipsql.cli.main.
    report: EvalReport | ModelComparison
    if len(models) == 1:
        report = evaluate(
            args.images,
            args.captions,
            model=models[0],
            model_name=args.model_names[0] if args.model_names else None,
            **common,
        )
    else:
        report = evaluate_models(args.images, args.captions, models, model_names=args.model_names, **common)
    path = args.json or default_json_path(store_root(args.store), report.name)
    try:
        report.to_json(path)
    except OSError as exc:
        print(report.format())
        print(f"clipsql: error: cannot write the JSON report {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(report.format())
    print(f"JSON report: {path}", file=sys.stderr)
    return 0
