"""ONNX copies of a model's towers: exported once per checkpoint from torch, quantized to int8
by ONNX Runtime, cached on disk, and run by ONNX Runtime.

Two uses:

- precision int8 (:mod:`clipsql.precision`): a tower exported to ONNX and its MatMul/Gemm
  weights quantized to int8 by ``onnxruntime.quantization.quantize_dynamic`` (activations
  quantized per batch at run time), run on the CPU;
- the cold query's fast path: :class:`OnnxTextEncoder` embeds query texts with the cached
  text tower and the checkpoint's own tokenizer (its ``tokenizer.json``, read by the
  `tokenizers` library) and imports neither torch nor transformers, so a new process answers
  a text search in about a second instead of the several that importing torch and
  transformers and loading the model cost (bench/cold_search.py).

The cache lives in ``$CLIPSQL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/clipsql`` or
``~/.cache/clipsql``), one folder per checkpoint, named by a hash of the checkpoint's files
(names, sizes, modification times) and of the torch, transformers and onnxruntime versions, so
a changed checkpoint or library gets a new export. Files are written to a temporary name and
renamed, so a reader never sees half a file; two processes exporting at once both write whole
files and the last rename wins.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadArgument, ModelError

log = logging.getLogger(__name__)

#: Version of the layout of a cached export; part of the cache key (2: weights in a ``.data``
#: file beside each ``.onnx``; the text tower also at int8).
EXPORT_FORMAT = 2
#: ONNX opset of the exports (ONNX Runtime 1.20+ runs it; the legacy torch exporter writes it).
OPSET = 17
#: What a text tower's metadata file is called in its cache folder.
TEXT_META = "text.json"


def cache_root() -> Path:
    """Where exports are cached: ``$CLIPSQL_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/clipsql/onnx``,
    else ``~/.cache/clipsql/onnx``."""
    if os.environ.get("CLIPSQL_CACHE_DIR"):
        return Path(os.environ["CLIPSQL_CACHE_DIR"]).expanduser() / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipsql" / "onnx"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def checkpoint_folder(source: str | os.PathLike) -> Path | None:
    """The folder holding checkpoint `source`'s files: a local directory as given, a hub name's
    snapshot in the Hugging Face cache (None when it is not cached: nothing to key by)."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(os.fspath(source), "config.json")
    except Exception:  # noqa: BLE001 - not a valid hub name either: nothing cached to key by
        return None
    return Path(found).parent if isinstance(found, str) else None


