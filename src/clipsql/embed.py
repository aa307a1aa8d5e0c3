"""Embed stage: CLIP image and text embeddings, batched, L2-normalized float32.

Public entry points: :class:`ClipEmbedder` (the model, for images and query texts) and
:func:`embed_photos` (the stage: cached image files -> vectors, with decoding and
preprocessing of the next batch running in a background thread while the model runs).

The model is any transformers CLIP checkpoint: a hub name (default
`openai/clip-vit-base-patch32`, 512-dim) or a local directory, which is loaded with
`local_files_only=True` so no network is touched.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .constants import DEFAULT_MODEL
from .errors import BadArgument, ModelError
from .images import InvalidImage, open_rgb

if TYPE_CHECKING:  # torch is imported when a model loads, not when clipsql.embed does
    import torch

log = logging.getLogger(__name__)

# DEFAULT_MODEL lives in clipsql.constants; `from clipsql.embed import DEFAULT_MODEL` works as before.
DEFAULT_BATCH_SIZE = 32
#: Batches decoded ahead of the model; 2 keeps the model fed without holding many images.
PREFETCH_BATCHES = 2
#: Failure reason of a photo whose image decodes but that preprocessing or the model
#: cannot take (permanent: retrying the same image gives the same error).
EMBED_FAILED = "embed_failed"
#: Longest side / shortest side kept before a resize-shortest-edge-then-center-crop
#: processor runs (CLIP's): the crop only ever keeps the central square, so cutting the
#: long side to 4x the short one first changes nothing the model sees, and a 1 x 5000 px
#: strip no longer becomes a 224 x 1,120,000 px intermediate (3 GB as float32).
MAX_ASPECT_BEFORE_CROP = 4


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """`device` if it names a device clipsql knows (auto, cpu, cuda[:N], mps), without
    importing torch (so a bad argument stops before any work).

    Raises:
        BadArgument: any other name.
    """
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise BadArgument(f"device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    return device


def check_model_source(model: str | os.PathLike, why: str = "") -> None:
    """Refuse, before anything loads, a model given as a path (starting with '.', '/' or '~')
    that is not a directory; a hub name can only fail when it is loaded. `why` is appended to
    the message.

    Raises:
        ModelError: naming the missing directory.
    """
    text = os.fspath(model)
    if text.startswith((".", "/", "~")) and not Path(text).expanduser().is_dir():
        raise ModelError(f"model directory {text!r} does not exist{why}")


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' if available, else 'mps' if available, else 'cpu'; others as given.

    Raises:
        BadArgument: an unknown device name, or one this machine lacks.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    check_device_name(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadArgument(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def model_label(model: str) -> str:
    """The name a model's vectors are stored under: a hub name as given, a directory's base name."""
    path = Path(model)
    return path.resolve().name if path.is_dir() else model


class ClipEmbedder:
    """A CLIP model with its processor, producing L2-normalized float32 embeddings.

    Args:
        model: hub name (e.g. 'openai/clip-vit-base-patch32') or a local checkpoint directory.
        device: 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda[:N]' or 'mps'.
        name: the label stored with the vectors; defaults to :func:`model_label`.
        progress: show transformers' weight-loading bar.

    Attributes:
        dim: embedding dimension (the checkpoint's projection_dim, 512 for ViT-B/32).
        name: the label stored with each vector.
        source: what was loaded (hub name or directory path).

    Raises:
        ModelError: the checkpoint cannot be loaded or is not a CLIP model.
        BadArgument: bad device.
    """

    def __init__(
        self, model: str = DEFAULT_MODEL, *, device: str = "auto", name: str | None = None, progress: bool = True
    ):
        import torch
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as hf_logging

        if not progress:
            hf_logging.disable_progress_bar()

        self.device = resolve_device(device)
        self.source = str(model)
        self.name = name or model_label(self.source)
        check_model_source(self.source)
        local = Path(self.source).expanduser().is_dir()
        try:
            self.model = CLIPModel.from_pretrained(self.source, local_files_only=local)
            self.processor = CLIPProcessor.from_pretrained(self.source, local_files_only=local)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load CLIP model {self.source!r}: {exc}") from exc
        # fp16 halves memory and doubles throughput on CUDA; CPU and MPS stay in fp32.
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        # transformers types `to` through a decorator as if it took the model: called as documented.
        self.model = self.model.to(self.device, dtype=self.dtype).eval()  # type: ignore[arg-type]
        dim = self.model.config.projection_dim
        if not isinstance(dim, int) or dim < 1:
            raise ModelError(f"CLIP model {self.source!r} has no projection_dim in its config (got {dim!r})")
        self.dim = dim

    # --- preprocessing (CPU, thread-safe) ---
    def preprocess(self, images: Sequence) -> torch.Tensor:
        """PIL RGB images -> pixel_values (n, 3, H, W) float32, the checkpoint's own processing.

        Images longer than :data:`MAX_ASPECT_BEFORE_CROP` times their width (or wider than
        that times their height) are first cut to that ratio around their centre when the
        processor resizes the shortest edge and then centre-crops (what the model sees is
        the same; memory stays bounded)."""
        image_processor = getattr(self.processor, "image_processor", None)
        size = getattr(image_processor, "size", None) or {}
        if getattr(image_processor, "do_center_crop", False) and "shortest_edge" in size:
            images = [_cut_to_aspect(im, MAX_ASPECT_BEFORE_CROP) for im in images]
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    # --- inference ---
    def embed_pixels(self, pixel_values) -> np.ndarray:
        """pixel_values (n, 3, H, W) -> (n, dim) float32, L2-normalized."""
        import torch

        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixel_values.to(self.device, dtype=self.dtype))
            return _normalized(_features(out))

    def embed_images(self, images: Sequence) -> np.ndarray:
        """PIL images (any mode) -> (n, dim) float32, L2-normalized."""
        return self.embed_pixels(self.preprocess([im.convert("RGB") for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim) float32, L2-normalized; truncated to the model's 77 tokens.

        Raises:
            BadArgument: a text is not a str.
        """
        import torch

        for text in texts:
            if not isinstance(text, str):
                raise BadArgument(f"a query text must be a string, got {type(text).__name__}")
        # The text tower's position table bounds the length (77 for CLIP); a tokenizer saved
        # without model_max_length would otherwise let long texts overflow it.
        text_config: Any = self.model.config.text_config
        max_length = int(text_config.max_position_embeddings)
        tokens = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
            return _normalized(_features(out))


@functools.lru_cache(maxsize=4)
def cached_embedder(source: str, name: str, device: str) -> ClipEmbedder:
    """The :class:`ClipEmbedder` of checkpoint `source` (labelled `name`) on `device`, loaded
    once per process and kept (the 4 used last): loading a model costs seconds, and a notebook's
    searches, the DuckDB SQL function and the UDF script ask for it on every query. No
    progress bars."""
    return ClipEmbedder(source, device=device, name=name, progress=False)


def _cut_to_aspect(image, max_ratio: float):
    """The central part of a PIL image whose long side is at most `max_ratio` times its short side."""
    width, height = image.size
    short = max(min(width, height), 1)
    if max(width, height) <= max_ratio * short:
        return image
    if width > height:
        keep = int(max_ratio * short)
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    keep = int(max_ratio * short)
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


def _preprocess_each(embedder: ClipEmbedder, ids: list[str], images: list):
    """(ids, pixel_values or None, failures): the batch preprocessed at once, or, when that
    fails, image by image so that one bad image fails alone (reason EMBED_FAILED)."""
    import torch

    if not images:
        return ids, None, []
    try:
        return ids, embedder.preprocess(images), []
    except Exception:  # noqa: BLE001 - any error of one image must not end the run
        kept_ids, tensors, failures = [], [], []
        for photo_id, image in zip(ids, images):
            try:
                tensors.append(embedder.preprocess([image]))
                kept_ids.append(photo_id)
            except Exception as exc:  # noqa: BLE001
                log.debug("photo %s: preprocessing failed", photo_id, exc_info=True)
                failures.append((photo_id, EMBED_FAILED, f"preprocessing: {_describe(exc)}"))
        return kept_ids, (torch.cat(tensors) if tensors else None), failures


def _embed_each(embedder: ClipEmbedder, ids: list[str], pixels):
    """(ids, vectors, failures): the batch through the model at once, or, when that fails,
    photo by photo. If no photo of the batch goes through alone either, the fault is not a
    photo's (out of memory, a broken model): the first error is raised."""
    try:
        return ids, embedder.embed_pixels(pixels), []
    except Exception as batch_error:  # noqa: BLE001
        kept_ids, vectors, failures = [], [], []
        for i, photo_id in enumerate(ids):
            try:
                vectors.append(embedder.embed_pixels(pixels[i : i + 1]))
                kept_ids.append(photo_id)
            except Exception as exc:  # noqa: BLE001
                failures.append((photo_id, EMBED_FAILED, f"model: {_describe(exc)}"))
        if not kept_ids:
            raise batch_error
        return kept_ids, np.concatenate(vectors), failures


def _features(out):
    # transformers 5 returns an output object whose pooler_output is the projected
    # embedding; 4.x returns the tensor itself.
    return out if hasattr(out, "float") else out.pooler_output


def _normalized(features) -> np.ndarray:
    import torch

    features = features.float()
    features = features / torch.linalg.vector_norm(features, dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32, copy=False)


@dataclasses.dataclass
class EmbeddedBatch:
    """One batch out of :func:`embed_photos`: photo_ids, (n, dim) float32 L2-normalized
    embeddings, and the photos whose image could not be decoded (photo_id, reason, detail)."""

    photo_ids: list[str]
    embeddings: np.ndarray
    failures: list[tuple[str, str, str]]
    preprocess_s: float
    infer_s: float


def embed_photos(
    items: Sequence[tuple[str, str | os.PathLike]],
    embedder: ClipEmbedder,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> Iterator[EmbeddedBatch]:
    """Embed cached images, yielding one :class:`EmbeddedBatch` per model batch.

    A background thread decodes and preprocesses batch i+1 while the model runs batch i,
    so decoding does not stall the model. Images that fail to decode, to preprocess or to go
    through the model are reported in the batch's `failures` (photo_id, reason, detail),
    never raised; only a fault of the whole batch (no photo of it goes through alone) is.

    Args:
        items: (photo_id, image path) pairs.
        embedder: the model.
        batch_size: images per forward pass.
        progress: show a progress bar.

    Raises:
        BadArgument: batch_size < 1.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise BadArgument(f"batch_size must be >= 1, got {batch_size}")
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for start in range(0, len(items), batch_size):
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                ids, images, failures = [], [], []
                for photo_id, path in items[start : start + batch_size]:
                    try:
                        images.append(open_rgb(Path(path).read_bytes()))
                        ids.append(photo_id)
                    except InvalidImage as exc:
                        failures.append((photo_id, exc.reason, exc.detail))
                    except OSError as exc:
                        failures.append((photo_id, "no_file", f"{path}: {exc.strerror or exc}"))
                    except Exception as exc:  # noqa: BLE001 - one photo's fault ends only that photo
                        failures.append((photo_id, "undecodable", _describe(exc)))
                ids, pixels, bad = _preprocess_each(embedder, ids, images)
                ready.put(
                    (ids, pixels, failures + bad, time.perf_counter() - t0, len(items[start : start + batch_size]))
                )
            ready.put(None)
        except BaseException as exc:  # surfaced in the consumer, not lost in the thread
            ready.put(exc)

    worker = threading.Thread(target=produce, name="embed-preprocess", daemon=True)
    worker.start()
    try:
        with tqdm(total=len(items), desc="embed", unit="photo", disable=not progress) as bar:
            while (batch := ready.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                ids, pixels, failures, preprocess_s, count = batch
                t0 = time.perf_counter()
                if pixels is None:
                    vectors = np.zeros((0, embedder.dim), np.float32)
                else:
                    ids, vectors, bad = _embed_each(embedder, ids, pixels)
                    failures = failures + bad
                bar.update(count)
                yield EmbeddedBatch(ids, vectors, failures, preprocess_s, time.perf_counter() - t0)
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                worker.join(0.05)
