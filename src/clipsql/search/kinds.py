"""The public query kinds, one function each (:func:`text`, :func:`image`, :func:`similar`,
:func:`combined`, :func:`crop`, :func:`duplicates`, :func:`facets`, :func:`nearest`): each
checks its arguments, opens (or takes) the store, makes the query vector and hands it to the
shared ranking runner.

Every kind takes its options as one value (``options=`` a :class:`SearchOptions`, or for
facets a :class:`FacetOptions`), its filters as one value (``filters=`` a
:class:`Filters`) and the backend as ``db`` (an open store, left open) or ``store`` (a
store path, opened and closed). For brevity and for the callers of the older, wide
signatures, ``**keywords`` also takes every option field (``offset=20``, ``rerank="mmr"``),
every filter (``country="Iceland"``) and, for kinds that open a store, ``clickhouse_url=``
and ``duckdb=``; a keyword wins over the same field of ``options=``
(:func:`clipsql.search.options.fold_keywords`). A keyword that is none of these is taken for
a filter, and refused as ``BadArgument: unknown filter NAME; filters are ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from ..cache import cached_image
from ..db import Store, use_store
from ..embed import (
    cached_embedder,
    prefetch_query_text_encoder,
    query_text_encoder,
    remember_query_model,
    remembered_query_model,
)
from ..precision import check_precision
from ..errors import BadArgument, NotFound
from .checks import MAX_OFFSET, check_choice, check_float, check_int, check_k, check_text
from .filters import Filters
from .inputs import crop_box, load_image
from .model_rerank import UNSCORED_ATTR, ItmReranker, model_reranked, reranker_for
from .models import resolve_model
from .options import Backend, FacetOptions, SearchOptions, fold_facet_keywords, fold_filter_keywords, fold_keywords
from .rerank import reranked
from .sql import photo_frame, photo_table, run_query, run_query_arrow, search_photos
from .terms import combine_vectors, parse_terms
from .vectors import check_query_vector, photo_vector

if TYPE_CHECKING:  # pandas loads with the first DataFrame made, not with this module
    import pandas as pd

StorePath = str | os.PathLike
#: What a photo search returns: "pandas", a DataFrame (the default), or "arrow", a pyarrow
#: Table of the same columns, made without loading pandas (the CLI prints it: importing
#: pandas is 0.3-0.4 s of a cold `clipsql search text`, bench/cold_search.py).
OUTPUTS = ("pandas", "arrow")


def _as_output(frame: pd.DataFrame, output: str) -> pd.DataFrame | pa.Table:
    """A re-ranked result (a DataFrame) in the form `output` asks for. In Arrow, the
    candidates a model re-ranking could not score ({photo_id: why}, the DataFrame's
    ``attrs[UNSCORED_ATTR]``) travel as JSON in the schema metadata under the same key."""
    if output == "pandas":
        return frame
    table = pa.Table.from_pandas(frame, preserve_index=False)
    unscored = frame.attrs.get(UNSCORED_ATTR)
    if unscored is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[UNSCORED_ATTR.encode()] = json.dumps(unscored).encode()
        table = table.replace_schema_metadata(metadata)
    return table


def _is_empty(result: pd.DataFrame | pa.Table) -> bool:
    return result.num_rows == 0 if isinstance(result, pa.Table) else result.empty


@contextlib.contextmanager
def _open(db: Store | None, store: StorePath | None, backend: Backend) -> Iterator[Store]:
    """The store to search: `db` itself (left open), else one opened from `store` and the
    backend keywords (closed when the block ends). A store opened here serves one search,
    so it builds no search snapshot: building one costs more than the one search it would
    serve (~0.4 s at 25,000 photos against ~60 ms over the tables, bench/search_latency.py)."""
    with use_store(
        db, store, clickhouse_url=backend["clickhouse_url"], duckdb=backend["duckdb"], wait_s=backend["wait_s"]
    ) as opened:
        if db is None:
            opened.search_snapshot_max_bytes = 0
        yield opened


def _ranked(
    db: Store,
    vector: list[float] | None,
    model: str,
    options: SearchOptions,
    filters: Filters,
    *,
    similar_to: str | None = None,
    rerank_text: str | None = None,
    reranker: ItmReranker | None = None,
    output: str = "pandas",
) -> pd.DataFrame | pa.Table:
    """The shared ranking runner: the page of `options` of the photos nearest to `vector` (or,
    with `vector` None, to the stored vector of `similar_to`, read by the SQL itself) that
    pass `filters`, re-ranked as `options.rerank` asks (a model re-ranking by `reranker`
    against `rerank_text`, :func:`~clipsql.search.model_rerank.model_reranked`); a
    DataFrame, or with `output` "arrow" a pyarrow Table (the re-rankings work in pandas and
    convert their page)."""
    if options.rerank_model is not None:
        if vector is None or rerank_text is None or reranker is None or similar_to is not None:
            raise TypeError("a model re-ranked search needs the query vector, its text and the re-ranker")
        frame = model_reranked(db, vector, model, options, filters, text=rerank_text, reranker=reranker)
        return _as_output(frame, output)
    if options.rerank is not None:
        if vector is None:  # similar() reads the photo's vector first for a re-ranked search
            raise TypeError("a re-ranked search needs the query vector")
        return _as_output(reranked(db, vector, model, options, filters, similar_to=similar_to), output)
    arrow = output == "arrow"
    if similar_to is not None:
        frame = (run_query_arrow if arrow else run_query)(
            db,
            "similar_photos",
            filters,
            photo_id=similar_to,
            model=model,
            k=options.k,
            offset=options.offset,
            max_distance=options.max_distance,
        )
    elif vector is None:
        raise TypeError("a search needs a query vector or similar_to")
    else:
        frame = search_photos(
            db,
            vector,
            model,
            filters,
            k=options.k,
            offset=options.offset,
            max_distance=options.max_distance,
            arrow=arrow,
        )
    return photo_table(frame) if arrow else photo_frame(frame)


def nearest(
    db: Store,
    query_vec,
    *,
    model: str,
    k: int | None = None,
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    output: str = "pandas",
    **keywords,
) -> pd.DataFrame | pa.Table:
    """Top-k photos nearest to `query_vec` ((d,) float32, L2-normalized) for `model`.

    Args:
        db: an open store.
        query_vec: the query embedding; checked before any SQL runs.
        model: stored model label (or its source).
        k: rows of the page (1..10,000); default `options.k`, else 10.
        options: paging, max_distance and re-ranking (:class:`SearchOptions`).
        filters: metadata filters (:class:`Filters`).
        output: "pandas" (a DataFrame) or "arrow" (a pyarrow Table, same columns).
        keywords: option fields and filters one by one (module docstring); no backend keywords.

    Returns:
        DataFrame photo_id, distance, description, photo_url, photo_image_url; closest first
        (MMR pick order with rerank='mmr').

    Raises:
        BadArgument: a bad vector, page, filter, rerank option (rerank="model:..." needs a
            query text), output or unknown keyword.
        NotFound: no vectors for `model`.
    """
    # Checked before any SQL runs; its width against the model's once the model is looked up.
    vector = check_query_vector(query_vec)
    check_choice("output", output, OUTPUTS)
    opts, flt, _ = fold_keywords(keywords, options, filters, backend=False, k=k)
    reranker_for(opts, "cpu", has_text=False, kind="a vector search")
    label, _, dim = resolve_model(db, model)
    vector = check_query_vector(vector, dim, model=label)
    return _ranked(db, vector, label, opts, flt, output=output)


def text(
    query: str,
    k: int | None = None,
    *,
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    db: Store | None = None,
    store: StorePath | None = None,
    output: str = "pandas",
    **keywords,
) -> pd.DataFrame | pa.Table:
    """Text -> photos: the top-k photos whose image embedding is nearest to `query`'s.

    Args:
        query: the text, e.g. "a dog on a beach" (CLIP reads its first 77 tokens).
        k: rows of the page (1..10,000); default `options.k`, else 10.
        options: offset (0..1,000,000), max_distance (cosine, 0..2), rerank, mmr_lambda and
            overfetch (:class:`SearchOptions`); default SearchOptions().
        filters: metadata filters (:class:`Filters`); default none.
        model: stored model label or source; default the newest complete model.
        device: where the text model runs (auto, cpu, cuda[:N], mps).
        precision: of the query's text tower (:func:`clipsql.embed.query_text_encoder`):
            fp32 (the model's own query vector), auto (on the CPU int8 where the checkpoint
            held the cosine floor 0.999 to fp32, else fp32: about half the time), int8, bf16
            or fp16.
        db: an open store (left open); or `store`: a store path (opened and closed here).
        output: "pandas", a DataFrame (the default), or "arrow", a pyarrow Table of the same
            columns, made without loading pandas (:data:`OUTPUTS`; the CLI's form). A model
            re-ranking's unscored candidates are then JSON under the schema metadata key
            ``rerank_unscored`` instead of ``DataFrame.attrs``.
        keywords: option fields (``offset=20``), filters (``country="Iceland"``) and
            ``clickhouse_url=`` / ``duckdb=`` one by one; a keyword wins over the same field
            of `options`.

    Returns:
        DataFrame with columns photo_id, distance (cosine, 0..2), description, photo_url,
        photo_image_url; k rows at most, closest first. With rerank="model:CHECKPOINT" the
        column rerank_score (the image-text match probability, 0..1; NaN for a photo without
        an image, placed last) follows, and the rows are best match first
        (:mod:`clipsql.search.model_rerank`).

    Raises:
        BadArgument: empty query, bad k, option, filter or output, an unknown keyword.
        NotFound: no vectors or unknown model.
        ModelError: a re-rank checkpoint that cannot be loaded or is no BLIP / BLIP-2
            image-text matching model (refused before the search runs).
    """
    check_text("query text", query, allow_empty=False)
    check_precision(precision)
    check_choice("output", output, OUTPUTS)
    opts, flt, backend = fold_keywords(keywords, options, filters, k=k)
    reranker = reranker_for(opts, device, has_text=True, kind="a text search")
    # A store opened here is a cold search (the CLI's): the text tower its last text search
    # used loads in the background while the store opens (bench/cold_search.py).
    store_key = _store_key(store, backend) if db is None else None
    remembered = remembered_query_model(store_key) if store_key else None
    if remembered:
        prefetch_query_text_encoder(*remembered, device, precision)
    with _open(db, store, backend) as opened:
        label, source, dim = resolve_model(opened, model)
        vector = query_text_encoder(source, label, device, precision).embed_texts([query])[0]
        if store_key and remembered != (source, label):
            remember_query_model(store_key, source, label)
        return _ranked(
            opened,
            check_query_vector(vector, dim),
            label,
            opts,
            flt,
            rerank_text=query,
            reranker=reranker,
            output=output,
        )


def _store_key(store: StorePath | None, backend: Backend) -> str:
    """What names the store a search opens, for :func:`remembered_query_model`."""
    if backend["clickhouse_url"]:
        return f"clickhouse:{backend['clickhouse_url']}"
    if backend["duckdb"]:
        return f"duckdb:{os.path.abspath(os.fspath(backend['duckdb']))}"
    if store is None:
        return f"default:{os.getcwd()}"
    text = os.fspath(store)
    return text if "://" in text or text == ":memory:" else os.path.abspath(text)


def image(
    source,
    k: int | None = None,
    *,
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    device: str = "auto",
    db: Store | None = None,
    store: StorePath | None = None,
    output: str = "pandas",
    **keywords,
) -> pd.DataFrame | pa.Table:
    """Image -> photos (reverse image search): photos nearest to the image's embedding.

    Args:
        source: an image file path, an http(s) URL, bytes or a PIL image.
        Others: as :func:`text`.

    Returns:
        As :func:`text`.

    Raises:
        NotFound: a missing image file, no vectors, unknown model.
        BadArgument: an unusable image or URL, bad k, option or filter, an unknown keyword,
            rerank="model:..." (it needs a query text).
    """
    check_choice("output", output, OUTPUTS)
    opts, flt, backend = fold_keywords(keywords, options, filters, k=k)
    reranker_for(opts, device, has_text=False, kind="an image search")
    picture = load_image(source)
    with _open(db, store, backend) as opened:
        label, model_source, dim = resolve_model(opened, model)
        vector = cached_embedder(model_source, label, device, "image").embed_images([picture])[0]
        return _ranked(opened, check_query_vector(vector, dim), label, opts, flt, output=output)


def similar(
    photo_id: str,
    k: int | None = None,
    *,
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    db: Store | None = None,
    store: StorePath | None = None,
    output: str = "pandas",
    **keywords,
) -> pd.DataFrame | pa.Table:
    """Photos most similar to the indexed photo `photo_id` (the photo itself left out).

    Pure SQL (queries/similar_photos.sql): the query vector is the photo's stored vector, no
    model runs (so there is no `device`). With a rerank option the vector is read first and
    the re-ranked search runs on it. An unknown photo_id is looked up only when the query
    finds nothing (or fails).

    Args:
        photo_id: the indexed photo. Others: as :func:`text`.

    Returns:
        As :func:`text`.

    Raises:
        NotFound: `photo_id` has no vector for the model (unknown photo, or not embedded).
        BadArgument: bad k, option or filter, an unknown keyword, rerank="model:..." (it
            needs a query text).
    """
    check_choice("output", output, OUTPUTS)
    opts, flt, backend = fold_keywords(keywords, options, filters, k=k)
    reranker_for(opts, "cpu", has_text=False, kind="a similar-photo search")
    check_text("photo_id", photo_id, allow_empty=False)
    with _open(db, store, backend) as opened:
        label, _, dim = resolve_model(opened, model)
        if opts.rerank is not None:
            vector = check_query_vector(photo_vector(opened, photo_id, label), dim)
            return _ranked(opened, vector, label, opts, flt, similar_to=photo_id, output=output)
        # queries/similar_photos.sql reads the photo's vector itself: no second round trip.
        # Only when it finds nothing is the vector looked up, to tell an unknown photo apart.
        try:
            frame = _ranked(opened, None, label, opts, flt, similar_to=photo_id, output=output)
        except Exception:
            photo_vector(opened, photo_id, label)  # NotFound for an unknown photo_id
            raise
        if _is_empty(frame):
            photo_vector(opened, photo_id, label)
        return frame


def combined(
    query: str = "",
    k: int | None = None,
    *,
    images: Sequence = (),
    text_weight: float = 1.0,
    image_weight: float = 1.0,
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    db: Store | None = None,
    store: StorePath | None = None,
    output: str = "pandas",
    **keywords,
) -> pd.DataFrame | pa.Table:
    """Weighted text terms and images -> photos.

    The query vector is ``text_weight * sum(w_t * e(term)) + image_weight * sum(w_i * e(image))``
    over unit-length embeddings, re-normalized. Terms follow :func:`parse_terms`
    (``"beach -people 2:sunset"``).

    Args:
        query: the terms; may be empty when images are given.
        images: image sources (as :func:`image` takes), or (source, weight) pairs.
        text_weight, image_weight: weights of the two modalities (any finite numbers).
        Others: as :func:`text`.

    A model re-ranking (rerank="model:CHECKPOINT") scores the photos against the terms that
    pull towards them, joined by ", " (:func:`rerank_terms_text`).

    Returns:
        As :func:`text`.

    Raises:
        BadArgument: no terms and no images, bad terms or weights, terms that cancel out,
            an unusable image, a bad option or filter, an unknown keyword, a model re-ranking
            without a positive text term.
        NotFound: a missing image file, no vectors, unknown model.
        ModelError: as :func:`text`.
    """
    check_precision(precision)
    check_choice("output", output, OUTPUTS)
    opts, flt, backend = fold_keywords(keywords, options, filters, k=k)
    terms = parse_terms(query) if query else []
    text_weight = check_float("text_weight", text_weight, -1e6, 1e6)
    image_weight = check_float("image_weight", image_weight, -1e6, 1e6)
    rerank_text = rerank_terms_text(terms, text_weight)
    reranker = reranker_for(
        opts, device, has_text=bool(rerank_text), kind="this combined search (no positive text term)"
    )
    pictures = []
    for item in images:
        src, weight = item if isinstance(item, tuple) else (item, 1.0)
        pictures.append((load_image(src), check_float("image weight", weight, -1e6, 1e6)))
    if not terms and not pictures:
        raise BadArgument("a combined query needs at least one text term or image")
    with _open(db, store, backend) as opened:
        label, source, dim = resolve_model(opened, model)
        # Text terms alone go through the query text path (the ONNX text tower on the CPU).
        embedder = (
            cached_embedder(source, label, device, "both")
            if pictures
            else query_text_encoder(source, label, device, precision)
        )
        parts = []
        if terms:
            vectors = embedder.embed_texts([t for t, _ in terms])
            parts += [(v, text_weight * w) for v, (_, w) in zip(vectors, terms)]
        if pictures:
            vectors = embedder.embed_images([p for p, _ in pictures])
            parts += [(v, image_weight * w) for v, (_, w) in zip(vectors, pictures)]
        vector = combine_vectors(parts)
        return _ranked(
            opened,
            check_query_vector(vector, dim),
            label,
            opts,
            flt,
            rerank_text=rerank_text,
            reranker=reranker,
            output=output,
        )


def rerank_terms_text(terms: Sequence[tuple[str, float]], text_weight: float = 1.0) -> str:
    """The text a model re-ranker scores a combined search's photos against: its terms that
    pull towards them (``w * text_weight > 0``), in order, joined by ", "; "" when none does.
    (An image-text matching model reads a caption: `-people` cannot be said to it.)"""
    return ", ".join(term for term, weight in terms if weight * text_weight > 0)


def crop(
    source=None,
    box: Sequence[float] = (0.0, 0.0, 1.0, 1.0),
    k: int | None = None,
    *,
    photo_id: str | None = None,
    options: SearchOptions | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    device: str = "auto",
    db: Store | None = None,
    store: StorePath | None = None,
    output: str = "pandas",
    **keywords,
) -> pd.DataFrame | pa.Table:
    """A region of an image -> photos (object query).

    Args:
        source: an image (as :func:`image` takes); or leave it None and give `photo_id`.
        box: (left, top, right, bottom), fractions 0..1 of the width and height when all four
            are within 0..1, else pixels.
        photo_id: crop an indexed photo, read from the store's image cache.
        Others: as :func:`text`.

    Returns:
        As :func:`text` (the photo itself may be among the results).

    Raises:
        BadArgument: both or neither of source and photo_id, a bad box, an unusable image, a
            bad option or filter, an unknown keyword, rerank="model:..." (it needs a query text).
        NotFound: a missing image file, or no cached image for `photo_id`.
    """
    check_choice("output", output, OUTPUTS)
    opts, flt, backend = fold_keywords(keywords, options, filters, k=k)
    reranker_for(opts, device, has_text=False, kind="a crop search")
    if (source is None) == (photo_id is None):
        raise BadArgument("crop needs either an image or a photo_id, not both")
    with _open(db, store, backend) as opened:
        if photo_id is not None:
            check_text("photo_id", photo_id, allow_empty=False)
            cached = cached_image(opened.image_dir, photo_id)
            if cached is None:
                raise NotFound(f"no cached image for photo_id {photo_id[:200]!r} in {opened.image_dir}")
            picture = load_image(cached)
        else:
            picture = load_image(source)
        region = picture.crop(crop_box(picture.size, box))
        label, model_source, dim = resolve_model(opened, model)
        vector = cached_embedder(model_source, label, device, "image").embed_images([region])[0]
        return _ranked(opened, check_query_vector(vector, dim), label, opts, flt, output=output)


def duplicates(
    max_distance: float = 0.05,
    k: int = 100,
    *,
    offset: int = 0,
    filters: Filters | None = None,
    model: str | None = None,
    db: Store | None = None,
    store: StorePath | None = None,
    **keywords,
) -> pd.DataFrame:
    """Near-duplicate pairs: photos whose vectors are within `max_distance` of each other.

    Exact and quadratic in the number of photos that pass the filters (queries/near_duplicates.sql).

    Args:
        max_distance: cosine distance threshold (0..2), e.g. 0.05.
        k, offset: the page of pairs (1..10,000; 0..1,000,000).
        keywords: filters (``country="Iceland"``) and ``clickhouse_url=`` / ``duckdb=`` one
            by one; no other options (no re-ranking).
        Others: as :func:`text`.

    Returns:
        DataFrame photo_id_a, photo_id_b (photo_id_a < photo_id_b), distance; closest first.

    Raises:
        BadArgument: bad threshold, k or filter, an unknown keyword.
        NotFound: no vectors or unknown model.
    """
    max_distance = check_float("max_distance", max_distance, 0.0, 2.0)
    k = check_k(k)
    offset = check_int("offset", offset, 0, MAX_OFFSET)
    flt, backend = fold_filter_keywords(keywords, filters)
    with _open(db, store, backend) as opened:
        label, _, _ = resolve_model(opened, model)
        frame = run_query(opened, "near_duplicates", flt, model=label, max_distance=max_distance, k=k, offset=offset)
    return frame[["photo_id_a", "photo_id_b", "distance"]].astype({"distance": "float64"}).reset_index(drop=True)


def facets(
    query: str | None = None,
    *,
    image=None,
    photo_id: str | None = None,
    query_vec=None,
    options: FacetOptions | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    device: str = "auto",
    db: Store | None = None,
    store: StorePath | None = None,
    **keywords,
) -> pd.DataFrame:
    """Facet counts among the top-n photos of a query: how many per country, city,
    photographer, camera_make, keyword and dominant color.

    Exactly one query: `query` (text), `image`, `photo_id` (its stored vector; the photo
    itself counts) or `query_vec` ((d,) floats, d the model's width).

    Args:
        options: n (photos counted, 1..10,000), per_facet (values per facet, most frequent
            first, 1..10,000), by (the facets wanted, from :data:`FACETS`; default all) and
            max_distance (:class:`FacetOptions`); default FacetOptions().
        keywords: n=, per_facet=, by=, max_distance=, filters and ``clickhouse_url=`` /
            ``duckdb=`` one by one; a keyword wins over the same field of `options`.
        Others: as :func:`text`.

    Returns:
        DataFrame facet, value, photos; by facet, then most photos first, then value.

    Raises:
        BadArgument: not exactly one query, a facet outside :data:`FACETS`, bad n, option or
            filter, an unknown keyword.
        NotFound: an unknown photo_id, no vectors or unknown model.
    """
    given = [x is not None for x in (query, image, photo_id, query_vec)]
    if sum(given) != 1:
        raise BadArgument("facets needs exactly one of query, image, photo_id or query_vec")
    if query_vec is not None:
        query_vec = check_query_vector(query_vec)
    opts, flt, backend = fold_facet_keywords(keywords, options, filters)
    if query is not None:
        check_text("query text", query, allow_empty=False)
    picture = load_image(image) if image is not None else None
    with _open(db, store, backend) as opened:
        label, source, dim = resolve_model(opened, model)
        if query is not None:
            vector = query_text_encoder(source, label, device).embed_texts([query])[0]
        elif picture is not None:
            vector = cached_embedder(source, label, device, "image").embed_images([picture])[0]
        elif photo_id is not None:
            vector = photo_vector(opened, photo_id, label)
        else:
            vector = query_vec
        frame = run_query(
            opened,
            "facets",
            flt,
            query_vec=check_query_vector(vector, dim, model=label),
            model=label,
            n=opts.n,
            per_facet=opts.per_facet,
            max_distance=opts.max_distance,
        )
    frame = frame[frame["facet"].isin(opts.by)][["facet", "value", "photos"]]
    return frame.astype({"photos": "int64"}).reset_index(drop=True)
