"""The clip_text_embedding UDF script as ClickHouse runs it: start-up, one-text calls, memory.

    python bench/udf_latency.py [MODEL_DIR] [--queries 30]

Starts `python -m clipsql.udf --model MODEL_DIR --device cpu` (what
sql/clickhouse/udf/clip_text_embedding_function.xml runs) and talks its protocol: per block a
row-count line, then JSONEachRow {"text": ...} lines; one {"embedding": [...]} line back per row.
Reports the first call (process start + imports + model load), the p50 of one-row blocks with
a new text each (what a query with a constant argument costs), a repeated text (the script's
cache), and the script's peak RSS (VmHWM). MODEL_DIR: a random-weight ViT-B/32 from
../shared/tools/make_random_clip.py costs what the real one costs (default /tmp/clip-b32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def call(proc: subprocess.Popen, texts: list[str]) -> list[list[float]]:
    proc.stdin.write(f"{len(texts)}\n" + "".join(json.dumps({"text": t}) + "\n" for t in texts))
    proc.stdin.flush()
    return [json.loads(proc.stdout.readline())["embedding"] for _ in texts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/clip-b32")
    ap.add_argument("--queries", type=int, default=30)
    a = ap.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"no CLIP checkpoint at {a.model}: make one with ../shared/tools/make_random_clip.py")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsql.udf", "--model", a.model, "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        t0 = time.perf_counter()
        first = call(proc, ["a dog on a beach"])
        first_s = time.perf_counter() - t0
        times = []
        for i in range(a.queries):
            t0 = time.perf_counter()
            call(proc, [f"a photo of a red bicycle number {i}"])
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        call(proc, ["a dog on a beach"])
        repeat_ms = 1000 * (time.perf_counter() - t0)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm_mib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    print(f"model {a.model}: {len(first[0])}-dim vectors")
    print(f"  first call (start, imports, model load)   {first_s:7.2f} s")
    print(f"  one new text per call, p50 of {a.queries:<3}        {1000 * statistics.median(times):7.2f} ms")
    print(f"  the same text again (script cache)         {repeat_ms:7.2f} ms")
    print(f"  script peak RSS (VmHWM)                    {hwm_mib:7.0f} MiB")


if __name__ == "__main__":
    main()