def export_folder(source: str | os.PathLike) -> Path | None:
    """The cache folder of checkpoint `source`'s exports (None: the checkpoint is not on disk)."""
    folder = checkpoint_folder(source)
    if folder is None:
        return None
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            files.append([str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns])
    key = {
        "format": EXPORT_FORMAT,
        "folder": str(folder),
        "files": files,
        "versions": [_version(p) for p in ("torch", "transformers", "onnxruntime", "onnx", "tokenizers")],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / digest


def write_atomically(path: Path, write) -> None:
    """Call ``write(temporary_path)`` and rename the result to `path` (a reader sees the whole
    file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def export_onnx(module: Any, inputs: dict[str, Any], path: Path, dynamic: dict[str, dict[int, str]]) -> None:
    """Export torch `module` (called as ``module(**inputs)``, returning (n, d) features) to
    ONNX at `path` with torch's TorchScript-based exporter (opset :data:`OPSET`), the axes of
    `dynamic` left free.

    Raises:
        ModelError: the exporter cannot trace the module.
    """
    import torch

    names = list(inputs)

    class _Positional(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)))

    def write(temporary: Path) -> None:
        # The tracer's warnings are about shapes and branches fixed at export; every export is
        # checked against the torch tower before it is used, so they are not shown to users.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Positional(module).eval(),
                tuple(inputs[name] for name in names),
                str(temporary),
                input_names=names,
                output_names=["features"],
                dynamic_axes={**dynamic, "features": {0: "n"}},
                opset_version=OPSET,
                dynamo=False,
            )

    try:
        write_onnx(path, write)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: no ONNX for this tower
        raise ModelError(f"cannot export to ONNX: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def write_onnx(path: Path, write) -> None:
    """Call ``write(temporary_path)`` to write one self-contained ONNX file, and store it at
    `path` with its weights in ``<path>.data`` beside it (ONNX's external-data form).

    Why: ONNX Runtime maps an external weights file instead of parsing the weights out of the
    protobuf; measured in a `/tmp` probe on the ViT-B/32 text tower (254 MB, 2 cores, load
    about 1), a session starts in 0.32 s instead of 1.10 s, what a cold text search waits for.
    The weights file is renamed into place before the model file, so a reader that sees the
    model file sees whole weights; two processes exporting one checkpoint at once write the
    same bytes.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    with tempfile.TemporaryDirectory(prefix=path.name + ".", suffix=".tmp", dir=path.parent) as temporary:
        whole, split = Path(temporary) / "whole.onnx", Path(temporary) / path.name
        write(whole)
        model = onnx.load(str(whole))
        onnx.save_model(model, str(split), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
        if (Path(temporary) / data_name).is_file():
            os.replace(Path(temporary) / data_name, path.parent / data_name)
        os.replace(split, path)


def quantize_int8(source: Path, path: Path, *, per_channel: bool = False) -> None:
    """`source` ONNX model with its MatMul/Gemm weights quantized to 8 bits (ONNX Runtime's
    dynamic quantization: activations quantized per batch at run time), at `path`.

    Signed int8 per tensor (the image tower: the fastest here, 20.5 vs 19.2 photos/s per
    channel); with `per_channel`, unsigned int8 with a scale per output channel (the text
    tower: closer to fp32, least cosine 0.9994 vs 0.9991 over random 5-15-token texts on the
    ViT-B/32 shape, and 9.2 vs 9.7 ms a query on 2 threads). Both from `/tmp` probes on this
    project's AVX2 machine (32 photos a batch, 2 threads, load about 1). ONNX Runtime's
    quantization docs note that its U8S8 kernels (VPMADDUBSW) can saturate on AVX2 and
    AVX-512 without VNNI; a scale per channel keeps the weights' range small.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QUInt8 if per_channel else QuantType.QInt8
    write_onnx(
        path,
        lambda temporary: quantize_dynamic(
            str(source), str(temporary), weight_type=weight_type, per_channel=per_channel
        ),
    )


class OnnxTower:
    """One exported tower run by ONNX Runtime on the CPU.

    Args:
        path: the .onnx file (its weights in ``<path>.data`` where :func:`write_onnx` wrote it).
        threads: intra-op threads (default: ONNX Runtime's, one per core).
        query: set up for one short query text: at most 2 threads that sleep instead of
            spinning when idle, and basic graph optimizations only unless `quantized`.
        quantized: an int8 model: all graph optimizations, which fuse its quantized MatMuls
            (a `/tmp` probe, ViT-B/32 text tower, 2 threads, 60 texts of 3-12 words, load
            1.2: 12.0 vs 13.8 ms p50; for fp32 they save 1 ms and cost a slower start).
    """

    def __init__(self, path: Path, threads: int | None = None, *, query: bool = False, quantized: bool = False):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if query:
            threads = threads or min(2, os.cpu_count() or 1)
            # Spinning threads hold a core between calls: on a busy machine a query's threads
            # then fight the refresh's for the cores (a text took 870 ms with torch's spinning
            # threads against 28 ms with one; issue 15).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # Basic graph optimizations: measured on the ViT-B/32 text tower (2 cores, load 3.3)
            # the session starts in 0.80 s instead of 1.18 s and a query runs as fast (19.6 vs
            # 20.4 ms p50); the start is what a cold search waits for.
            if not quantized:
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def features(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The tower's raw (n, d) features for `inputs` (numpy arrays by input name)."""
        return self.session.run(None, {name: inputs[name] for name in self.input_names})[0]


def normalized(features: np.ndarray) -> np.ndarray:
    """(n, d) features -> (n, d) float32, L2-normalized in float64.

    Raises:
        ValueError: a row of zero or non-finite length.
    """
    values = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ValueError(f"the model gave {int(bad.sum())} embedding(s) of zero or non-finite length")
    return (values / norms).astype(np.float32)


class OnnxTextEncoder:
    """A text tower without torch or transformers: the checkpoint's tokenizer (its
    ``tokenizer.json``, by the `tokenizers` library) and the exported tower (ONNX Runtime),
    set up as :class:`clipsql.embed.Embedder` tokenizes (truncation to the tower's length;
    padding to the longest text or, for SigLIP, to that length; SigLIP 2's lowercasing).

    Written by :meth:`clipsql.embed.Embedder.export_text_tower`, which checks it against the
    torch tower before it is used: the fp32 copy must give the model's vectors (max abs
    difference <= 1e-4), the int8 copy vectors within cosine COSINE_FLOOR of them. Load one
    with :meth:`load`.

    Attributes:
        dim: embedding width d. name: the model label. precision: "fp32" or "int8".
    """

    def __init__(self, folder: Path, meta: dict, name: str, precision: str = "fp32", threads: int | None = None):
        from tokenizers import Tokenizer

        self.folder = folder
        self.meta = meta
        self.name = name
        self.dim = int(meta["dim"])
        self.precision = precision
        self.device = "cpu"
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(meta["max_length"]))
        self.tower = OnnxTower(
            folder / meta["files"][precision], threads=threads, query=True, quantized=precision == "int8"
        )

    @classmethod
    def load(cls, source: str | os.PathLike, name: str, precision: str = "fp32") -> OnnxTextEncoder | None:
        """The checked export of checkpoint `source`'s text tower at `precision` ("fp32",
        "int8", or "auto": int8 where it held the cosine floor, else fp32), or None when there
        is none (not exported yet, not on disk, found unusable when it was checked, or int8
        asked for and below the floor)."""
        folder = export_folder(source)
        if folder is None or not (folder / TEXT_META).is_file():
            return None
        try:
            meta = json.loads((folder / TEXT_META).read_text(encoding="utf-8"))
            usable = [p for p in ("int8", "fp32") if meta.get("usable", {}).get(p)]
            if precision != "auto":
                usable = [p for p in usable if p == precision]
            if not usable:
                return None
            return cls(folder, meta, name, precision=usable[0])
        except Exception:  # noqa: BLE001 - a damaged cache entry only costs the fast path
            log.warning("the cached text tower in %s cannot be read; using the model itself", folder, exc_info=True)
            return None

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Texts -> the tower's inputs (int64 arrays (n, length)), as the checkpoint's
        tokenizer in transformers makes them."""
        meta = self.meta
        if meta.get("lowercase"):
            texts = [text.lower() for text in texts]
        encodings = self.tokenizer.encode_batch(list(texts))
        length = int(meta["max_length"]) if meta["pad_to_max_length"] else max(len(e.ids) for e in encodings)
        n = len(encodings)
        ids = np.full((n, length), int(meta["pad_id"]), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            count = len(encoding.ids)
            if meta.get("padding_side", "right") == "left":
                ids[row, length - count :] = encoding.ids
                mask[row, length - count :] = 1
            else:
                ids[row, :count] = encoding.ids
                mask[row, :count] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts in any script -> (n, dim) float32, L2-normalized.

        Raises:
            BadArgument: a text is not a str.
        """
        for text in texts:
            if not isinstance(text, str):
                raise BadArgument(f"a query text must be a string, got {type(text).__name__}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return normalized(self.tower.features(self.encode(texts)))
