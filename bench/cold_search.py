"""A cold `clipsql search text` from the shell: a new process, the model on disk.

    python bench/cold_search.py [MODEL_DIR] [--runs 5] [--photos 32] [--baseline SRC] [--no-torch]

Builds a chdb store of PHOTOS real photos (../shared/data/unsplash-lite-7k/photos, as an image
folder) embedded by MODEL_DIR (a random-weight ViT-B/32 from
../shared/tools/make_random_clip.py costs what the real one costs; default /tmp/clip-b32),
then times `clipsql search text "a dog on a beach" -k 10` in new processes, interleaved:

- before: ``CLIPSQL_TEXT_RUNTIME=torch``, the model's text tower in torch (imports torch and
  transformers, loads the weights);
- after: the default, the checkpoint's cached ONNX text tower run by ONNX Runtime (neither
  torch nor transformers imported); the first query of a checkpoint exports it, so one
  untimed run comes first;
- with ``--baseline SRC``: the same default command run from another checkout's src/ folder
  (``git worktree add /tmp/base <commit>``, then ``--baseline /tmp/base/src``), to time a
  change against the code before it in the same run. ``--no-torch`` leaves the torch runs out.

Every run gets the environment a user's shell has: PYTHONDONTWRITEBYTECODE is removed (an
installed package has its bytecode cached; with the variable set, as in some containers,
every run compiles clipsql's modules again, about 0.17 s), and the untimed first runs write
the bytecode.

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


def clipsql(*args: str, runtime: str | None = None, cache: str, src: str | None = None) -> float:
    env = dict(os.environ, CLIPSQL_CACHE_DIR=cache)
    env.pop("CLIPSQL_TEXT_RUNTIME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if runtime:
        env["CLIPSQL_TEXT_RUNTIME"] = runtime
    if src:  # another checkout's package first on the path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "clipsql.cli", *args]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/clip-b32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--baseline", help="src/ folder of another checkout, timed beside this one")
    ap.add_argument("--no-torch", action="store_true", help="leave out the torch text tower's runs")
    a = ap.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"no checkpoint at {a.model}: make one with ../shared/tools/make_random_clip.py")
    if a.baseline and not (Path(a.baseline) / "clipsql" / "cli.py").is_file():
        sys.exit(f"--baseline {a.baseline}: no clipsql package there (give a checkout's src/ folder)")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "photos"
        folder.mkdir()
        for path in sorted((require_photos() / "photos").glob("*.jpg"))[: a.photos]:
            shutil.copy(path, folder / path.name)
        store, cache = str(Path(work) / "store"), str(Path(work) / "cache")
        clipsql("refresh", "--source", str(folder), "--model", a.model, "--store", store, "-q", cache=cache)
        search = ("search", "text", QUERY, "-k", "10", "--store", store, "--device", "cpu")
        clipsql(*search, cache=cache)  # the first query of the checkpoint exports its text tower
        runs = {} if a.no_torch else {"before (torch)": dict(runtime="torch")}
        if a.baseline:
            runs["baseline (--baseline)"] = dict(src=a.baseline)
            clipsql(*search, cache=cache, src=a.baseline)  # writes its bytecode
        runs["after (ONNX text tower)"] = {}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(a.runs):
            for name, how in runs.items():
                times[name].append(clipsql(*search, cache=cache, **how))
        print(f"cold `clipsql search text` on {a.photos} photos, load {os.getloadavg()[0]:.2f} at the end")
        for name, values in times.items():
            runs = " ".join(f"{v:.2f}" for v in values)
            print(f"{name:<26} median {statistics.median(values):.2f} s   runs: {runs}")


if __name__ == "__main__":
    main()
