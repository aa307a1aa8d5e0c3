"""How a search ranks and pages: :class:`SearchOptions` (photo searches) and
:class:`FacetOptions` (facet counts), each checked when it is made, and
:func:`fold_keywords`, which turns a query kind's keyword shortcuts (``offset=20``,
``rerank="mmr"``, ``country="Iceland"``, ``duckdb="x.duckdb"``) into those values."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, TypeVar

from ..errors import BadArgument
from .checks import MAX_K, MAX_OFFSET, MAX_OVERFETCH, check_float, check_int, check_k, check_text
from .filters import Filters

#: Candidates per wanted row for rerank="exact", "mmr" and "model:CHECKPOINT".
DEFAULT_OVERFETCH = 10
RERANKS = ("exact", "mmr")
#: The prefix of a model re-ranking, rerank="model:CHECKPOINT" (:mod:`clipsql.search.model_rerank`).
MODEL_RERANK_PREFIX = "model:"
#: Facets of the facets query (a fixed list written in queries/facets.sql).
FACETS = ("camera_make", "city", "color", "country", "keyword", "photographer")


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """The page and the ranking of a photo search, checked (and ints/floats normalized) when made.

    Attributes:
        k: rows of the page, 1..10,000.
        offset: rows skipped before the page, 0..1,000,000.
        max_distance: only photos with a cosine distance <= this (0..2); None = no bound.
        rerank: None (exact search), "exact" (the HNSW index proposes ``overfetch * (k + offset)``
            candidates, re-scored exactly), "mmr" (maximal marginal relevance among the
            ``overfetch * (k + offset)`` nearest photos) or "model:CHECKPOINT" (an image-text
            matching model, a hub name or a checkpoint directory, re-scores the
            ``overfetch * (k + offset)`` nearest photos against the query text; text and
            combined searches only, :mod:`clipsql.search.model_rerank`).
        mmr_lambda: for "mmr", 1.0 = relevance only .. 0.0 = diversity only.
        overfetch: candidates per wanted row for a re-ranked search, 1..1,000.

    Raises:
        BadArgument: a value of the wrong type or out of range (named in the message).
    """

    k: int = 10
    offset: int = 0
    max_distance: float | None = None
    rerank: str | None = None
    mmr_lambda: float = 0.5
    overfetch: int = DEFAULT_OVERFETCH

    def __post_init__(self) -> None:
        # Frozen: the normalized values are written past the dataclass's own __setattr__.
        normalize = object.__setattr__
        normalize(self, "k", check_k(self.k))
        normalize(self, "offset", check_int("offset", self.offset, 0, MAX_OFFSET))
        if self.max_distance is not None:
            normalize(self, "max_distance", check_float("max_distance", self.max_distance, 0.0, 2.0))
        if self.rerank is not None and self.rerank not in RERANKS:
            if not isinstance(self.rerank, str) or not self.rerank.startswith(MODEL_RERANK_PREFIX):
                raise BadArgument(
                    f"rerank must be one of {', '.join(RERANKS)}, {MODEL_RERANK_PREFIX}CHECKPOINT or None, "
                    f"got {self.rerank!r}"
                )
            check_text("the checkpoint of rerank='model:CHECKPOINT'", self.rerank_model, allow_empty=False)
        normalize(self, "mmr_lambda", check_float("mmr_lambda", self.mmr_lambda, 0.0, 1.0))
        normalize(self, "overfetch", check_int("overfetch", self.overfetch, 1, MAX_OVERFETCH))

    @property
    def rerank_model(self) -> str | None:
        """The checkpoint of a model re-ranking (rerank="model:CHECKPOINT"), else None."""
        if isinstance(self.rerank, str) and self.rerank.startswith(MODEL_RERANK_PREFIX):
            return self.rerank[len(MODEL_RERANK_PREFIX) :]
        return None


@dataclasses.dataclass(frozen=True)
class FacetOptions:
    """What a facets query counts, checked when made.

    Attributes:
        n: how many of the nearest photos are counted, 1..10,000.
        per_facet: values returned per facet, most frequent first, 1..10,000.
        by: the facets wanted, from :data:`FACETS`: one name, several, or None for all
            (kept as a tuple of names).
        max_distance: only photos with a cosine distance <= this (0..2) are counted.

    Raises:
        BadArgument: a value of the wrong type or range, or a facet outside FACETS.
    """

    n: int = 100
    per_facet: int = 10
    by: Sequence[str] | str | None = None
    max_distance: float | None = None

    def __post_init__(self) -> None:
        normalize = object.__setattr__
        normalize(self, "n", check_int("n", self.n, 1, MAX_K))
        normalize(self, "per_facet", check_int("per_facet", self.per_facet, 1, MAX_K))
        if self.max_distance is not None:
            normalize(self, "max_distance", check_float("max_distance", self.max_distance, 0.0, 2.0))
        wanted = list(FACETS) if self.by is None else [self.by] if isinstance(self.by, str) else list(self.by)
        bad = [f for f in wanted if f not in FACETS]
        if bad or not wanted:
            raise BadArgument(f"facets must be among {', '.join(FACETS)}, got {wanted!r}")
        normalize(self, "by", tuple(wanted))


class Backend(TypedDict):
    """The first wave's backend keywords of a query kind (see :func:`clipsql.db.use_store`)."""

    clickhouse_url: str | None
    duckdb: str | os.PathLike | None
    wait_s: float | None


