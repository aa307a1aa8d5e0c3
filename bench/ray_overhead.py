"""What the Ray executor costs against the local one: `clipsql refresh` wall time on N photos
into a fresh store, `--executor local` and `--executor ray` (Ray's local mode: the refresh
starts a Ray instance on this machine's CPUs and stops it), interleaved, the ratio printed.

    PYTHONPATH=src:bench python bench/ray_overhead.py [--n 1000] [--repeats 2] [--model /tmp/clip-b32]
                                                      [--batch-size 32] [--generated] [--worker-niceness 0]

Each run is a `clipsql refresh` process of its own, as a scheduler starts it, so the Ray
figure includes starting Ray (what `--executor ray` costs without a cluster), its workers'
imports and the model loaded in the embedding actor. Photos: the first N real photos of
../shared/data/unsplash-lite-7k/ served from a loopback mirror when present (else, or with
--generated, N generated 640 x 427 JPEGs from a loopback server). The model: a checkpoint
directory, by default /tmp/clip-b32, a random-weight ViT-B/32 that costs what the real one
costs (`python ../shared/tools/make_random_clip.py /tmp/clip-b32`).

Ray runs its workers at nice 15 (RAY_worker_niceness), so on a machine shared with other
jobs they yield the CPU to them where the local executor, at nice 0, does not. To measure
what Ray costs rather than that priority, the Ray runs get RAY_worker_niceness=0 unless
--worker-niceness says otherwise (15: Ray's default).

Target (issue 16): Ray within 1.3x of local.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED_PHOTOS, mirror

ROOT = Path(__file__).resolve().parents[1]


def real_release(folder: Path, base_url: str, n: int) -> Path:
    """The first `n` rows of the real photos' TSV, their image URLs pointed at `base_url`."""
    lines = (SHARED_PHOTOS / "photos.tsv000").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1 : n + 1]
    url_at = header.split("\t").index("photo_image_url")
    out = [header]
    for line in rows:
        fields = line.split("\t")
        fields[url_at] = f"{base_url}/photos/{fields[0]}.jpg"
        out.append("\t".join(fields))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "photos.tsv000").write_text("\n".join(out) + "\n", encoding="utf-8")
    return folder / "photos.tsv000"


@contextlib.contextmanager
def generated_release(folder: Path, n: int):
    """`n` generated photos (refresh_memory.py's pool of 640 x 427 JPEGs) and their server."""
    from refresh_memory import make_pool, serve, write_release

    httpd, url = serve(make_pool())
    try:
        yield write_release(folder, url, n, 0)
    finally:
        httpd.shutdown()


def run(executor: str, release: Path, store: Path, model: str, batch_size: int, niceness: int) -> float:
    command = [
        sys.executable,
        "-m",
        "clipsql.cli",
        "refresh",
        "--source",
        str(release),
        "--store",
        str(store),
        "--model",
        model,
        "--batch-size",
        str(batch_size),
        "--executor",
        executor,
        "--quiet",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RAY_worker_niceness=str(niceness))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{executor}: exit {done.returncode}\n{done.stderr[-3000:]}")
    embedded = next(line for line in done.stdout.splitlines() if line.startswith("embed"))
    print(f"  {executor:<6} {seconds:7.1f} s   {embedded}", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="photos (default 1000)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each executor, interleaved (default 2)")
    ap.add_argument("--model", default="/tmp/clip-b32", help="CLIP checkpoint directory (default /tmp/clip-b32)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--generated", action="store_true", help="generated photos even where the real ones are")
    ap.add_argument("--worker-niceness", type=int, default=0, help="nice of Ray's workers (default 0; Ray's own: 15)")
    a = ap.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"no model at {a.model}: python ../shared/tools/make_random_clip.py {a.model}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        real = not a.generated and (SHARED_PHOTOS / "photos").is_dir()
        serving = mirror(SHARED_PHOTOS) if real else generated_release(tmp_path / "release", a.n)
        with serving as served:
            release = real_release(tmp_path / "release", served, a.n) if real else served
            print(
                f"{a.n} {'real' if real else 'generated'} photos, model {a.model}, batch {a.batch_size}, "
                f"Ray workers at nice {a.worker_niceness}"
            )
            print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
            times: dict[str, list[float]] = {"local": [], "ray": []}
            for repeat in range(a.repeats):
                order = ("local", "ray") if repeat % 2 == 0 else ("ray", "local")
                for executor in order:
                    times[executor].append(
                        run(
                            executor,
                            release,
                            tmp_path / f"{executor}-{repeat}",
                            a.model,
                            a.batch_size,
                            a.worker_niceness,
                        )
                    )
            print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"median: local {local:.1f} s, ray {ray:.1f} s; ray / local = {ray / local:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
