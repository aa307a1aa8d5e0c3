"""Cost per candidate of a model re-ranking (rerank="model:CHECKPOINT"): ItmReranker.score
on real photos, for checkpoints of the real shapes with random weights (none can be
downloaded here; random weights cost what the trained ones do).

    PYTHONPATH=src python bench/rerank_cost.py [--candidates 9,45] [--runs 3]
                                               [--blip2-candidates 9] [--blip2-runs 2]
                                               [--families blip,blip-2] [--threads N]

Shapes, each built from transformers' config defaults, saved with save_pretrained to a
temporary directory and loaded back through ItmReranker (from_pretrained, the path a hub
name takes):

- blip: Salesforce/blip-itm-base-coco's shape, BlipConfig() = ViT-B/16 at 384 px (577
  tokens) + a BERT-base text encoder with cross-attention (12 layers, 768 wide): 224M
  parameters.
- blip-2: Salesforce/blip2-itm-vit-g's shape, Blip2Config() = EVA ViT-g/14 at 224 px (39
  layers, 1408 wide) + a BERT-base Q-Former with 32 query tokens that reads text
  (use_qformer_text_input): about 1.2B parameters, 4.6 GB in float32 (fits a 24 GiB machine;
  slow on CPU, hence fewer candidates and runs by default).

For each shape and candidate count n: the first n photos of the shared Unsplash sample
(decoded RGB, as the re-ranking reads them from the image cache; decoding is not timed), one
warm-up call, then the median over --runs of the wall time of ``score(text, images)``
(preprocessing + forward passes in batches of 16), divided by n. torch's thread count and
/proc/loadavg are printed: figures from a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import require_photos

from clipsql.images import open_rgb
from clipsql.search.model_rerank import ItmReranker

TEXT = "a dog running on a sandy beach at sunset"
#: A wordpiece vocabulary big enough to tokenize TEXT as the real BERT vocabulary does (one
#: token per word): the cost depends on the token count, not on the vocabulary.
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TEXT.split()]


def _tokenizer(out: Path):
    from transformers import BertTokenizer

    (out / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return BertTokenizer(str(out / "vocab.txt"), model_max_length=512)


def build_blip(out: Path) -> Path:
    """Salesforce/blip-itm-base-coco's shape (BlipConfig defaults), random weights."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    out.mkdir(parents=True, exist_ok=True)
    model = BlipForImageTextRetrieval(BlipConfig()).eval()
    model.save_pretrained(out)
    size = model.config.vision_config.image_size
    processor = BlipImageProcessor(size={"height": size, "width": size})
    BlipProcessor(image_processor=processor, tokenizer=_tokenizer(out)).save_pretrained(out)
    return out


def build_blip2(out: Path) -> Path:
    """Salesforce/blip2-itm-vit-g's shape (Blip2Config defaults; the Q-Former reads text, as
    the ITM checkpoint's does), random weights; a one-layer OPT text config, which the
    retrieval model does not build."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, BlipImageProcessor

    out.mkdir(parents=True, exist_ok=True)
    config = Blip2Config(
        qformer_config=dict(use_qformer_text_input=True),
        text_config=dict(model_type="opt", hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2),
    )
    model = Blip2ForImageTextRetrieval(config).eval()
    model.save_pretrained(out)
    size = config.vision_config.image_size
    processor = BlipImageProcessor(size={"height": size, "width": size})
    Blip2Processor(image_processor=processor, tokenizer=_tokenizer(out)).save_pretrained(out)
    return out


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 1)[0]
    except OSError:
        return "?"


def measure(family: str, build, images: list, counts: list[int], runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"rerank-{family}-") as folder:
        t0 = time.perf_counter()
        build(Path(folder))
        gc.collect()
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        reranker = ItmReranker(folder, device="cpu")
        loaded = time.perf_counter() - t0
    params = sum(p.numel() for p in reranker.model.parameters())
    print(
        f"{family}: {params / 1e6:.0f}M parameters; built and saved in {built:.1f} s, "
        f"loaded (ItmReranker) in {loaded:.1f} s"
    )
    reranker.score(TEXT, images[:2])  # warm-up
    for n in counts:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            scores = reranker.score(TEXT, images[:n])
            times.append(time.perf_counter() - t0)
            assert scores.shape == (n,)
        median = statistics.median(times)
        print(
            f"  {n} candidates: median {median:.2f} s of {runs} run(s) "
            f"({', '.join(f'{t:.2f}' for t in times)}) = {1000 * median / n:.0f} ms per candidate; load {loadavg()}"
        )
    del reranker
    gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default="9,45", help="candidate counts for blip (default 9,45)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per count for blip (default 3)")
    ap.add_argument("--blip2-candidates", default="9", help="candidate counts for blip-2 (default 9)")
    ap.add_argument("--blip2-runs", type=int, default=2, help="timed runs per count for blip-2 (default 2)")
    ap.add_argument("--families", default="blip,blip-2", help="which shapes (default blip,blip-2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    counts = {
        "blip": [int(x) for x in a.candidates.split(",")],
        "blip-2": [int(x) for x in a.blip2_candidates.split(",")],
    }
    runs = {"blip": a.runs, "blip-2": a.blip2_runs}
    builders = {"blip": build_blip, "blip-2": build_blip2}
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    root = require_photos()
    wanted = max(max(counts[f]) for f in families)
    files = sorted((root / "photos").glob("*.jpg"))[:wanted]
    images = [open_rgb(p.read_bytes()) for p in files]
    sizes = sorted(im.size for im in images)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; load {loadavg()}; "
        f"{len(images)} photos of {sizes[0][0]}x{sizes[0][1]} .. {sizes[-1][0]}x{sizes[-1][1]} px; text {TEXT!r}"
    )
    for family in families:
        measure(family, builders[family], images, counts[family], runs[family])


if __name__ == "__main__":
    main()
