"""Peak memory of a query process: the text tower alone vs the whole model (issue 14).

    python bench/query_memory.py [MODEL_DIR] [--runs 3] [--convert none|bfloat16|float16]

Each measurement is a fresh Python process that imports clipsql, loads MODEL_DIR with
``clipsql.embed.Embedder(towers=...)`` and embeds one query text, then reports its peak RSS
(VmHWM, MiB), its anonymous and file-backed resident memory and its virtual size at the
end, and the load time; "text" is what a search, the SQL function and the console
load, "both" what clipsql loaded before. A baseline process (imports only, no model) is
measured the same way. transformers 5 maps a safetensors checkpoint and only the pages a
query reads become resident, so with the weights used in place the two differ little; with
--convert the weights are copied (as a move to a GPU or a precision change does), and the
whole model then holds both towers. Runs are interleaved (text, both, baseline, text, ...) and the median
of each is printed with the parameter counts. MODEL_DIR: a random-weight ViT-B/32 from
../shared/tools/make_random_clip.py costs what openai/clip-vit-base-patch32 costs (default
/tmp/clip-b32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import clipsql.embed as embed
towers, convert = sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
params = 0
if towers != "none":
    embedder = embed.Embedder(sys.argv[1], device="cpu", progress=False, towers=towers)
    model = embedder.text_model
    if convert != "none":  # what a device copy or a precision change does: every weight copied
        import torch
        model.to(getattr(torch, convert))
    embedder.embed_texts(["a dog on a beach"])
    params = sum(p.numel() for p in model.parameters() if p is not None)
else:
    import torch, transformers  # noqa: F401 - what a query process imports anyway
seconds = time.perf_counter() - t0
status = {line.split(":")[0]: int(line.split()[1]) for line in open("/proc/self/status") if line.split()[-1:] == ["kB"]}
print(json.dumps({"peak_mib": status["VmHWM"] / 1024, "anon_mib": status["RssAnon"] / 1024,
                  "file_mib": status["RssFile"] / 1024, "virtual_mib": status["VmSize"] / 1024,
                  "seconds": seconds, "params": params}))
"""


def measure(model: str, towers: str, convert: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, towers, convert], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/clip-b32")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--convert",
        choices=["none", "bfloat16", "float16"],
        default="none",
        help="convert the loaded weights (a copy, as a device move or a precision setting makes)",
    )
    a = ap.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"no checkpoint at {a.model}: make one with ../shared/tools/make_random_clip.py")
    results: dict[str, list[dict]] = {"text": [], "both": [], "none": []}
    for _ in range(a.runs):
        for towers in results:
            results[towers].append(measure(a.model, towers, a.convert))
    base = statistics.median(r["peak_mib"] for r in results["none"])
    print(
        f"{'loaded':<20}{'peak RSS':>10}{'over imports':>14}{'anon RSS':>10}{'file RSS':>10}{'virtual':>10}"
        f"{'load+query s':>14}{'parameters':>13}"
    )
    for towers, label in (("none", "imports only"), ("text", "text tower alone"), ("both", "whole model")):
        rows = results[towers]
        m = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(
            f"{label:<20}{m['peak_mib']:>10.0f}{m['peak_mib'] - base:>14.0f}{m['anon_mib']:>10.0f}{m['file_mib']:>10.0f}"
            f"{m['virtual_mib']:>10.0f}{m['seconds']:>14.2f}{rows[0]['params']:>13,}"
        )
    print("MiB; medians of", a.runs, "interleaved runs; file RSS: pages of the mapped safetensors file read so far")


if __name__ == "__main__":
    main()
