"""Numeric precision of the embedding towers: what each setting means, what a device supports,
and what `auto` picks.

| precision | runtime | where |
| --- | --- | --- |
| fp32 | torch | everywhere (the reference) |
| bf16 | torch, weights in bfloat16 | CUDA with bf16; CPUs with native bf16 (AVX-512 BF16 or AMX) |
| fp16 | torch, weights in float16 | CUDA, MPS |
| int8 | ONNX Runtime, dynamic quantization of the tower's MatMul/Gemm weights | CPU |

`auto` picks, on CUDA, fp16; on a CPU, int8 where it holds the cosine floor, else bf16 where
the CPU has native bf16, else fp32. The order comes from measurement: on a 2-core AVX-512
BF16/VNNI CPU (ViT-B/32 image tower, 128 real photos, interleaved; issue 15) fp32 18.3
photos/s, bf16 weights 37.3, ONNX Runtime int8 55.2; on a 2-core AVX2 CPU without native bf16
(this project's machines: ``python bench/embed_precision.py /tmp/clip-b32 --n 32 --rounds 1
--precisions fp32,bf16,int8``, load 1.9) the stage ran fp32 10.3 photos/s, bf16 emulated 1.4,
int8 12.9 (17.2 at load 1.3-1.7 in another run; docs/speed.md). Every precision other than fp32 is
checked against fp32 on the first photos it embeds: the cosine of each vector to its fp32
vector must be at least :data:`COSINE_FLOOR`, else an explicit setting stops with an error and
`auto` falls back to fp32 (random weights lose less than real checkpoints under int8, so the
floor is checked on the user's own photos and model, not once here).
"""

from __future__ import annotations

from .errors import BadArgument

#: The settings of `--precision`.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: Least cosine between a vector and its fp32 vector that a lower precision must keep
#: (the issue's floor; int8 of ViT-B/32's image tower keeps >= 0.9995 on random weights).
COSINE_FLOOR = 0.999


def check_precision(precision: str) -> str:
    """`precision` if it is one of :data:`PRECISIONS`.

    Raises:
        BadArgument: any other value.
    """
    if precision not in PRECISIONS:
        raise BadArgument(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def native_bf16(device: str) -> bool:
    """Whether `device` computes in bfloat16 natively (a CPU with AVX-512 BF16 or AMX, as
    oneDNN reports it; a CUDA device with bf16); imports torch."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(check()) if check is not None else False
    return False


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime and onnx import (the int8 runtime)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def auto_candidates(device: str) -> list[str]:
    """What `auto` tries on `device`, fastest first (module docstring); fp32 always last."""
    if device.startswith("cuda"):
        return ["fp16", "fp32"]
    if device == "mps":
        return ["fp32"]
    out = []
    if onnxruntime_available():
        out.append("int8")
    if native_bf16(device):
        out.append("bf16")
    return out + ["fp32"]


def check_supported(precision: str, device: str) -> None:
    """Refuse, before any model loads, a precision `device` cannot run.

    Raises:
        BadArgument: fp16 on a CPU, int8 off the CPU or without ONNX Runtime.
    """
    if precision == "fp16" and device == "cpu":
        raise BadArgument("precision fp16 runs on CUDA or MPS only; on a CPU use int8, bf16 or fp32")
    if precision == "int8":
        if device != "cpu":
            raise BadArgument(f"precision int8 runs on the CPU only (ONNX Runtime), not on {device}")
        if not onnxruntime_available():
            raise BadArgument("precision int8 needs onnxruntime and onnx: pip install onnxruntime onnx")
