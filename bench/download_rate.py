"""Download stage rate from a loopback mirror of the real photos (photos/s).

    python bench/download_rate.py [--n 7174] [--workers 16]

Target (issue 2): >= 200 photos/s.
"""

import argparse
import tempfile
import time

from _common import mirror, require_photos

from clipsql.download import DownloadOptions, download_photos


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=7174)
    ap.add_argument("--workers", type=int, default=16)
    a = ap.parse_args()
    root = require_photos()
    ids = sorted(p.stem for p in (root / "photos").glob("*.jpg"))[: a.n]
    with mirror(root) as url, tempfile.TemporaryDirectory() as cache:
        photos = [(pid, f"{url}/photos/{pid}.jpg") for pid in ids]
        t0 = time.perf_counter()
        results = download_photos(photos, cache, DownloadOptions(workers=a.workers), progress=False)
        seconds = time.perf_counter() - t0
    ok = sum(r.ok for r in results)
    print(
        f"download: {len(ids)} photos ({ok} ok, {len(ids) - ok} failed) in {seconds:.2f} s "
        f"= {len(ids) / seconds:.0f} photos/s with {a.workers} workers"
    )


if __name__ == "__main__":
    main()