_Options = TypeVar("_Options", SearchOptions, FacetOptions)


def _backend(rest: dict[str, Any], takes_backend: bool) -> Backend:
    if not takes_backend:  # left in `rest`: refused below as unknown filters, as the first wave did
        return Backend(clickhouse_url=None, duckdb=None, wait_s=None)
    return Backend(
        clickhouse_url=rest.pop("clickhouse_url", None),
        duckdb=rest.pop("duckdb", None),
        wait_s=rest.pop("wait_s", None),
    )


def _options(rest: dict[str, Any], options: object, option_type: type[_Options], named: dict) -> _Options:
    """`options` (or `option_type`'s defaults) with the option keywords of `rest` (popped) and
    the kind's non-None `named` option parameters applied on top."""
    fields = {f.name for f in dataclasses.fields(option_type)}
    changes = {name: value for name, value in named.items() if value is not None}
    changes.update({name: rest.pop(name) for name in list(rest) if name in fields})
    if options is None:
        return option_type(**changes)
    if not isinstance(options, option_type):
        raise BadArgument(f"options must be a clipsql.search.{option_type.__name__}, got {type(options).__name__}")
    return dataclasses.replace(options, **changes) if changes else options


def fold_keywords(
    keywords: Mapping[str, object],
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    *,
    backend: bool = True,
    **named,
) -> tuple[SearchOptions, Filters, Backend]:
    """Fold a photo search's keyword shortcuts into its (options, filters, backend keywords).

    Every query kind takes ``**keywords``: the fields of its options (``offset=20``), the
    backend keywords ``clickhouse_url=`` / ``duckdb=`` (kinds that open a store), and filter
    names (``country="Iceland"``). A keyword given beside ``options=`` wins over the field
    of the same name (``text(q, options=o, offset=20)`` searches o's page 20 rows on), as do
    the kind's own option parameters in `named` (``k``) unless they are None.

    Args:
        keywords: the kind's ``**keywords``.
        options: the ``options=`` value given, or None (the defaults of :class:`SearchOptions`).
        filters: the ``filters=`` value given, or None; filter keywords apply on top of it.
        backend: whether the kind opens a store (takes clickhouse_url= and duckdb=).
        named: option fields the kind takes as parameters (k=...), None when not given.

    Returns:
        (SearchOptions, Filters, Backend), every value checked; options before filters.

    Raises:
        BadArgument: options or filters of the wrong type, a bad value, or an unknown keyword
            (``unknown filter NAME; filters are ...``: a keyword that is no option or backend
            keyword is taken for a filter).
    """
    rest = dict(keywords)
    store = _backend(rest, backend)
    opts = _options(rest, options, SearchOptions, named)
    return opts, Filters.of(filters, **rest), store


def fold_facet_keywords(
    keywords: Mapping[str, object], options: FacetOptions | None = None, filters: Filters | None = None
) -> tuple[FacetOptions, Filters, Backend]:
    """:func:`fold_keywords` for the facets kind: (FacetOptions, Filters, Backend)."""
    rest = dict(keywords)
    store = _backend(rest, True)
    opts = _options(rest, options, FacetOptions, {})
    return opts, Filters.of(filters, **rest), store


def fold_filter_keywords(keywords: Mapping[str, object], filters: Filters | None = None) -> tuple[Filters, Backend]:
    """:func:`fold_keywords` for a kind without options (duplicates): (Filters, Backend)."""
    rest = dict(keywords)
    store = _backend(rest, True)
    return Filters.of(filters, **rest), store
