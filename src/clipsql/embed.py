"""Embed stage: image and text embeddings of a dual encoder, batched, L2-normalized float32.

Public entry points: :class:`Embedder` (the model, for images and query texts;
`ClipEmbedder` is its former name) and :func:`embed_photos` (the stage: cached image files
-> vectors, with decoding and preprocessing of the next batch running in a background
thread while the model runs).

The model is any transformers checkpoint of a family in :mod:`clipsql.families` (CLIP,
SigLIP, SigLIP 2, MetaCLIP 2, AltCLIP, Chinese-CLIP, ALIGN, AIMv2): a hub name (default
`openai/clip-vit-base-patch32`, 512-dim) or a local directory, which is loaded with
`local_files_only=True` so no network is touched.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import queue
import re
import threading
import time
from typing import Any
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .constants import DEFAULT_MODEL
from .errors import BadArgument, ModelError
from .families import TOWER_PARTS, TOWERS, embedding_width, family_of, family_of_config_file, text_length_limit
from .onnx_towers import (
    TEXT_META,
    OnnxTextEncoder,
    OnnxTower,
    cache_root,
    export_folder,
    export_onnx,
    quantize_int8,
    write_atomically,
)
from .precision import (
    COSINE_FLOOR,
    auto_candidates,
    check_precision,
    check_supported,
    native_bf16,
    onnxruntime_available,
)
from .images import InvalidImage, open_rgb

log = logging.getLogger(__name__)

# DEFAULT_MODEL lives in clipsql.constants; `from clipsql.embed import DEFAULT_MODEL` works as before.
DEFAULT_BATCH_SIZE = 32
#: Batches decoded ahead of the model; 2 keeps the model fed without holding many images.
PREFETCH_BATCHES = 2
#: Most photos in one decode worker's job: a GPU's model batch (256) is split into jobs of
#: this size, so that every worker has work even when a chunk holds only a few batches
#: (1,024 photos: 4 batches for 15 workers) and the first batch is ready sooner.
DECODE_JOB_PHOTOS = 32
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


def check_dual_encoder(model: str | os.PathLike, why: str = "") -> None:
    """:func:`check_model_source`, and for a local directory, that its config.json names a
    dual-encoder family clipsql loads (read without loading weights or importing torch), so
    a checkpoint of another kind stops before any work.

    Raises:
        ModelError: a missing directory, no readable config.json, or another kind of model
            (the message names the families accepted).
    """
    check_model_source(model, why)
    if Path(os.fspath(model)).expanduser().is_dir():
        family_of_config_file(model)


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


class ImagePreprocessor:
    """A checkpoint's image processing without its model: PIL images -> the image tower's
    inputs. Picklable (the processor alone), so decode worker processes run it
    (:func:`embed_photos`).

    Args:
        processor: the checkpoint's transformers processor (AutoProcessor).
    """

    def __init__(self, processor):
        self.processor = processor

    @property
    def modules(self) -> list[str]:
        """The modules that unpickling this preprocessor imports (the processor's class, its
        image processor's and tokenizer's): what decode workers' server imports once, so that
        each chunk's workers do not import them again (2.9 s for CLIP's, measured)."""
        parts = [self.processor] + [getattr(self.processor, a, None) for a in ("image_processor", "tokenizer")]
        return sorted({type(part).__module__ for part in parts if part is not None})

    @property
    def decode_side(self) -> int | None:
        """Least side (pixels) a photo must keep when decoded at reduced size for this model:
        the processor's shortest edge, or its larger fixed side; None (decode fully) where the
        processor has no fixed size (SigLIP 2 NaFlex)."""
        size = getattr(getattr(self.processor, "image_processor", None), "size", None) or {}
        if isinstance(size, dict) and size.get("shortest_edge"):
            return int(size["shortest_edge"])
        if isinstance(size, dict) and size.get("height") and size.get("width"):
            return int(max(size["height"], size["width"]))
        return None

    @property
    def runs_on_cuda(self) -> bool:
        """True where the checkpoint's image processor is transformers' torchvision backend
        (installed with torchvision), which resizes, crops and normalizes on a CUDA device."""
        image_processor = getattr(self.processor, "image_processor", None)
        # transformers 5 names the backend; earlier releases named such classes "...Fast".
        return getattr(image_processor, "backend", None) == "torchvision" or type(image_processor).__name__.endswith(
            "Fast"
        )

    def _cut(self, images: Sequence) -> list:
        # Images longer than MAX_ASPECT_BEFORE_CROP times their width (or wider than that
        # times their height) are cut to that ratio around their centre where the processor
        # resizes the shortest edge and then centre-crops: what the model sees is the same,
        # and memory stays bounded.
        image_processor = getattr(self.processor, "image_processor", None)
        size = getattr(image_processor, "size", None) or {}
        if getattr(image_processor, "do_center_crop", False) and "shortest_edge" in size:
            return [_cut_to_aspect(im, MAX_ASPECT_BEFORE_CROP) for im in images]
        return list(images)

    def packed_images(self, images: Sequence) -> tuple:
        """PIL RGB images, cut as :meth:`preprocess` cuts them, packed for the trip to the GPU
        (what a decode worker sends): (flat uint8 tensor of all their pixels, [(H, W, 3)
        each]). One tensor per job, because the loader moves each tensor through its own
        shared-memory file and the main process pins and copies each: per image, that
        capped the stage at 1,076 photos/s on an H200 with 15 workers."""
        import torch

        arrays = [np.asarray(im, dtype=np.uint8) for im in self._cut(images)]
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.uint8)
        return torch.from_numpy(flat), [a.shape for a in arrays]

    def preprocess(self, images: Sequence, device: str | None = None) -> dict:
        """PIL RGB images -> the image tower's inputs, the checkpoint's own processing: a dict
        of tensors with n rows each (pixel_values (n, 3, H, W) float32; SigLIP 2 NaFlex also
        pixel_attention_mask and spatial_shapes).

        With `device` (a CUDA device, where :attr:`runs_on_cuda`), `images` are (3, H, W)
        uint8 tensors (:func:`unpacked_images`) and the processing runs on that device; the
        inputs are there.
        """
        if device is None:
            inputs = self.processor(images=self._cut(images), return_tensors="pt")
        else:
            inputs = self.processor(
                images=list(images), return_tensors="pt", device=device, input_data_format="channels_first"
            )
        return {key: inputs[key] for key in _IMAGE_INPUTS if key in inputs}


class Embedder:
    """An image-text dual encoder (any family of :data:`clipsql.families.FAMILIES`: CLIP,
    SigLIP, SigLIP 2, MetaCLIP 2, AltCLIP, Chinese-CLIP, ALIGN, AIMv2) with its processor,
    producing L2-normalized float32 embeddings.

    The family is read from the checkpoint's config (``model_type``); a checkpoint of any
    other kind is refused before its weights load. `towers` picks what is loaded: "text"
    (queries and the SQL function: about half the weights), "image" (the refresh) or "both".
    Where transformers has a class for one tower alone (CLIP, SigLIP, SigLIP 2, MetaCLIP 2) only
    that tower's weights are read; the other families load whole and let go of the other tower.

    Args:
        model: hub name (e.g. 'openai/clip-vit-base-patch32') or a local checkpoint directory.
        device: 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda[:N]' or 'mps'.
        name: the label stored with the vectors; defaults to :func:`model_label`.
        progress: show transformers' weight-loading bar.
        towers: "both", "text" or "image".

    Attributes:
        dim: embedding width d (512 for ViT-B/32 CLIP), the same for both towers.
        family: the checkpoint's :class:`clipsql.families.Family`.
        name: the label stored with each vector.
        source: what was loaded (hub name or directory path).

    Raises:
        ModelError: the checkpoint cannot be loaded, is no dual encoder of a known family,
            lacks a tower's weights, or its towers' widths differ.
        BadArgument: bad device or towers.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        name: str | None = None,
        progress: bool = True,
        towers: str = "both",
        precision: str = "fp32",
    ):
        import torch
        import transformers
        from transformers.utils import logging as hf_logging

        if towers not in TOWERS:
            raise BadArgument(f"towers must be one of {', '.join(TOWERS)}, got {towers!r}")
        check_precision(precision)
        if not progress:
            hf_logging.disable_progress_bar()

        self.device = resolve_device(device)
        if precision != "auto":
            check_supported(precision, self.device)
        self.source = str(model)
        self.name = name or model_label(self.source)
        self.towers = towers
        check_dual_encoder(self.source)
        local = Path(self.source).expanduser().is_dir()
        try:
            config = transformers.AutoConfig.from_pretrained(self.source, local_files_only=local)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load model {self.source!r}: {exc}") from exc
        self.family = family_of(getattr(config, "model_type", None), self.source)
        self.config = config
        self.dim = embedding_width(config, self.source)
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(self.source, local_files_only=local)
            self.text_model = self.image_model = None
            if towers == "both":
                self.text_model = self.image_model = self._load_whole(local)
            elif towers == "text":
                self.text_model = self._load_tower("text", local)
            else:
                self.image_model = self._load_tower("image", local)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise ModelError(f"cannot load {self.family.title} model {self.source!r}: {exc}") from exc
        self.dtype = torch.float32
        self._lowered: dict[str, Any] = {}
        for tower in self._torch_towers():
            # transformers types `to` through a decorator as if it took the model: called as documented.
            tower.to(self.device, dtype=self.dtype).eval()  # type: ignore[arg-type]
        tokenizer = getattr(self.processor, "tokenizer", None)
        self.max_text_tokens = text_length_limit(config, tokenizer, self.family)
        #: The precision asked for and the one in use ("auto" resolves on the first batch).
        self.requested_precision = precision
        self._candidates = auto_candidates(self.device) if precision == "auto" else [precision]
        self._onnx: dict[str, OnnxTower] = {}
        self._checked: set[str] = set()
        self.precision = "fp32"
        self._use(self._candidates[0])

    def _torch_towers(self) -> list:
        return list({id(m): m for m in (self.text_model, self.image_model) if m is not None}.values())

    def _use(self, precision: str) -> None:
        """Run the towers at `precision` from now on. The fp32 towers stay loaded (their
        weights are the mapped checkpoint file) as the reference of the cosine check; bf16 and
        fp16 run converted copies, made on first use; int8 runs ONNX Runtime sessions."""
        import torch

        self._onnx.clear()
        self._lowered = {}
        if precision == "int8":
            try:
                for tower in [t for t in ("image", "text") if self._tower_model(t) is not None]:
                    self._onnx[tower] = self._int8_tower(tower)
            except ModelError as exc:
                if self.requested_precision != "auto":
                    raise
                log.warning("model %s: int8 unavailable (%s); trying the next precision", self.name, exc)
                self._onnx.clear()
                self._candidates.remove("int8")
                self._use(self._candidates[0])
                return
        elif precision == "bf16" and not native_bf16(self.device):
            log.warning("model %s: %s has no native bf16: it is emulated, far slower than fp32", self.name, self.device)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        self.precision = precision

    def _tower_model(self, tower: str):
        return self.text_model if tower == "text" else self.image_model

    def _int8_tower(self, tower: str) -> OnnxTower:
        """The int8 ONNX copy of `tower` ("image" or "text"), exported and quantized once per
        checkpoint (cached, :mod:`clipsql.onnx_towers`)."""
        folder = export_folder(self.source)
        if folder is None:
            raise ModelError(f"{self.source!r} is not on disk: nothing to export")
        fp32_path, int8_path = folder / f"{tower}-fp32.onnx", folder / f"{tower}-int8.onnx"
        if not int8_path.is_file():
            if not fp32_path.is_file():
                log.info("model %s: exporting its %s tower to ONNX (once per checkpoint)", self.name, tower)
                self._export(tower, fp32_path)
            quantize_int8(fp32_path, int8_path, per_channel=tower == "text")
        return OnnxTower(int8_path, query=tower == "text", quantized=True)

    def _export(self, tower: str, path: Path) -> None:
        """Export the fp32 `tower` to ONNX at `path`."""
        if tower == "text":
            tokens = self._tokens(["a photo of a dog", "ein Hund am Strand 🐶"])
            dynamic = {name: {0: "n", 1: "length"} for name in tokens}
            export_onnx(_FeaturesOf(self._text_features, self.text_model), tokens, path, dynamic)
        else:
            from PIL import Image

            inputs = self.preprocess([Image.new("RGB", (64, 48)), Image.new("RGB", (48, 64))])
            dynamic = {name: {0: "n"} for name in inputs}
            export_onnx(_FeaturesOf(self._image_features, self.image_model), inputs, path, dynamic)

    def _check_against_fp32(self, tower: str, inputs, vectors: np.ndarray) -> np.ndarray:
        """On the first batch at a precision other than fp32, the cosine of each vector to its
        fp32 vector must be >= COSINE_FLOOR: else an explicit precision raises and auto falls
        back to the next candidate. Returns the vectors to use for this batch."""
        if self.precision == "fp32" or tower in self._checked:
            return vectors
        reference = self._embed_fp32(tower, inputs)
        cosine = float(np.min(np.sum(reference * vectors, axis=1))) if len(vectors) else 1.0
        if cosine >= COSINE_FLOOR:
            self._checked.add(tower)
            log.info("model %s: %s %s tower within cosine %.5f of fp32", self.name, self.precision, tower, cosine)
            return vectors
        message = (
            f"model {self.name!r}: its {tower} tower at {self.precision} gives vectors whose cosine to fp32 "
            f"is {cosine:.5f}, below the floor {COSINE_FLOOR}"
        )
        if self.requested_precision != "auto":
            raise ModelError(message + ": use --precision fp32 (or auto)")
        log.warning("%s; trying the next precision", message)
        self._candidates.remove(self.precision)
        self._checked.clear()
        self._use(self._candidates[0])
        return self._embed_checked(tower, inputs)

    def _load_whole(self, local: bool):
        import transformers

        extra = {"attn_implementation": self.family.attention} if self.family.attention else {}
        return transformers.AutoModel.from_pretrained(self.source, local_files_only=local, **extra)

    def _load_tower(self, tower: str, local: bool):
        """One tower: its own class where transformers has one (only its weights are read),
        else the whole model with the other tower let go (its memory returns when collected)."""
        import copy

        import transformers

        class_name = self.family.text_class if tower == "text" else self.family.image_class
        if class_name is None:
            model = self._load_whole(local)
            for part in TOWER_PARTS["image" if tower == "text" else "text"]:
                if getattr(model, part, None) is not None:
                    setattr(model, part, None)
            return model
        tower_config = copy.deepcopy(self.config.text_config if tower == "text" else self.config.vision_config)
        projection_dim = getattr(self.config, "projection_dim", None)
        if projection_dim is not None and hasattr(tower_config, "projection_dim"):
            # The whole config holds the projection width; the tower's own default (512) may differ.
            tower_config.projection_dim = projection_dim
        with _quiet_transformers():
            model, info = getattr(transformers, class_name).from_pretrained(
                self.source, config=tower_config, local_files_only=local, output_loading_info=True
            )
        missing = [key for key in info.get("missing_keys", ()) if not key.endswith("position_ids")]
        if missing:
            raise ModelError(
                f"{self.family.title} model {self.source!r}: its {tower} tower lacks weights "
                f"({', '.join(sorted(missing)[:5])}{', ...' if len(missing) > 5 else ''})"
            )
        return model

    # --- preprocessing (CPU, thread-safe) ---
    @property
    def image_preprocessor(self) -> ImagePreprocessor:
        """This checkpoint's image processing alone (picklable: what decode workers run)."""
        return ImagePreprocessor(self.processor)

    @property
    def decode_side(self) -> int | None:
        """As :attr:`ImagePreprocessor.decode_side`."""
        return self.image_preprocessor.decode_side

    def preprocess(self, images: Sequence) -> dict:
        """As :meth:`ImagePreprocessor.preprocess`."""
        return self.image_preprocessor.preprocess(images)

    # --- inference ---
    def _image_features(self, model, **inputs):
        """`model`'s (the image tower's, or a converted copy's) raw (n, d) features (torch)."""
        if model is self.text_model or self.family.image_class is None or self.towers != "image":
            return _features(model.get_image_features(**inputs))
        return getattr(model(**inputs), self.family.image_output)

    def _text_features(self, model, **tokens):
        """`model`'s (the text tower's, or a converted copy's) raw (n, d) features (torch)."""
        if model is self.image_model or self.family.text_class is None or self.towers != "text":
            return _features(model.get_text_features(**tokens))
        return getattr(model(**tokens), self.family.text_output)

    def _run_torch(self, tower: str, model, dtype, inputs: dict) -> np.ndarray:
        import torch

        # Batches from pinned memory (decode workers on CUDA) are copied asynchronously; the
        # vectors' copy back to the host waits for the model, so nothing is read early.
        moved = {
            key: value.to(self.device, dtype=dtype if key == "pixel_values" else value.dtype, non_blocking=True)
            for key, value in inputs.items()
        }
        with torch.inference_mode():
            if tower == "image":
                return _normalized(self._image_features(model, **moved))
            return _normalized(self._text_features(model, **moved))

    def _embed_fp32(self, tower: str, inputs: dict) -> np.ndarray:
        import torch

        return self._run_torch(tower, self._tower_model(tower), torch.float32, inputs)

    def _embed(self, tower: str, inputs: dict) -> np.ndarray:
        """(n, dim) float32 L2-normalized vectors of `tower` at the current precision."""
        import copy

        import torch

        if tower in self._onnx:
            arrays = {key: value.numpy() for key, value in inputs.items()}
            return _normalized(torch.from_numpy(self._onnx[tower].features(arrays)))
        if self.precision == "fp32":
            return self._embed_fp32(tower, inputs)
        if tower not in self._lowered:
            model = self._tower_model(tower)
            shared = [m for t, m in self._lowered.items() if self._tower_model(t) is model]
            self._lowered[tower] = shared[0] if shared else copy.deepcopy(model).to(dtype=self.dtype)
        return self._run_torch(tower, self._lowered[tower], self.dtype, inputs)

    def _embed_checked(self, tower: str, inputs: dict) -> np.ndarray:
        return self._check_against_fp32(tower, inputs, self._embed(tower, inputs))

    def embed_pixels(self, inputs) -> np.ndarray:
        """The image tower's inputs (:meth:`preprocess`'s dict, or a pixel_values tensor
        (n, 3, H, W)) -> (n, dim) float32, L2-normalized, at :attr:`precision`.

        Raises:
            BadArgument: the image tower was not loaded (towers="text").
            ModelError: an explicit precision below the cosine floor on this first batch.
        """
        if self.image_model is None:
            raise BadArgument(f"model {self.name!r} was loaded with its text tower only: it cannot embed images")
        if not isinstance(inputs, dict):
            inputs = {"pixel_values": inputs}
        return self._embed_checked("image", inputs)

    def embed_images(self, images: Sequence) -> np.ndarray:
        """PIL images (any mode) -> (n, dim) float32, L2-normalized."""
        return self.embed_pixels(self.preprocess([im.convert("RGB") for im in images]))

    def _tokens(self, texts: Sequence[str]) -> dict:
        if self.family.lowercase_text:
            texts = [text.lower() for text in texts]
        tokens = self.processor.tokenizer(
            list(texts),
            padding="max_length" if self.family.pad_to_max_length else True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        # The tokenizer returns what its tower was trained with (SigLIP: input_ids alone, no mask).
        return dict(tokens.items())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts in any language and script -> (n, dim) float32, L2-normalized; truncated to
        the text tower's length (77 tokens for CLIP, 64 for SigLIP) and padded as the family
        was trained (SigLIP: to that length).

        Raises:
            BadArgument: a text is not a str, or the text tower was not loaded (towers="image").
        """
        if self.text_model is None:
            raise BadArgument(f"model {self.name!r} was loaded with its image tower only: it cannot embed texts")
        for text in texts:
            if not isinstance(text, str):
                raise BadArgument(f"a query text must be a string, got {type(text).__name__}")
        return self._embed_checked("text", self._tokens(texts))

    def export_text_tower(self, int8: bool = False) -> Path | None:
        """Write the cold query's fast path for this checkpoint (:class:`OnnxTextEncoder`):
        its tokenizer.json, the text tower in ONNX at fp32 and, with `int8`, at int8 (weights
        quantized per channel: seconds more for ViT-B/32, so only when a query asks for it),
        and text.json, which marks each usable only when it gives this model's vectors over
        :data:`PROBE_TEXTS`: fp32 within max abs difference 1e-4, int8 within cosine
        COSINE_FLOOR (so a query at `auto` runs at int8 only where the checkpoint keeps its
        rankings within the floor). Returns the folder, or None when the checkpoint is not on
        disk, its tokenizer has no tokenizers-library form, or ONNX Runtime is missing.
        """
        if self.text_model is None or not onnxruntime_available():
            return None
        folder = export_folder(self.source)
        backend = getattr(self.processor.tokenizer, "backend_tokenizer", None)
        if folder is None:
            return None
        files = {"fp32": "text-fp32.onnx", "int8": "text-int8.onnx"}
        meta: dict = {"usable": {}, "files": files, "dim": self.dim, "family": self.family.model_type}
        try:
            if backend is None:
                raise ModelError(
                    f"its tokenizer ({type(self.processor.tokenizer).__name__}) has no tokenizer.json form"
                )
            write_atomically(folder / "tokenizer.json", lambda t: backend.save(str(t)))
            fp32_path, int8_path = folder / files["fp32"], folder / files["int8"]
            if not fp32_path.is_file():
                self._export("text", fp32_path)
            tokenizer = self.processor.tokenizer
            meta.update(
                max_length=self.max_text_tokens,
                pad_to_max_length=self.family.pad_to_max_length,
                lowercase=self.family.lowercase_text,
                pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
                padding_side=getattr(tokenizer, "padding_side", "right"),
            )
            reference = self._reference_texts(PROBE_TEXTS)
            encoder = OnnxTextEncoder(folder, meta, self.name, precision="fp32")
            difference = float(np.abs(encoder.embed_texts(PROBE_TEXTS) - reference).max())
            if difference > 1e-4:
                raise ModelError(f"the ONNX text tower differs from the model by {difference:.2e}")
            meta["usable"]["fp32"] = True
            meta["fp32_difference"] = difference
            if int8:
                if not int8_path.is_file():
                    quantize_int8(fp32_path, int8_path, per_channel=True)
                quantized = OnnxTextEncoder(folder, meta, self.name, precision="int8").embed_texts(PROBE_TEXTS)
                cosine = float(np.min(np.sum(quantized * reference, axis=1)))
                meta["int8_min_cosine"] = cosine
                meta["usable"]["int8"] = cosine >= COSINE_FLOOR
                if cosine < COSINE_FLOOR:
                    log.info("model %s: int8 text tower below the cosine floor (%.5f): fp32 queries", self.name, cosine)
        except ModelError as exc:
            meta["reason"] = str(exc)
            log.info("model %s: no fast text path: %s", self.name, exc)
        write_atomically(folder / TEXT_META, lambda t: t.write_text(json.dumps(meta, indent=1), encoding="utf-8"))
        return folder if meta["usable"].get("fp32") else None

    def _reference_texts(self, texts: Sequence[str]) -> np.ndarray:
        """`texts` through the torch text tower at fp32 (the reference of every other path)."""
        return self._embed_fp32("text", self._tokens(texts))


class _FeaturesOf:
    """A torch module holding a tower and calling ``method(tower, **inputs)``: what the ONNX
    exporter traces (the tower's weights are its parameters, not constants)."""

    def __new__(cls, method, tower):
        import torch

        class _Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.tower = tower

            def forward(self, **inputs):
                return method(self.tower, **inputs)

        return _Module()


#: Texts the fast text path is checked on: scripts, emoji, a long text cut at the tower's length.
PROBE_TEXTS = [
    "a dog on a beach",
    "ein Hund am Strand",
    "一只狗在海滩上",
    "كلب على الشاطئ",
    "🐶🌊 sunset",
    "mountain " * 100,
]


#: The name clipsql used when it loaded CLIP only; kept for callers that import it.
ClipEmbedder = Embedder

#: The image tower inputs a processor may return (SigLIP 2 NaFlex: all three).
_IMAGE_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


class _quiet_transformers:
    """Silences transformers' load report while one tower loads from a whole checkpoint (the
    other tower's weights are expected to be left unread) and restores the verbosity after."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)


@functools.lru_cache(maxsize=4)
def cached_embedder(source: str, name: str, device: str, towers: str = "both", precision: str = "fp32") -> Embedder:
    """The :class:`Embedder` of checkpoint `source` (labelled `name`) on `device` with
    `towers` ("text" for queries: about half the weights) at `precision`, loaded once per
    process and kept (the 4 used last): loading a model costs seconds, and a notebook's
    searches, the DuckDB SQL function and the UDF script ask for it on every query. No
    progress bars."""
    return Embedder(source, device=device, name=name, progress=False, towers=towers, precision=precision)


#: Environment variable choosing how query texts are embedded: "auto" (the cached ONNX text
#: tower where there is one, made on first use), "onnx" (the same), "torch" (the model itself).
TEXT_RUNTIME_ENV = "CLIPSQL_TEXT_RUNTIME"


def query_text_encoder(source: str, name: str, device: str = "auto", precision: str = "fp32"):
    """What embeds query texts for model `source` (labelled `name`) at `precision`: see
    :func:`_query_text_encoder`; waits first for a :func:`prefetch_query_text_encoder` of the
    same arguments, whose result it then returns."""
    key = (source, name, device, precision)
    with _PREFETCH_LOCK:
        started = _PREFETCHES.pop(key, None)
    if started is not None:
        started.join()
    return _query_text_encoder(source, name, device, precision)


#: Prefetches started and not yet waited for, by query_text_encoder's arguments.
_PREFETCHES: dict[tuple, threading.Thread] = {}
_PREFETCH_LOCK = threading.Lock()


def prefetch_query_text_encoder(source: str, name: str, device: str = "auto", precision: str = "fp32") -> None:
    """Start loading the cached text tower of `source` in a background thread, so that a
    cold search overlaps it with opening the store (:func:`clipsql.search.text` does, with the
    model its last search of the same store used). Only an export already on disk is loaded
    (no model load or export runs in the background); any failure is left for
    :func:`query_text_encoder` to meet again and report. Non-CPU devices: nothing."""
    if device not in ("auto", "cpu") or os.environ.get(TEXT_RUNTIME_ENV) == "torch":
        return
    key = (source, name, device, precision)

    def load() -> None:
        try:
            folder = export_folder(source)
            if folder is not None and (folder / TEXT_META).is_file():
                _query_text_encoder(*key)
        except Exception:  # noqa: BLE001 - reported when query_text_encoder runs it again
            log.debug("prefetching the text tower of %s failed", source, exc_info=True)

    with _PREFETCH_LOCK:
        if key in _PREFETCHES:
            return
        thread = threading.Thread(target=load, name="clipsql-text-prefetch", daemon=True)
        _PREFETCHES[key] = thread
    thread.start()


#: File (in the cache root's parent) remembering, per store, the model its last text search used.
QUERY_MODELS_FILE = "query-models.json"


def _query_models_path() -> Path:
    return cache_root().parent / QUERY_MODELS_FILE


def remembered_query_model(store_key: str) -> tuple[str, str] | None:
    """(source, label) of the model the last text search of `store_key` used, or None."""
    try:
        entry = json.loads(_query_models_path().read_text(encoding="utf-8")).get(store_key)
        return (str(entry[0]), str(entry[1])) if entry else None
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return None


def remember_query_model(store_key: str, source: str, label: str) -> None:
    """Remember that a text search of `store_key` used model `source` (`label`); at most the
    64 stores searched last are kept. Failing to write is no error (it only costs the
    prefetch)."""
    path = _query_models_path()
    try:
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        known.pop(store_key, None)
        known[store_key] = [source, label]
        kept = dict(list(known.items())[-64:])
        write_atomically(path, lambda t: t.write_text(json.dumps(kept), encoding="utf-8"))
    except OSError:
        log.debug("cannot remember the query model in %s", path, exc_info=True)


@functools.lru_cache(maxsize=4)
def _query_text_encoder(source: str, name: str, device: str = "auto", precision: str = "fp32"):
    """What embeds query texts for model `source` (labelled `name`) at `precision`: an object
    with ``embed_texts(texts) -> (n, dim) float32, L2-normalized``, ``dim`` and
    ``precision``, kept per process.

    On the CPU (device "auto" or "cpu": one short text needs no GPU) it is the checkpoint's
    cached ONNX text tower run by ONNX Runtime on up to 2 non-spinning threads
    (:class:`OnnxTextEncoder`: neither torch nor transformers is imported, so a new process
    answers in about a second): at `auto`, its int8 copy where that held the cosine floor
    when it was exported, else fp32; at fp32 or int8, that copy. The first query of a
    checkpoint exports both (seconds, once per checkpoint and machine) and checks them
    against the model. Where there is none (no ONNX Runtime, a checkpoint not on disk, a
    tokenizer without a tokenizers-library form, bf16/fp16, or ``CLIPSQL_TEXT_RUNTIME=torch``)
    it is the model's text tower at `precision` (:func:`cached_embedder`).

    Raises:
        ModelError, BadArgument: as :class:`Embedder` (int8 asked for and below the floor:
            ModelError).
    """
    runtime = os.environ.get(TEXT_RUNTIME_ENV, "auto")
    if runtime not in ("auto", "onnx", "torch"):
        raise BadArgument(f"{TEXT_RUNTIME_ENV} must be auto, onnx or torch, got {runtime!r}")
    check_precision(precision)
    check_device_name(device)
    check_dual_encoder(source)
    onnx_precision = precision in ("auto", "fp32", "int8")
    if runtime != "torch" and onnx_precision and device in ("auto", "cpu") and onnxruntime_available():
        encoder = OnnxTextEncoder.load(source, name, precision)
        folder = export_folder(source)
        wants_int8 = precision in ("auto", "int8")
        if folder is not None and (encoder is None or (wants_int8 and encoder.precision == "fp32")):
            meta_path = folder / TEXT_META
            usable = _text_meta(meta_path).get("usable", {}) if meta_path.is_file() else None
            # Exported when never tried, or for int8 the first time a query asks for it.
            if usable is None or (wants_int8 and usable.get("fp32") and "int8" not in usable):
                cached_embedder(source, name, "cpu", "text").export_text_tower(int8=wants_int8)
                encoder = OnnxTextEncoder.load(source, name, precision)
        if encoder is not None:
            return encoder
        cosine = _int8_text_cosine(folder) if precision == "int8" else None
        if cosine is not None and cosine < COSINE_FLOOR:
            raise ModelError(
                f"model {name!r}: its text tower at int8 gives query vectors whose cosine to fp32 is {cosine:.5f}, "
                f"below the floor {COSINE_FLOOR}: use --precision fp32 (or auto)"
            )
    return cached_embedder(source, name, device, "text", precision)


#: query_text_encoder.cache_clear() forgets the loaded encoders, as for a functools cache.
query_text_encoder.cache_clear = _query_text_encoder.cache_clear  # type: ignore[attr-defined]


def _text_meta(path: Path) -> dict:
    """A text export's metadata (text.json), or {} when it cannot be read."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) and isinstance(meta.get("usable", {}), dict) else {}
    except (OSError, ValueError):
        return {}


def _int8_text_cosine(folder: Path | None) -> float | None:
    """The least cosine to fp32 of the int8 text tower exported in `folder`, when recorded."""
    if folder is None:
        return None
    try:
        return float(json.loads((folder / TEXT_META).read_text(encoding="utf-8"))["int8_min_cosine"])
    except (TypeError, OSError, ValueError, KeyError):
        return None


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


def _preprocess_each(embedder, ids: list[str], images: list):
    """(ids, pixel_values or None, failures): the batch preprocessed at once, or, when that
    fails, image by image so that one bad image fails alone (reason EMBED_FAILED)."""

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
        return kept_ids, (_concat_inputs(tensors) if tensors else None), failures


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
                vectors.append(embedder.embed_pixels(_row_of_inputs(pixels, i)))
                kept_ids.append(photo_id)
            except Exception as exc:  # noqa: BLE001
                failures.append((photo_id, EMBED_FAILED, f"model: {_describe(exc)}"))
        if not kept_ids:
            raise batch_error
        return kept_ids, np.concatenate(vectors), failures


def _concat_inputs(parts: list[dict]) -> dict:
    """The image-tower input dicts of several batches as one (each key's tensors concatenated
    along the rows)."""
    import torch

    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _row_of_inputs(inputs: dict, i: int) -> dict:
    """Row `i` of an image-tower input dict, as a batch of one."""
    return {key: value[i : i + 1] for key, value in inputs.items()}


def _features(out):
    # transformers 5 returns an output object whose pooler_output is the projected
    # embedding; 4.x returns the tensor itself.
    return out if hasattr(out, "float") else out.pooler_output


def _normalized(features) -> np.ndarray:
    """(n, d) features -> (n, d) float32, L2-normalized, in float64 so that features of any
    magnitude (a small model's may be 1e-18) keep their direction.

    Raises:
        ValueError: a row is all zeros or not finite: it has no direction to store (the
            refresh records that photo as failed and goes on).
    """
    values = features.detach().double().cpu().numpy()
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ValueError(f"the model gave {int(bad.sum())} embedding(s) of zero or non-finite length")
    return (values / norms).astype(np.float32)


@dataclasses.dataclass
class EmbeddedBatch:
    """One batch out of :func:`embed_photos`: photo_ids, (n, dim) float32 L2-normalized
    embeddings, the photos whose image could not be decoded (photo_id, reason, detail), and
    the precision the vectors were made at (:attr:`Embedder.precision` after this batch)."""

    photo_ids: list[str]
    embeddings: np.ndarray
    failures: list[tuple[str, str, str]]
    preprocess_s: float
    infer_s: float
    precision: str = "fp32"


def batch_size_for(device: str) -> int:
    """Images per forward pass chosen for `device` (the refresh's default; an explicit
    --batch-size wins): 32 on a CPU (every CPU figure of docs/speed.md was taken at it); on
    CUDA 256 where the GPU has >= 16 GiB (clip-retrieval's clip_inference default), 128 from
    8 GiB, else 64; 64 on MPS. On an H200 (bench/embed_gpu.py, docs/speed.md) the image tower
    alone ran 11,937 / 24,703 / 26,152 photos/s at fp16 with batches of 128 / 256 / 512, and
    the fp16 stage 1,920 / 1,886 photos/s at 256 / 512 (the decode pool bounds it). Imports torch
    for CUDA."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        total = torch.cuda.get_device_properties(index).total_memory
        return 256 if total >= 16 * 2**30 else 128 if total >= 8 * 2**30 else 64
    return 64 if device == "mps" else DEFAULT_BATCH_SIZE


def decode_workers_for(device: str) -> int:
    """Worker processes that decode and preprocess photos for a model on `device`.

    0 on a CPU: the model uses every core, and one background thread keeps it fed (the stage
    keeps 91-95% of the model's own speed on 2 cores, docs/speed.md). On a GPU the model
    outruns one decoding core many times over (clip-retrieval's 1,500 photos/s on an RTX 3080
    come with its default of 8 preprocessing worker processes), so every core but one
    decodes, at most 16. On an H200 with 16 cores the 15 workers decoded 1,732 photos/s (the
    GPU resizing and normalizing), and the fp16 model alone ran 24,928: the pool bounds the
    stage there (bench/embed_gpu.py, docs/speed.md).
    """
    if device == "cpu":
        return 0
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def _decode_batch(
    preprocessor, chunk: Sequence[tuple[str, str | os.PathLike]], decode_side: int | None, for_device: bool = False
) -> tuple:
    """Decode and preprocess one batch of (photo_id, path): (ids, inputs or None, failures,
    seconds, photos in the chunk). A photo that fails is a failure row, never an error.
    With `for_device`, the images are decoded only, into :meth:`ImagePreprocessor.packed_images`
    (in place of the inputs), for processing on the GPU."""
    t0 = time.perf_counter()
    ids, images, failures = [], [], []
    for photo_id, path in chunk:
        try:
            images.append(open_rgb(Path(path).read_bytes(), min_side=decode_side))
            ids.append(photo_id)
        except InvalidImage as exc:
            failures.append((photo_id, exc.reason, exc.detail))
        except OSError as exc:
            failures.append((photo_id, "no_file", f"{path}: {exc.strerror or exc}"))
        except Exception as exc:  # noqa: BLE001 - one photo's fault ends only that photo
            failures.append((photo_id, "undecodable", _describe(exc)))
    if for_device:
        return ids, preprocessor.packed_images(images), failures, time.perf_counter() - t0, len(chunk)
    ids, pixels, bad = _preprocess_each(preprocessor, ids, images)
    return ids, pixels, failures + bad, time.perf_counter() - t0, len(chunk)


class _PhotoBatches:
    """The batches of `items` as a map-style dataset for torch's DataLoader, each batch cut
    into jobs of at most `job_size` photos: item j is (batch number, job j decoded and
    preprocessed by :func:`_decode_batch`), made in a worker process."""

    def __init__(self, items, preprocessor: ImagePreprocessor, batch_size: int, decode_side, job_size: int, for_device):
        self.items, self.preprocessor, self.decode_side = list(items), preprocessor, decode_side
        self.for_device = for_device
        self.jobs: list[tuple[int, int, int]] = []  # (batch number, start, stop)
        for b, start in enumerate(range(0, len(self.items), batch_size)):
            stop = min(start + batch_size, len(self.items))
            pieces = -(-(stop - start) // job_size)
            bounds = [start + (stop - start) * k // pieces for k in range(pieces + 1)]
            self.jobs += [(b, lo, hi) for lo, hi in zip(bounds, bounds[1:])]

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, j: int) -> tuple:
        b, start, stop = self.jobs[j]
        return b, _decode_batch(self.preprocessor, self.items[start:stop], self.decode_side, self.for_device)


def _joined_batch(parts: list[tuple], pin_memory: bool, preprocessor, device: str | None) -> tuple:
    """The decoded jobs of one batch as one :func:`_decode_batch` tuple; with `pin_memory` its
    tensors are copied once into page-locked memory (so the copy to the GPU is asynchronous).
    With `device`, the jobs hold decoded images, processed here on that device."""
    import torch

    ids = [photo_id for part in parts for photo_id in part[0]]
    failures = [tuple(f) for part in parts for f in part[2]]
    if device is not None:
        t0 = time.perf_counter()
        images = [image for part in parts for image in unpacked_images(part[1], device)]
        ids, pixels, bad = _preprocess_each(_OnDevice(preprocessor, device), ids, images)
        seconds = sum(part[3] for part in parts) + time.perf_counter() - t0
        return ids, pixels, failures + bad, seconds, sum(part[4] for part in parts)
    present = [part[1] for part in parts if part[1] is not None]
    pixels = None
    if present:
        pixels = {}
        for key in present[0]:
            tensors = [inputs[key] for inputs in present]
            shape = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:])
            out = torch.empty(shape, dtype=tensors[0].dtype, pin_memory=pin_memory)
            pixels[key] = torch.cat(tensors, out=out)
    return ids, pixels, failures, sum(part[3] for part in parts), sum(part[4] for part in parts)


def unpacked_images(packed: tuple, device: str) -> list:
    """:meth:`ImagePreprocessor.packed_images` on `device`: [(3, H, W) uint8 tensor each],
    views of one asynchronous copy (pinned memory)."""
    flat, shapes = packed
    flat = flat.to(device, non_blocking=True)
    sizes = [h * w * c for h, w, c in shapes]
    return [part.view(shape).permute(2, 0, 1) for part, shape in zip(flat.split(sizes), shapes)]


class _OnDevice:
    """An ImagePreprocessor whose preprocess runs on `device` (what _preprocess_each calls).
    Where the device's processing raises, the same images are processed on the host, so that
    a fault of the GPU path (a family whose processor cannot run there) costs speed, never
    photos: only an image the host's processing refuses too fails."""

    def __init__(self, preprocessor: ImagePreprocessor, device: str):
        self.preprocessor, self.device = preprocessor, device

    def preprocess(self, images: Sequence) -> dict:
        from PIL import Image

        try:
            return self.preprocessor.preprocess(images, device=self.device)
        except Exception as exc:  # noqa: BLE001 - retried on the host, which reports its own error
            log.debug("preprocessing on %s failed (%s); preprocessing on the host", self.device, _describe(exc))
            return self.preprocessor.preprocess([Image.fromarray(im.permute(1, 2, 0).cpu().numpy()) for im in images])


def decode_server_modules(preprocessor: ImagePreprocessor) -> list[str]:
    """What the decode workers' server (forkserver) imports once, before any worker forks
    from it: torch, Pillow, transformers, this module and the preprocessor's own
    (:attr:`ImagePreprocessor.modules`)."""
    return ["torch", "PIL.Image", "transformers", __name__, *preprocessor.modules]


def _batches_in_workers(
    items, preprocessor, batch_size: int, decode_side, workers: int, pin_memory: bool, preprocess_on: str | None = None
):
    """The decoded batches of `items`, in order, from `workers` processes (torch's DataLoader
    over jobs of at most :data:`DECODE_JOB_PHOTOS` photos, joined here into batches;
    PREFETCH_BATCHES batches are decoded ahead; with `pin_memory` each batch is in
    page-locked memory, so the copy to the GPU overlaps the model). The workers start from a
    fresh interpreter (forkserver, else spawn), never a fork of this process and its
    engine's threads. With `preprocess_on` (a CUDA device) the workers only decode, and the
    image processor runs on that device here."""
    import multiprocessing

    from torch.utils.data import DataLoader

    context: Any
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # The server imports these once; each chunk's workers fork from it instead of
        # importing torch and the processor's modules again (seconds) per chunk.
        context.set_forkserver_preload(decode_server_modules(preprocessor))
    else:
        context = multiprocessing.get_context("spawn")
    job_size = min(batch_size, DECODE_JOB_PHOTOS)
    jobs_per_batch = -(-batch_size // job_size)
    loader: DataLoader = DataLoader(
        _PhotoBatches(items, preprocessor, batch_size, decode_side, job_size, preprocess_on is not None),  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        # Decoded images (uint8, one tensor per job) are pinned by the loader's thread;
        # processed inputs are pinned once, when a batch's jobs are joined.
        pin_memory=pin_memory and preprocess_on is not None,
        # PREFETCH_BATCHES model batches ahead in all, at least two jobs per worker.
        prefetch_factor=max(2, -(-PREFETCH_BATCHES * jobs_per_batch // workers)),
        multiprocessing_context=context,
        collate_fn=_unchanged,
    )
    parts: list[tuple] = []
    current = 0
    for b, part in loader:  # in order
        if b != current and parts:
            yield _joined_batch(parts, pin_memory, preprocessor, preprocess_on)
            parts = []
        current = b
        parts.append(part)
    if parts:
        yield _joined_batch(parts, pin_memory, preprocessor, preprocess_on)


def _unchanged(batch):
    """A worker's batch as it made it (DataLoader's default would turn tuples into lists)."""
    return batch


def _batches_in_thread(items, preprocessor, batch_size: int, decode_side) -> Iterator[tuple]:
    """The decoded batches of `items`, in order, from one background thread that decodes
    batch i+1 while the model runs batch i (the queue holds PREFETCH_BATCHES)."""
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for start in range(0, len(items), batch_size):
                if stop.is_set():
                    return
                ready.put(_decode_batch(preprocessor, items[start : start + batch_size], decode_side))
            ready.put(None)
        except BaseException as exc:  # surfaced in the consumer, not lost in the thread
            ready.put(exc)

    worker = threading.Thread(target=produce, name="embed-preprocess", daemon=True)
    worker.start()
    try:
        while (batch := ready.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def embed_photos(
    items: Sequence[tuple[str, str | os.PathLike]],
    embedder: ClipEmbedder,
    *,
    batch_size: int | None = None,
    progress: bool = True,
    reduced_decode: bool = True,
    decode_workers: int | None = None,
    preprocess_on_device: bool = True,
) -> Iterator[EmbeddedBatch]:
    """Embed cached images, yielding one :class:`EmbeddedBatch` per model batch.

    Photos are decoded and preprocessed ahead of the model: on a CPU by one background
    thread (batch i+1 while the model runs batch i), on a GPU by worker processes
    (:func:`decode_workers_for`) whose batches arrive in pinned memory (where torchvision is
    installed the workers only decode, and the image processor runs on the GPU). Images that fail to
    decode, to preprocess or to go through the model are reported in the batch's `failures`
    (photo_id, reason, detail), never raised; only a fault of the whole batch (no photo of it
    goes through alone) is.

    Args:
        items: (photo_id, image path) pairs.
        embedder: the model.
        batch_size: images per forward pass; default :func:`batch_size_for` the model's device.
        progress: show a progress bar.
        reduced_decode: decode JPEGs at reduced size, never below the model's input side
            (:func:`clipsql.images.open_rgb`'s `min_side`).
        decode_workers: processes that decode (0: one thread of this process); default
            :func:`decode_workers_for` the model's device.
        preprocess_on_device: on a CUDA device whose checkpoint's image processor runs there
            (:attr:`ImagePreprocessor.runs_on_cuda`: torchvision is installed), the workers
            only decode and the resizing and normalizing run on the GPU; default True. False
            (or any other device) preprocesses in the workers.

    Raises:
        BadArgument: batch_size < 1 or decode_workers < 0.
    """
    from tqdm.auto import tqdm

    device = str(getattr(embedder, "device", "cpu"))
    batch_size = batch_size_for(device) if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadArgument(f"batch_size must be >= 1, got {batch_size}")
    workers = decode_workers_for(device) if decode_workers is None else decode_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise BadArgument(f"decode_workers must be an integer >= 0, got {decode_workers!r}")
    decode_side = getattr(embedder, "decode_side", None) if reduced_decode else None
    # Workers need the processing alone (picklable); a stand-in embedder without it decodes here.
    preprocessor = getattr(embedder, "image_preprocessor", None)
    if workers and preprocessor is not None and len(items) > batch_size:
        # ONNX Runtime (int8) takes host arrays: its inputs are preprocessed in the workers.
        on_cuda = device.startswith("cuda") and getattr(embedder, "precision", "fp32") != "int8"
        batches = _batches_in_workers(
            items,
            preprocessor,
            batch_size,
            decode_side,
            workers,
            pin_memory=device.startswith("cuda"),
            preprocess_on=device if on_cuda and preprocess_on_device and preprocessor.runs_on_cuda else None,
        )
    else:
        batches = _batches_in_thread(items, embedder, batch_size, decode_side)
    try:
        with tqdm(total=len(items), desc="embed", unit="photo", disable=not progress) as bar:
            for ids, pixels, failures, preprocess_s, count in batches:
                t0 = time.perf_counter()
                if pixels is None:
                    vectors = np.zeros((0, embedder.dim), np.float32)
                else:
                    ids, vectors, bad = _embed_each(embedder, ids, pixels)
                    failures = failures + bad
                bar.update(count)
                precision = getattr(embedder, "precision", "fp32")
                yield EmbeddedBatch(ids, vectors, failures, preprocess_s, time.perf_counter() - t0, precision)
    finally:
        batches.close()  # stops the decoding thread or the workers when the caller stops early
