"""Which stored model a search uses: :func:`resolve_model` (remembered by the store for a
few seconds) over :func:`lookup_model` (the lookup queries themselves, which
bench/search_latency.py times)."""

from __future__ import annotations

import logging

from ..db import Store
from ..errors import NotFound
from ..queries import get_query
from .checks import check_text

log = logging.getLogger(__name__)


def resolve_model(db: Store, model: str | None = None) -> tuple[str, str, int]:
    """(label, source, dim) of `model`, or by default of the newest complete model (one a
    refresh embedded every photo of the store with; queries/models.sql lists those first);
    while no model is complete, the newest model with stored vectors (a warning is logged).

    The answer is kept by the store for a few seconds (:meth:`clipsql.db.Store.remember`), so a
    session of searches does not pay the lookup query each time.

    Raises:
        BadArgument: an empty or unusable model name.
        NotFound: no such model in the store, or no model at all.
    """
    if model is not None:
        check_text("model", model, allow_empty=False)
    return db.remember(("resolve_model", model), lambda: lookup_model(db, model))


def lookup_model(db: Store, model: str | None = None) -> tuple[str, str, int]:
    """:func:`resolve_model` without the store's memory: runs queries/model_lookup.sql (for a
    named model) and queries/models.sql each time.

    Raises:
        NotFound: no such model in the store, or no model at all.
    """
    # Rows as dicts from Arrow, of the columns read here (pyarrow converts a nanosecond
    # timestamp through pandas): a search loads no pandas (the CLI prints from Arrow).
    if model is not None:
        found = _rows(get_query("model_lookup").run_arrow(db, model=model), "model", "model_source", "dim")
        if found:
            row = found[0]
            return str(row["model"]), str(row["model_source"]), int(row["dim"])
    models = _rows(get_query("models").run_arrow(db, min_vectors=1), "model", "model_source", "dim", "complete")
    if not models:
        raise NotFound(f"{db.description} holds no vectors yet: run `clipsql refresh` first")
    if model is not None:
        stored = ", ".join(str(r["model"]) for r in models)
        raise NotFound(f"model {model[:200]!r} has no vectors in {db.description}; stored: {stored}")
    row = models[0]
    if int(row.get("complete", 1)) != 1:
        log.warning(
            "no model in %s has finished a refresh yet; searching %s, whose vectors may not cover every photo",
            db.description,
            row["model"],
        )
    return str(row["model"]), str(row["model_source"]), int(row["dim"])


def _rows(table, *columns: str) -> list[dict]:
    """The rows of `columns` of a pyarrow Table, those of them it has, as dicts."""
    return table.select([c for c in columns if c in table.column_names]).to_pylist()
