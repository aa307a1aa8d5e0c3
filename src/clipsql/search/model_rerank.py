"""Model re-ranking (``rerank="model:CHECKPOINT"``): the nearest photos of a text search are
re-scored by an image-text matching (ITM) model and re-ordered by its match probability.

The embedding search proposes the candidates, ``overfetch * (k + offset)`` nearest photos
(the same pool as ``rerank="mmr"``); :class:`ItmReranker` scores each against the query
text; :func:`rerank_candidates` orders them, highest match probability first, and the page
``offset .. offset + k`` of that order is returned, with the score in a column
``rerank_score`` beside ``distance``.

The guarantee, checked in code on every call (:func:`check_permutation`): the re-ranked
candidates are a permutation of the candidates the search proposed, nothing dropped, nothing
invented, no photo twice. A re-ranker that returns a score per image (not a list of ids)
cannot drop or invent a photo; its output is checked all the same (one finite score in 0..1
per image), and a violation raises :class:`RerankError`, an internal fault. This answers the
seed document 002's reranker, a generative vision-language model asked to re-order nine
photos, which "only gave eight results and has dropped one".

Ties in the score keep the distance order (a stable sort). A candidate whose image cannot
be had (not in the store's image cache, and its photo_image_url is not http(s) or cannot be
fetched or decoded) is never dropped: it keeps its place, in distance order, after the
scored ones, with ``rerank_score`` NaN; it is logged (warning) and named in the result's
``attrs["rerank_unscored"]`` ({photo_id: why}), which the CLI prints.

Accepted checkpoints, told apart by the ``model_type`` of their config (AutoConfig), a hub
name or a local directory (loaded with ``local_files_only=True``), see :data:`RERANK_FAMILIES`:

| model_type | transformers class | head | e.g. |
| --- | --- | --- | --- |
| blip | BlipForImageTextRetrieval | ``itm_score`` (n, 2) | Salesforce/blip-itm-base-coco |
| blip-2 | Blip2ForImageTextRetrieval | ``logits_per_image`` (n, 2) with ``use_image_text_matching_head`` | Salesforce/blip2-itm-vit-g |

The score is the ITM head's softmax probability of class 1, "the image matches the text"
(transformers' BLIP-2 retrieval example: ``probs[0][1]`` "that image 0 is '{text}'").
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..cache import cached_image
from ..db import Store
from ..embed import check_device_name, check_model_source, resolve_device
from ..errors import BadArgument, ClipsqlError, ModelError
from ..images import InvalidImage, open_rgb
from .checks import MAX_K, MAX_OVERFETCH, check_text
from .filters import Filters
from .inputs import MAX_IMAGE_BYTES
from .options import SearchOptions
from .sql import photo_frame, search_photos

if TYPE_CHECKING:  # torch, PIL and pandas load with a model, an image or a DataFrame, not with this module
    import pandas as pd
    import torch
    from PIL.Image import Image

log = logging.getLogger(__name__)

#: The column of a model re-ranked result that holds the match probability (0..1; NaN: no image).
RERANK_SCORE = "rerank_score"
#: Key of a re-ranked result's ``DataFrame.attrs``: {photo_id: why} of the candidates without an image.
UNSCORED_ATTR = "rerank_unscored"
#: Images per forward pass of the re-ranker (bounds memory: 16 x 3 x 384 x 384 float32 = 28 MB of pixels).
RERANK_BATCH_SIZE = 16
#: Concurrent downloads of the candidates' images that are not in the store's cache.
IMAGE_WORKERS = 8


class RerankError(ClipsqlError, AssertionError):
    """A model re-ranking broke its contract: scores of the wrong shape or not finite in 0..1,
    or an order that is not a permutation of the candidates. An internal fault, never the
    caller's: nothing is returned rather than a page with a photo dropped or invented."""


@dataclasses.dataclass(frozen=True)
class RerankFamily:
    """One kind of image-text matching checkpoint the re-ranker accepts.

    Attributes:
        model_type: the config's ``model_type`` (AutoConfig), e.g. "blip".
        architecture: the transformers class loaded, with an ITM head.
        processor: the transformers processor class (its image processor and tokenizer are used).
        example: a hub checkpoint of this family (named in error messages).
    """

    model_type: str
    architecture: str
    processor: str
    example: str


