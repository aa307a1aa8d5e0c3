"""A cold `clipsql search text` from the shell: a new process, the model on disk.

    python bench/cold_search.py [MODEL_DIR] [--runs 5] [--photos 32]

Builds a chdb store of PHOTOS real photos (../shared/data/unsplash-lite-7k/photos, as an image
folder) embedded by MODEL_DIR (a random-weight ViT-B/32 from
../shared/tools/make_random_clip.py costs what the real one costs; default /tmp/clip-b32),
then times `clipsql search text "a dog on a beach" -k 10` in new processes, interleaved:

- before: ``CLIPSQL_TEXT_RUNTIME=torch``, the model's text tower in torch (imports torch and
  transformers, loads the weights);
- after: the default, the checkpoint's cached ONNX text tower run by ONNX Runtime (neither
  torch nor transformers imported); the first query of a checkpoint exports it, so one
  untimed run comes first.

Prints the wall time of each run and the medians; the target (issue 15) is <= 1.5 s on 2 idle
cores. The load average is printed: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import require_photos

QUERY = "a dog on a beach"


def clipsql(*args: str, runtime: str | None = None, cache: str) -> float:
    env = dict(os.environ, CLIPSQL_CACHE_DIR=cache)
    env.pop("CLIPSQL_TEXT_RUNTIME", None)
    if runtime:
        env["CLIPSQL_TEXT_RUNTIME"] = runtime
    command = [sys.executable, "-m", "clipsql.cli", *args]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/clip-b32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--photos", type=int, default=32)
    a = ap.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"no checkpoint at {a.model}: make one with ../shared/tools/make_random_clip.py")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "photos"
        folder.mkdir()
        for path in sorted((require_photos() / "photos").glob("*.jpg"))[: a.photos]:
            shutil.copy(path, folder / path.name)
        store, cache = str(Path(work) / "store"), str(Path(work) / "cache")
        clipsql("refresh", "--source", str(folder), "--model", a.model, "--store", store, "-q", cache=cache)
        search = ("search", "text", QUERY, "-k", "10", "--store", store, "--device", "cpu")
        clipsql(*search, cache=cache)  # the first query of the checkpoint exports its text tower
        times: dict[str, list[float]] = {"before (torch)": [], "after (ONNX text tower)": []}
        for _ in range(a.runs):
            times["before (torch)"].append(clipsql(*search, runtime="torch", cache=cache))
            times["after (ONNX text tower)"].append(clipsql(*search, cache=cache))
        print(f"cold `clipsql search text` on {a.photos} photos, load {os.getloadavg()[0]:.2f} at the end")
        for name, values in times.items():
            runs = " ".join(f"{v:.2f}" for v in values)
            print(f"{name:<26} median {statistics.median(values):.2f} s   runs: {runs}")


if __name__ == "__main__":
    main()
