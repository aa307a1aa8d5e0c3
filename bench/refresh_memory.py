"""Peak memory (RSS) of `clipsql refresh` for sources of growing size: it must stay bounded
(photos stream through in chunks) and not grow with the number of photos.

    python bench/refresh_memory.py [--model /tmp/clip-b32] [--sizes 1000 5000 25000]
                                   [--conversions-per-photo 40] [--chunk-size 1024] [--backend chdb|duckdb]

For each size a fresh store is filled by a refresh in its own process, which reports its
peak RSS (getrusage ru_maxrss, the kernel's high-water mark of the process). Images are
generated JPEGs (640 x 427, as Unsplash's w=640 renditions; a pool of 256 distinct ones)
served over loopback HTTP, so the download stage runs as it does against Unsplash. With
--conversions-per-photo the release also holds a conversions.tsv000 of that many rows per
photo (the real Lite release has millions), which the refresh streams in chunks too.

The model is any CLIP checkpoint directory; /tmp/clip-b32 is a random-weight ViT-B/32
(`python ../shared/tools/make_random_clip.py /tmp/clip-b32`), which costs what the real one
costs. Note that on CPU ViT-B/32 embeds some tens of photos per second on 2 cores.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clipsql.sources import UNSPLASH_COLUMNS

HEADER = list(UNSPLASH_COLUMNS["photos"])  # photos.tsv000 columns, in the dataset's order
POOL = 256


def make_pool() -> list[bytes]:
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(POOL):
        image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((640, 427), Image.BILINEAR)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
        pool.append(out.getvalue())
    return pool


def serve(pool: list[bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = pool[int(Path(self.path.split("?")[0]).stem) % POOL]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def write_release(folder: Path, base_url: str, n: int, conversions_per_photo: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    empty = [""] * (len(HEADER) - 4)
    with open(folder / "photos.tsv000", "w", encoding="utf-8") as f:
        f.write("\t".join(HEADER) + "\n")
        for i in range(n):
            f.write(
                "\t".join(
                    [
                        f"p{i:010d}",
                        f"https://unsplash.com/photos/p{i:010d}",
                        f"{base_url}/img/{i}.jpg",
                        "2021-03-04 10:00:00.123",
                    ]
                    + empty
                )
                + "\n"
            )
    if conversions_per_photo:
        with open(folder / "conversions.tsv000", "w", encoding="utf-8") as f:
            f.write("converted_at\tconversion_type\tkeyword\tphoto_id\tanonymous_user_id\tconversion_country\n")
            for i in range(n):
                for j in range(conversions_per_photo):
                    f.write(
                        f"2021-{1 + j % 12:02d}-{1 + i % 28:02d} 1{j % 10}:00:0{j % 10}.{j:03d}\tdownload\t"
                        f"keyword{j % 97}\tp{i:010d}\tuser{(i * 31 + j) % 100000:06d}\tIS\n"
                    )
    return folder


def child(args) -> None:
    """Run one refresh in this process and print its peak RSS as JSON."""
    import logging

    from clipsql.download import DownloadOptions
    from clipsql.refresh import refresh

    logging.basicConfig(level=logging.WARNING)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    samples: list[float] = []  # RSS in MiB, every 0.5 s: does it level off or keep growing?
    done = threading.Event()

    def sample() -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not done.wait(0.5):
            samples.append(int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    summary = refresh(
        args.source,
        model=args.model,
        store=args.store,
        duckdb=args.duckdb,
        chunk_size=args.chunk_size,
        download=DownloadOptions(workers=16, width=640),
        device="cpu",
        progress=False,
    )
    done.set()
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {
                "photos": summary.stage("source").ok,
                "embedded": summary.stage("embed").ok,
                "failed": summary.stage("download").failed + summary.stage("embed").failed,
                "rows_loaded": summary.stage("load").ok,
                "seconds": time.perf_counter() - t0,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "vm_hwm_mib": hwm / 1024,
                "rss_after_imports_mib": rss_before / 1024,
                "rss_quarters_mib": [max(samples[: max(1, len(samples) * q // 4)], default=0) for q in (1, 2, 3, 4)],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/tmp/clip-b32", help="CLIP checkpoint directory")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 25000])
    ap.add_argument("--conversions-per-photo", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--backend", choices=("chdb", "duckdb"), default="chdb")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--duckdb", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not Path(args.model).is_dir():
        sys.exit(f"no CLIP checkpoint at {args.model}: make one with ../shared/tools/make_random_clip.py")
    httpd, url = serve(make_pool())
    print(
        f"model {args.model}, backend {args.backend}, chunk {args.chunk_size}, "
        f"conversions/photo {args.conversions_per_photo}, {os.cpu_count()} CPUs",
        flush=True,
    )
    print(
        f"{'photos':>8} {'embedded':>9} {'failed':>7} {'rows loaded':>12} {'seconds':>9} "
        f"{'peak RSS MiB':>13} {'before refresh':>15}  peak RSS by 1/4, 2/4, 3/4 of the run",
        flush=True,
    )
    try:
        for n in args.sizes:
            with tempfile.TemporaryDirectory(prefix="clipsql-mem-") as tmp:
                source = write_release(Path(tmp) / "release", url, n, args.conversions_per_photo)
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--source",
                    str(source),
                    "--model",
                    args.model,
                    "--store",
                    str(Path(tmp) / "store"),
                    "--chunk-size",
                    str(args.chunk_size),
                ]
                if args.backend == "duckdb":
                    command += ["--duckdb", str(Path(tmp) / "store.duckdb")]
                env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"refresh of {n} photos failed:\n{done.stderr[-3000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{r['photos']:>8} {r['embedded']:>9} {r['failed']:>7} {r['rows_loaded']:>12} "
                    f"{r['seconds']:>9.1f} {r['peak_rss_mib']:>13.0f} {r['rss_after_imports_mib']:>15.0f}  "
                    + ", ".join(f"{q:.0f}" for q in r["rss_quarters_mib"][:3]),
                    flush=True,
                )
    finally:
        httpd.shutdown()


if __name__ == "__main__":
    main()