#: The accepted checkpoint families, by config model_type.
RERANK_FAMILIES: dict[str, RerankFamily] = {
    "blip": RerankFamily("blip", "BlipForImageTextRetrieval", "BlipProcessor", "Salesforce/blip-itm-base-coco"),
    "blip-2": RerankFamily("blip-2", "Blip2ForImageTextRetrieval", "Blip2Processor", "Salesforce/blip2-itm-vit-g"),
}


def families_text() -> str:
    """The accepted families in words, for messages and help."""
    return "; ".join(f"{f.model_type} ({f.architecture}, e.g. {f.example})" for f in RERANK_FAMILIES.values())


class Scorer(Protocol):
    """What :func:`rerank_candidates` needs of a re-ranker: one score per image."""

    def score(self, text: str, images: Sequence[Image]) -> np.ndarray:
        """(n,) scores in 0..1 of `images` (n PIL images) against `text`, higher = better match."""
        ...


class ItmReranker:
    """An image-text matching model (BLIP or BLIP-2 ITM head) that scores images against a text.

    Loading reads the checkpoint's config first and refuses, before the weights load, any
    checkpoint that is not of :data:`RERANK_FAMILIES` (by ``model_type``) or whose config
    names another architecture (a captioning BLIP, a BLIP-2 with a language model: no ITM
    head); weights that lack the ITM head are refused too.

    Args:
        checkpoint: a hub name (e.g. "Salesforce/blip-itm-base-coco") or a local directory
            (loaded with ``local_files_only=True``; a path starting with '.', '/' or '~' that
            is not a directory is refused before anything loads).
        device: 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda[:N]' or 'mps'. float16 on
            CUDA, float32 elsewhere.
        batch_size: images per forward pass, 1..1,024.

    Attributes:
        source: the checkpoint as given. family: its :class:`RerankFamily`. device: resolved.
        max_text_tokens: longest tokenized text the text tower takes (its position table),
            longer texts are cut to it.

    Raises:
        BadArgument: an empty checkpoint, a bad device or batch size.
        ModelError: a missing directory, an unreadable checkpoint, a family not accepted, no ITM head.
    """

    def __init__(self, checkpoint: str | os.PathLike, *, device: str = "auto", batch_size: int = RERANK_BATCH_SIZE):
        given = os.fspath(checkpoint) if isinstance(checkpoint, os.PathLike) else checkpoint
        self.source = check_text("re-rank checkpoint", given, allow_empty=False)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1024:
            raise BadArgument(f"re-rank batch_size must be an integer from 1 to 1024, got {batch_size!r}")
        check_device_name(device)
        check_model_source(self.source, " (rerank='model:CHECKPOINT' takes a hub name or a checkpoint directory)")
        self.batch_size = batch_size
        local = Path(self.source).expanduser().is_dir()
        where = str(Path(self.source).expanduser()) if local else self.source
        self.family, config = _family_of(where, local)
        self.device = resolve_device(device)

        import torch
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # fp16 halves memory and time on CUDA; CPU and MPS stay in fp32 (as clipsql.embed does).
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        model_class = getattr(transformers, self.family.architecture)
        processor_class = getattr(transformers, self.family.processor)
        try:
            model, info = model_class.from_pretrained(
                where, local_files_only=local, dtype=self.dtype, output_loading_info=True
            )
            processor = processor_class.from_pretrained(where, local_files_only=local)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot load re-rank model {self.source!r}: {exc}") from exc
        missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith("itm_head"))
        if missing:
            raise ModelError(
                f"re-rank model {self.source!r} has no trained image-text matching head ({', '.join(missing)} "
                f"missing from its weights); accepted: {families_text()}"
            )
        self.config = config
        # transformers types `to` through a decorator as if it took the model: called as documented.
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        text_config = config.text_config if self.family.model_type == "blip" else config.qformer_config
        self.max_text_tokens = int(text_config.max_position_embeddings)

    def __repr__(self) -> str:
        return f"ItmReranker({self.source!r}, family={self.family.model_type!r}, device={self.device!r})"

    def _tokens(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each (1, L) int64, of `text` as the family's processor
        makes them (BLIP-2 with an image_token_index: the query tokens' placeholders first)."""
        import torch

        tokens = self.tokenizer([text], truncation=True, max_length=self.max_text_tokens, return_tensors="pt")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        image_token = getattr(self.config, "image_token_index", None)
        if self.family.model_type == "blip-2" and image_token is not None:
            # Blip2Processor puts num_query_tokens image tokens before the text; the model strips them.
            queries = int(self.config.num_query_tokens)
            ids = torch.cat([torch.full((1, queries), int(image_token), dtype=ids.dtype), ids], dim=1)
            mask = torch.cat([torch.ones((1, queries), dtype=mask.dtype), mask], dim=1)
        return ids, mask

    def _match_logits(self, ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(b, 2) ITM logits (no match, match) of b images against the text of `ids`."""
        if self.family.model_type == "blip":
            return self.model(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True).itm_score
        out = self.model(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
        return out.logits_per_image

    def score(self, text: str, images: Sequence[Image]) -> np.ndarray:
        """Match probabilities of `images` against `text`.

        Args:
            text: the query text (cut to :attr:`max_text_tokens` tokens).
            images: n PIL images (any mode; converted to RGB), scored in batches of `batch_size`.

        Returns:
            (n,) float64 in 0..1: the ITM head's softmax probability that the image matches.

        Raises:
            BadArgument: `text` is not a non-empty string.
        """
        import torch

        check_text("re-rank text", text, allow_empty=False)
        if not images:
            return np.zeros(0, dtype=np.float64)
        ids, mask = self._tokens(text)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            pixels = self.image_processor(batch, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, dtype=self.dtype)
            n = len(batch)
            with torch.inference_mode():
                logits = self._match_logits(
                    ids.expand(n, -1).to(self.device), mask.expand(n, -1).to(self.device), pixels
                )
            out.append(logits.float().softmax(dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def _family_of(where: str, local: bool) -> tuple[RerankFamily, Any]:
    """(family, config) of the checkpoint at `where`, from its config alone (no weights read).

    Raises:
        ModelError: no readable config, a model_type not in RERANK_FAMILIES, or a config
            naming an architecture other than the family's retrieval class.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(where, local_files_only=local)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the config of re-rank model {where!r}: {exc}") from exc
    model_type = getattr(config, "model_type", None)
    family = RERANK_FAMILIES.get(str(model_type))
    if family is None:
        raise ModelError(
            f"re-rank model {where!r} is a {model_type!r} checkpoint; a model re-ranker must be an image-text "
            f"matching checkpoint of: {families_text()}"
        )
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and family.architecture not in architectures:
        raise ModelError(
            f"re-rank model {where!r} is a {', '.join(architectures)} checkpoint, without the image-text matching "
            f"head of {family.architecture}; accepted: {families_text()}"
        )
    return family, config


@functools.lru_cache(maxsize=2)
def cached_reranker(checkpoint: str, device: str = "auto") -> ItmReranker:
    """The :class:`ItmReranker` of `checkpoint` on `device`, loaded once per process and kept
    (the 2 used last): loading costs seconds (BLIP ITM base: 224M parameters), a notebook
    re-ranks many queries. A load that fails is not kept.

    Raises:
        As :class:`ItmReranker`.
    """
    return ItmReranker(checkpoint, device=device)


def check_permutation(candidates: Sequence[str], reranked: Sequence[str]) -> None:
    """Check that `reranked` is a permutation of `candidates` (photo_ids): the same length,
    every candidate once, nothing else.

    Raises:
        RerankError: naming the photo_ids dropped, invented or repeated (the first 10 of each).
    """
    before, after = Counter(map(str, candidates)), Counter(map(str, reranked))
    if before == after and all(n == 1 for n in after.values()):
        return
    dropped = sorted(set(before) - set(after))[:10]
    invented = sorted(set(after) - set(before))[:10]
    repeated = sorted(p for p, n in after.items() if n > 1)[:10]
    raise RerankError(
        f"the model re-ranking is not a permutation of its {len(candidates)} candidates "
        f"({len(reranked)} rows; dropped {dropped}, invented {invented}, repeated {repeated}): an internal fault"
    )


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """The order of candidates (given nearest first) by `scores`: highest score first, ties in
    the given (distance) order, the NaN scores (no image) last in the given order.

    Args:
        scores: (n,) float64, NaN for an unscored candidate.

    Returns:
        (n,) int64 indices, a permutation of 0..n-1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    index = np.arange(len(scores))
    scored = ~np.isnan(scores)
    ranked = index[scored][np.argsort(-scores[scored], kind="stable")]
    return np.concatenate([ranked, index[~scored]]).astype(np.int64)


def candidate_images(frame: pd.DataFrame, image_dir: str | os.PathLike | None) -> tuple[list, dict[str, str]]:
    """The image of each candidate row of `frame` (photo_id, photo_image_url): its file in the
    store's image cache (:func:`clipsql.cache.cached_image`, as the notebooks' views show it),
    else its photo_image_url fetched by the download stage (http(s) only: timeouts, retries,
    at most :data:`~clipsql.search.inputs.MAX_IMAGE_BYTES`) into a temporary folder.

    Returns:
        (images, unscored): per row an RGB PIL image or None; {photo_id: why} of the rows
        without one.
    """
    images: list = [None] * len(frame)
    unscored: dict[str, str] = {}
    fetch: list[tuple[int, str, str]] = []
    for i, (photo_id, url) in enumerate(zip(frame["photo_id"], frame["photo_image_url"])):
        path = cached_image(image_dir, str(photo_id))
        why = "not in the image cache"
        if path is not None:
            try:
                images[i] = open_rgb(path.read_bytes())
                continue
            except (OSError, InvalidImage) as exc:
                why = f"cached image unreadable ({exc})"
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            fetch.append((i, str(photo_id), url))
        else:
            unscored[str(photo_id)] = f"{why}, and photo_image_url is not an http(s) URL"
    if fetch:
        for i, photo_id, image, why in _fetch_images(fetch):
            images[i] = image
            if image is None:
                unscored[photo_id] = f"not in the image cache; fetching photo_image_url failed: {why}"
    return images, unscored


def _fetch_images(wanted: list[tuple[int, str, str]]) -> list[tuple[int, str, Image | None, str]]:
    """(row, photo_id, image or None, why) of each (row, photo_id, url), fetched concurrently."""
    # Deferred: the download stage (requests, its session) loads only when an image is fetched.
    from ..download import DownloadOptions, download_photos

    options = DownloadOptions(
        workers=min(IMAGE_WORKERS, len(wanted)),
        retries=1,
        read_timeout_s=15.0,
        total_timeout_s=30.0,
        max_bytes=MAX_IMAGE_BYTES,
    )
    out: list[tuple[int, str, Image | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="clipsql-rerank-") as folder:
        # Keyed by row number: the temporary cache needs one file per candidate, whatever its id.
        results = download_photos([(str(i), url) for i, _, url in wanted], folder, options, progress=False)
        for (i, photo_id, _), result in zip(wanted, results):
            if not result.ok or result.path is None:
                out.append((i, photo_id, None, f"{result.reason}: {result.detail}"))
                continue
            try:
                out.append((i, photo_id, open_rgb(Path(result.path).read_bytes()), ""))
            except (OSError, InvalidImage) as exc:
                out.append((i, photo_id, None, str(exc)))
    return out


def rerank_candidates(
    candidates: pd.DataFrame, text: str, scorer: Scorer, image_dir: str | os.PathLike | None
) -> pd.DataFrame:
    """`candidates` (a photo result, nearest first) re-ordered by `scorer`'s match of each
    photo's image with `text`, with the score in :data:`RERANK_SCORE`.

    Args:
        candidates: photo columns (photo_id, distance, ..., photo_image_url), unique photo_ids.
        text: the query text.
        scorer: an :class:`ItmReranker` (or anything with its ``score``).
        image_dir: the store's image cache (:func:`candidate_images`).

    Returns:
        The same rows, a fresh index, ordered by :func:`rerank_order`; the photo columns then
        ``rerank_score`` (float64, 0..1; NaN for a photo without an image, placed last);
        ``attrs["rerank_unscored"]``: {photo_id: why} of those.

    Raises:
        RerankError: `scorer` gave not one finite score in 0..1 per image, or the order is not
            a permutation of the candidates (:func:`check_permutation`).
    """
    started = time.perf_counter()
    log.info("model re-ranking: %d candidates against %r", len(candidates), text[:200])
    images, unscored = candidate_images(candidates, image_dir)
    have = [i for i, image in enumerate(images) if image is not None]
    fetched = time.perf_counter()
    scores = np.full(len(candidates), np.nan)
    if have:
        got = np.asarray(scorer.score(text, [images[i] for i in have]), dtype=np.float64)
        if got.shape != (len(have),) or not np.all(np.isfinite(got)) or got.min() < 0 or got.max() > 1:
            raise RerankError(
                f"the re-ranker gave scores of shape {got.shape} for {len(have)} images "
                f"(wanted one finite score in 0..1 per image): an internal fault"
            )
        scores[have] = got
    order = rerank_order(scores)
    result = candidates.iloc[order].reset_index(drop=True)
    result = result.assign(**{RERANK_SCORE: scores[order]})
    check_permutation(candidates["photo_id"].tolist(), result["photo_id"].tolist())
    if unscored:
        log.warning(
            "%d of %d candidates have no image to re-rank (kept after the scored ones, %s NaN): %s",
            len(unscored),
            len(candidates),
            RERANK_SCORE,
            "; ".join(f"{p}: {why}" for p, why in list(unscored.items())[:5]),
        )
    log.info(
        "model re-ranking: %d candidates, images in %.2f s, scored %d in %.2f s (%.1f ms each)",
        len(candidates),
        fetched - started,
        len(have),
        time.perf_counter() - fetched,
        1000 * (time.perf_counter() - fetched) / max(len(have), 1),
    )
    result.attrs[UNSCORED_ATTR] = dict(unscored)
    return result


def model_reranked(
    db: Store,
    vector: list[float],
    model: str,
    options: SearchOptions,
    filters: Filters,
    *,
    text: str,
    reranker: Scorer,
) -> pd.DataFrame:
    """The page of `options` (whose rerank is "model:...") of the photos nearest to `vector`
    ((d,) floats) for `model` that pass `filters`, re-ranked by `reranker` against `text`.

    The candidates are the ``overfetch * (k + offset)`` nearest photos (exact search, filters
    and max_distance applied); the re-ranked order (:func:`rerank_candidates`) is cut to rows
    offset .. offset + k.

    Returns:
        DataFrame photo_id, distance, description, photo_url, photo_image_url, rerank_score;
        best match first; ``attrs["rerank_unscored"]`` as :func:`rerank_candidates`.

    Raises:
        RerankError: the re-ranking broke the permutation guarantee (an internal fault).
    """
    wanted = options.k + options.offset
    fetch = min(max(options.overfetch * wanted, wanted), MAX_K * MAX_OVERFETCH)
    candidates = photo_frame(
        search_photos(db, vector, model, filters, k=fetch, offset=0, max_distance=options.max_distance)
    )
    ranked = rerank_candidates(candidates, text, reranker, db.image_dir)
    page = ranked.iloc[options.offset : options.offset + options.k].reset_index(drop=True)
    page.attrs[UNSCORED_ATTR] = dict(ranked.attrs.get(UNSCORED_ATTR, {}))
    return page


def reranker_for(options: SearchOptions, device: str, *, has_text: bool, kind: str) -> ItmReranker | None:
    """The loaded re-ranker a search of `options` asks for (None when it asks for none),
    loaded once per process (:func:`cached_reranker`); called before the search runs, so a
    checkpoint that cannot serve is refused before any work.

    Args:
        options: the search's options; ``options.rerank_model`` is the checkpoint.
        device: where the model runs (auto, cpu, cuda[:N], mps).
        has_text: whether the search has a query text to score the photos against.
        kind: the search kind, named in the error ("image search", ...).

    Raises:
        BadArgument: a model re-ranking asked of a search without a query text, a bad device.
        ModelError: as :class:`ItmReranker`.
    """
    checkpoint = options.rerank_model
    if checkpoint is None:
        return None
    if not has_text:
        raise BadArgument(
            f"rerank={options.rerank!r}: a model re-ranking scores photos against the query text, and "
            f"{kind} has none; use it with a text or combined search (rerank='exact' or 'mmr' work here)"
        )
    check_device_name(device)
    return cached_reranker(checkpoint, device)
