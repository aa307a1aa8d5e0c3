"""Search: the named queries of queries/ run with every value bound as a parameter.

Query kinds, one public function each, all returning pandas DataFrames (the photo searches,
asked with ``output="arrow"``, a pyarrow Table of the same columns instead: :data:`OUTPUTS`):

| function | query vector | query file |
| --- | --- | --- |
| :func:`text` | the text's CLIP embedding | search_photos |
| :func:`image` | an image file, URL or PIL image, embedded | search_photos |
| :func:`similar` | an indexed photo's stored vector (pure SQL, no model) | similar_photos |
| :func:`combined` | weighted text terms (`beach -people 2:sunset`) and images, re-normalized | search_photos |
| :func:`crop` | a box (pixels or fractions) of an image or of an indexed photo | search_photos |
| :func:`duplicates` | none: pairs of photos closer than a threshold | near_duplicates |
| :func:`facets` | any of the above: counts per facet among the top-n | facets |
| :func:`nearest` | a vector you bring, (d,) float32 | search_photos |

(The query files read the search relation photo_search. On chdb, search_photos is answered
from the store's search snapshot instead: the vectors copied into this process and scored
there (:class:`~clipsql.search.memory.InMemoryVectors`), the photos a filter lets through
asked of the snapshot's table; the same rows: :mod:`clipsql.snapshot`.)

Photo results have the columns photo_id, distance (cosine, 0..2), description, photo_url,
photo_image_url; closest first, ties broken by photo_id. Every kind takes the same optional
metadata filters (``filters=`` a :class:`Filters`, or keyword arguments such as
``country="Iceland"``), one per entry of the filter registry :data:`FILTERS` (each a static
SQL condition over photo_search with a bound, typed parameter, :mod:`~clipsql.search.filters`).
Photo searches take `k` and ``options=`` a :class:`SearchOptions`: `offset` (paging),
`max_distance` and the re-ranking below, each also accepted as a keyword (``offset=20``),
which wins over the same field of `options`. The conditions of the filters that are set go
into the query's WHERE before the distance ranking, so they never make a query return fewer
than k rows while k photos match.

Re-ranking (`rerank=`): ``"exact"`` lets the HNSW index propose ``overfetch * (k + offset)``
candidates and re-scores them exactly (approximate; meant for stores too big to scan: at
25,000 photos it measured about as fast as the exact search, see bench/search_latency.py;
with a filter set the exact search runs instead); ``"mmr"`` takes the ``overfetch * (k + offset)`` nearest
photos and picks k of them by maximal marginal relevance (`mmr_lambda` 1.0 = pure
relevance, 0.0 = pure diversity); ``"model:CHECKPOINT"`` (text and combined searches) has an
image-text matching model (BLIP or BLIP-2 ITM, :class:`ItmReranker`) re-score the
``overfetch * (k + offset)`` nearest photos against the query text, and returns its page of
them, best match first, with the match probability in a column ``rerank_score``; the
re-ranked candidates are checked to be a permutation of the proposed ones
(:func:`check_permutation`).

Every function takes the backend as `store` (a path; with the keywords `clickhouse_url` /
`duckdb`, see :func:`clipsql.db.open_store`), or an open :class:`~clipsql.db.Store` as `db`,
which is then left open (a notebook keeps one store open for many queries).

The modules, lowest first (each imports only those before it):

| module | holds |
| --- | --- |
| :mod:`~clipsql.search.checks` | value checks (check_text, check_int, ...) and limits (MAX_K, ...) |
| :mod:`~clipsql.search.filters` | the filter registry FILTERS, :class:`Filter`, :class:`Filters`, ORIENTATIONS |
| :mod:`~clipsql.search.terms` | :func:`parse_terms`, :func:`combine_vectors` |
| :mod:`~clipsql.search.inputs` | image inputs: :func:`load_image`, :func:`crop_box`, :func:`parse_box` |
| :mod:`~clipsql.search.vectors` | :func:`check_query_vector`, :func:`photo_vectors`, :func:`photo_vector` |
| :mod:`~clipsql.search.models` | :func:`resolve_model`, :func:`lookup_model` |
| :mod:`~clipsql.search.options` | :class:`SearchOptions`, :class:`FacetOptions`, FACETS, RERANKS, the keyword folding |
| :mod:`~clipsql.search.sql` | running the photo queries (snapshot or tables), PHOTO_COLUMNS |
| :mod:`~clipsql.search.rerank` | :func:`mmr_order`, the exact and MMR re-ranking |
| :mod:`~clipsql.search.model_rerank` | :class:`ItmReranker`, the model re-ranking and its permutation check |
| :mod:`~clipsql.search.kinds` | the query kinds above and the shared ranking runner |
"""

from __future__ import annotations

from .checks import MAX_K, MAX_OFFSET, MAX_OVERFETCH, MAX_TEXT_CHARS
from .filters import FILTERS, ORIENTATIONS, Filter, Filters
from .inputs import MAX_IMAGE_BYTES, crop_box, load_image, parse_box
from .kinds import OUTPUTS, combined, crop, duplicates, facets, image, nearest, similar, text
from .model_rerank import (
    RERANK_FAMILIES,
    RERANK_SCORE,
    ItmReranker,
    RerankError,
    cached_reranker,
    check_permutation,
)
from .models import lookup_model, resolve_model
from .options import DEFAULT_OVERFETCH, FACETS, MODEL_RERANK_PREFIX, RERANKS, FacetOptions, SearchOptions
from .rerank import mmr_order
from .sql import PHOTO_COLUMNS
from .terms import combine_vectors, parse_terms
from .vectors import check_query_vector, photo_vector, photo_vectors

__all__ = [
    # query kinds
    "text",
    "image",
    "similar",
    "combined",
    "crop",
    "duplicates",
    "facets",
    "nearest",
    # values they take
    "Filters",
    "Filter",
    "SearchOptions",
    "FacetOptions",
    # helpers
    "parse_terms",
    "combine_vectors",
    "load_image",
    "crop_box",
    "parse_box",
    "mmr_order",
    "check_query_vector",
    "photo_vectors",
    "photo_vector",
    "resolve_model",
    "lookup_model",
    "ItmReranker",
    "cached_reranker",
    "check_permutation",
    "RerankError",
    # constants
    "FILTERS",
    "ORIENTATIONS",
    "FACETS",
    "OUTPUTS",
    "RERANKS",
    "MODEL_RERANK_PREFIX",
    "RERANK_FAMILIES",
    "RERANK_SCORE",
    "PHOTO_COLUMNS",
    "MAX_K",
    "MAX_OFFSET",
    "MAX_OVERFETCH",
    "MAX_TEXT_CHARS",
    "MAX_IMAGE_BYTES",
    "DEFAULT_OVERFETCH",
]
