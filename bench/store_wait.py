"""What sharing a chdb store costs (issue 12): a search that has to wait for another one,
and a search right after the store let go of its engine (a notebook left idle).

    python bench/store_wait.py [--photos 2000] [--rounds 5]

Builds a synthetic chdb store (tests/searchdata.py: N photos, random unit vectors) in a
temporary folder, then, in interleaved rounds:

1. `clipsql search similar` alone, as a process (wall time, ms);
2. two such processes started together: the wall time of the one that finished last (it
   waited for the other's engine), ms; the added latency is (2) - (1);
3. in one process: `search.similar` on a store object that holds its engine, and the same
   right after `release()` (the engine is started again and the search snapshot rebuilt), ms.

Prints medians. The figures depend on the machine's load: run it on an idle machine and say
what else ran.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def _cli(store: Path, photo: str) -> list[str]:
    return [sys.executable, "-m", "clipsql.cli", "search", "similar", photo, "-k", "10", "--store", str(store), "-q"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def _alone(store: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(_cli(store, "p0001"), env=_env(), check=True, capture_output=True)
    return (time.perf_counter() - t0) * 1000


def _pair(store: Path) -> float:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(_cli(store, p), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in ("p0001", "p0002")
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err.decode())
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    a = parser.parse_args()

    import searchdata
    from clipsql import search
    from clipsql.db import open_store

    with tempfile.TemporaryDirectory(prefix="clipsql-bench-") as tmp:
        store = Path(tmp) / "store"
        with open_store(store) as db:
            searchdata.load(db, a.photos)
        alone, pair = [], []
        for _ in range(a.rounds):  # interleaved: the machine's load falls on both alike
            alone.append(_alone(store))
            pair.append(_pair(store))
        held, released = [], []
        with open_store(store) as db:
            search.similar("p0001", 10, db=db, model=searchdata.MODEL)  # warm: the snapshot is built
            for i in range(a.rounds * 4):
                photo = searchdata.photo_id(i % 50)
                t0 = time.perf_counter()
                search.similar(photo, 10, db=db, model=searchdata.MODEL)
                held.append((time.perf_counter() - t0) * 1000)
                db.release()
                t0 = time.perf_counter()
                search.similar(photo, 10, db=db, model=searchdata.MODEL)
                released.append((time.perf_counter() - t0) * 1000)
    med = statistics.median
    print(f"store: chdb, {a.photos} photos; {a.rounds} rounds; load: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"clipsql search similar, alone:              {med(alone):8.0f} ms (process wall time)")
    print(f"two at once, the later one:                 {med(pair):8.0f} ms")
    print(f"added latency of the search that waited:    {med(pair) - med(alone):8.0f} ms")
    print(f"search.similar, engine held:                {med(held):8.1f} ms")
    print(f"search.similar, right after release():      {med(released):8.1f} ms (engine start + snapshot rebuild)")


if __name__ == "__main__":
    main()
