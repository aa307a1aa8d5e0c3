"""`clipsql eval` and clipsql.evaluate on real chdb and DuckDB stores.

A planted-signal embedder makes the right answers known: image i embeds to the unit vector
e_i; a caption of image t embeds to e_t + 1.3 * (sum of e_j over its planted "closer"
images) + 1.0 * (sum of e_j over its planted "tied" images), so exactly the closer images,
and the tied ones with a smaller image_id, rank above t. The expected Recall@k and MRR are
computed here from those planted ranks (and, for the combined kinds, from a numpy
re-implementation of the rank formula), never typed in as numbers.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipsql import cli
from clipsql.db import open_store
from clipsql.errors import BadArgument, ModelError, NotFound, SourceError
from clipsql.evaluate import (
    COMBINED_WEIGHT,
    NEGATIVE_WEIGHT,
    QUERY_KINDS,
    EvalReport,
    evaluate,
    metrics_frame,
    ranks_frame,
    read_captions,
)
from clipsql.queries import get_query
from conftest import jpeg_bytes

ENGINES = ("chdb", "duckdb")
KS = (1, 5, 10)
DIM = 24
#: The coefficient of a planted closer image in a caption's vector (the own image's is 1).
CLOSER = 1.3
N_IMAGES = 14
#: image index -> (width, height): even landscape, odd portrait, 12 square.
SIZES = {i: (40, 40) if i == 12 else (48, 32) if i % 2 == 0 else (32, 48) for i in range(N_IMAGES)}
#: The planted captions: (image index, closer images, tied images).
PLANTED = [
    (0, [], []),
    (0, [3], []),
    (0, [2], []),
    (1, [2, 4], []),
    (1, [], [0]),  # a tie with a smaller image_id: ranks below it
    (2, [4, 6, 5], []),
    (3, [], [5]),  # a tie with a larger image_id: ranks above it
    (4, [], []),
    (5, [j for j in range(12) if j != 5], []),  # rank 12: missed at 10
    (6, [0, 1, 2, 3, 4, 5, 7, 8, 9, 10], []),  # rank 11: missed at 10
    (7, [9, 11], [3]),
    (8, [1, 2, 3, 4, 5, 6, 7, 9], []),  # rank 9: found at 10, not at 5
    (12, [0, 1], []),
    (9, [], []),
    (10, [11], []),
    (11, [13], [10]),
    (13, [], []),
    (8, [2, 4], []),  # second captions: combined queries that miss rank 1
    (6, [1], []),
]
#: Captions whose image is missing or undecodable: recorded, no query.
BROKEN = [
    ("broken.jpg", "a file that is no image"),
    ("broken.jpg", "the same broken file again"),
    ("gone.jpg", "an image that is not there"),
]


def image_name(i: int) -> str:
    return f"img{i:02d}.png"


def orientation(i: int) -> str:
    w, h = SIZES[i]
    return "landscape" if w > h else "portrait" if w < h else "square"


def caption_text(n: int) -> str:
    image, closer, tied = PLANTED[n]
    return f"caption {n} of {image_name(image)}, {len(closer)} closer and {len(tied)} tied"


def planted_vector(n: int) -> np.ndarray:
    image, closer, tied = PLANTED[n]
    v = np.zeros(DIM, np.float64)
    v[image] = 1.0
    v[closer] = CLOSER
    v[tied] = 1.0
    return v


def planted_rank(n: int, same_orientation: bool = False) -> int:
    image, closer, tied = PLANTED[n]
    keep = (lambda j: orientation(j) == orientation(image)) if same_orientation else (lambda j: True)
    return 1 + sum(keep(j) for j in closer) + sum(keep(j) and image_name(j) < image_name(image) for j in tied)


def expected_metrics(ranks) -> dict:
    ranks = np.asarray(ranks, dtype=float)
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in KS}
    out["mrr"] = float(np.mean(1.0 / ranks))
    out["queries"] = len(ranks)
    return out


class PlantedEmbedder:
    """embed_images: the image's red channel at (0, 0) names its index i -> e_i;
    embed_texts: a planted caption -> :func:`planted_vector`, normalized."""

    name = "planted"
    dim = DIM

    def __init__(self):
        self.texts = {caption_text(n): planted_vector(n) for n in range(len(PLANTED))}
        self.image_calls = 0

    def embed_images(self, images):
        self.image_calls += 1
        out = np.zeros((len(images), DIM), np.float32)
        for row, picture in enumerate(images):
            out[row, picture.getpixel((0, 0))[0]] = 1.0
        return out

    def embed_texts(self, texts):
        vectors = np.stack([self.texts[t] for t in texts])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def all_captions() -> list[tuple[str, str]]:
    """(image file, caption) in file order: the planted ones, the broken ones in between."""
    rows = [(image_name(PLANTED[n][0]), caption_text(n)) for n in range(len(PLANTED))]
    return rows[:4] + BROKEN[:2] + rows[4:] + BROKEN[2:]


def write_flickr8k(path, rows):
    counter: dict[str, int] = {}
    lines = []
    for image, caption in rows:
        lines.append(f"{image}#{counter.get(image, 0)}\t{caption}")
        counter[image] = counter.get(image, 0) + 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path, rows):
    # Kaggle style: some captions quoted, some with bare commas.
    lines = ["image,caption"]
    for k, (image, caption) in enumerate(rows):
        lines.append(f'{image},"{caption}"' if k % 2 else f"{image},{caption}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_coco(path, rows):
    names = list(dict.fromkeys(image for image, _ in rows))
    document = {
        "info": {},
        "images": [{"id": 100 + k, "file_name": name, "width": 1, "height": 1} for k, name in enumerate(names)],
        "annotations": [
            {"id": 7 + k, "image_id": 100 + names.index(image), "caption": caption}
            for k, (image, caption) in enumerate(rows)
        ],
    }
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def planted_set(tmp_path_factory):
    """A folder of the planted images (PNG, lossless, so the red channel survives) plus a
    broken file, and the captions in the three formats."""
    root = tmp_path_factory.mktemp("eval-planted")
    images = root / "planted"
    images.mkdir()
    for i in range(N_IMAGES):
        Image.new("RGB", SIZES[i], (i, 0, 0)).save(images / image_name(i))
    (images / "broken.jpg").write_bytes(b"<html>not an image</html>")
    rows = all_captions()
    files = {
        "flickr8k": write_flickr8k(root / "Flickr8k.token.txt", rows),
        "csv": write_csv(root / "captions.txt", rows),
        "coco": write_coco(root / "captions_val.json", rows),
    }
    return images, files


def backend(tmp_path, engine: str) -> dict:
    return dict(
        store=tmp_path / f"store-{engine}",
        duckdb=str(tmp_path / f"store-{engine}" / "eval.duckdb") if engine == "duckdb" else None,
    )


def open_backend(kwargs: dict):
    return open_store(kwargs["store"], duckdb=kwargs["duckdb"])


def metrics_by_kind(report: EvalReport) -> dict[str, dict]:
    return {row["query_kind"]: row for row in report.metrics.to_dict(orient="records")}


def assert_metrics(actual: dict, expected: dict) -> None:
    assert actual["queries"] == expected["queries"]
    for key in [f"recall@{k}" for k in KS] + ["mrr"]:
        assert actual[key] == pytest.approx(expected[key], abs=1e-9), key


# --- a numpy re-implementation of the ranks, for the combined query kinds -----------------


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def reference_ranks(queries: dict[int, np.ndarray], targets: dict[int, int]) -> dict[int, int]:
    """rank = 1 + images strictly closer by cosine distance, or as close with a smaller name.

    The query is rounded to float32 as stored; against the one-hot image vectors its cosine
    with image i is q[i] / |q|, so two images tie exactly when their coefficients are equal
    float32 numbers, on every engine. Other gaps must be clear of float32 rounding."""
    images = {i: np.eye(DIM)[i] for i in range(N_IMAGES)}
    out = {}
    for cid, q in queries.items():
        t = targets[cid]
        stored = unit(q).astype(np.float32).astype(np.float64)
        distance = {i: 1.0 - float(stored @ v) / float(np.linalg.norm(stored)) for i, v in images.items()}
        gaps = [abs(distance[i] - distance[t]) for i in images if i != t]
        assert all(g == 0.0 or g > 1e-5 for g in gaps), "the planted data must not hold near-ties"
        out[cid] = 1 + sum(
            1
            for i in images
            if i != t and (distance[i] < distance[t] or (distance[i] == distance[t] and image_name(i) < image_name(t)))
        )
    return out


def reference_queries(kind: str) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """The documented composition of the `combined` and `negative` query vectors, per caption."""
    rows = [(n, PLANTED[n][0]) for n in range(len(PLANTED))]
    by_image: dict[int, list[int]] = {}
    for n, image in rows:
        by_image.setdefault(image, []).append(n)
    order = sorted(by_image, key=image_name)
    queries = {}
    for n, image in rows:
        own = unit(planted_vector(n))
        group = by_image[image]
        if kind == "combined" and len(group) > 1:
            other = group[(group.index(n) + 1) % len(group)]
            queries[n] = own + COMBINED_WEIGHT * unit(planted_vector(other))
        if kind == "negative":
            next_image = order[(order.index(image) + 1) % len(order)]
            queries[n] = own + NEGATIVE_WEIGHT * unit(planted_vector(by_image[next_image][0]))
    return queries, {n: image for n, image in rows}


# --- the planted ranks on both engines ---------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_planted_ranks_give_the_exact_recall_and_mrr(planted_set, tmp_path, engine):
    images, files = planted_set
    kwargs = backend(tmp_path, engine)
    report = evaluate(images, files["flickr8k"], embedder=PlantedEmbedder(), batch_size=4, progress=False, **kwargs)

    assert report.name == "planted" and report.model == "planted" and report.captions_format == "flickr8k"
    metrics = metrics_by_kind(report)
    assert list(metrics) == list(QUERY_KINDS)
    assert_metrics(metrics["plain"], expected_metrics([planted_rank(n) for n in range(len(PLANTED))]))
    assert_metrics(metrics["filtered"], expected_metrics([planted_rank(n, True) for n in range(len(PLANTED))]))
    for kind in ("combined", "negative"):
        queries, targets = reference_queries(kind)
        assert_metrics(metrics[kind], expected_metrics(list(reference_ranks(queries, targets).values())))
    # The planted set exercises every case: found first, found at 2..10, missed beyond 10.
    ranks = [planted_rank(n) for n in range(len(PLANTED))]
    assert 1 in ranks and any(1 < r <= 5 for r in ranks) and any(5 < r <= 10 for r in ranks) and max(ranks) > 10
    assert metrics["plain"]["mean_candidates"] == N_IMAGES
    assert metrics["filtered"]["mean_candidates"] < N_IMAGES

    with open_backend(kwargs) as db:
        per_caption = ranks_frame(db, "planted", "plain")
        filtered = ranks_frame(db, "planted", "filtered")
        captions = db.query_df("SELECT caption_id, caption FROM eval_captions")
    caption_ids = dict(zip(captions["caption"], captions["caption_id"].astype(int)))
    expected = {caption_ids[caption_text(n)]: planted_rank(n) for n in range(len(PLANTED))}
    assert dict(zip(per_caption["caption_id"].astype(int), per_caption["rank"].astype(int))) == expected
    expected = {caption_ids[caption_text(n)]: planted_rank(n, True) for n in range(len(PLANTED))}
    assert dict(zip(filtered["caption_id"].astype(int), filtered["rank"].astype(int))) == expected
    assert per_caption["caption_id"].tolist() == sorted(per_caption["caption_id"])


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_and_undecodable_images_are_recorded_not_fatal(planted_set, tmp_path, engine):
    images, files = planted_set
    kwargs = backend(tmp_path, engine)
    report = evaluate(images, files["flickr8k"], embedder=PlantedEmbedder(), progress=False, **kwargs)
    assert report.counts == {
        "images": N_IMAGES + 2,
        "images_ok": N_IMAGES,
        "images_failed": 2,
        "captions": len(PLANTED) + 3,
        "captions_evaluated": len(PLANTED),
        "captions_skipped": 3,
    }
    failures = report.failures.set_index("image_id")
    assert failures.loc["gone.jpg", "reason"] == "missing" and failures.loc["gone.jpg", "captions"] == 1
    assert failures.loc["broken.jpg", "reason"] == "not_an_image" and failures.loc["broken.jpg", "captions"] == 2
    assert report.failure_reasons == {"missing": 1, "not_an_image": 1}
    text = report.format()
    assert "2 images failed" in text and "missing: 1" in text and "3 captions without a query" in text
    with open_backend(kwargs) as db:
        rows = db.query_df("SELECT image_id, status, reason FROM eval_images ORDER BY image_id")
    assert rows[rows["status"] == "failed"]["image_id"].tolist() == ["broken.jpg", "gone.jpg"]
    assert (rows["status"] == "ok").sum() == N_IMAGES


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rerun_replaces_the_set_and_doubles_nothing(planted_set, tmp_path, engine):
    images, files = planted_set
    kwargs = backend(tmp_path, engine)
    tables = ("eval_sets", "eval_images", "eval_captions", "eval_image_embeddings", "eval_caption_embeddings")

    def counts():
        final = " FINAL" if engine == "chdb" else ""
        with open_backend(kwargs) as db:
            return {t: int(db.query_df(f"SELECT count() AS n FROM {t}{final}")["n"].iloc[0]) for t in tables}

    first = evaluate(images, files["flickr8k"], embedder=PlantedEmbedder(), progress=False, **kwargs)
    before = counts()
    again = evaluate(images, files["flickr8k"], embedder=PlantedEmbedder(), progress=False, **kwargs)
    assert counts() == before
    assert before["eval_sets"] == 1 and before["eval_captions"] == len(PLANTED) + 3
    pd.testing.assert_frame_equal(first.metrics, again.metrics)

    # A smaller load under the same name: only its rows are read (the first 3 images).
    small = evaluate(images, files["flickr8k"], embedder=PlantedEmbedder(), limit=3, progress=False, **kwargs)
    kept = [n for n in range(len(PLANTED)) if PLANTED[n][0] in (0, 1)]
    assert small.counts["images"] == 3 and small.counts["captions_evaluated"] == len(kept)
    with open_backend(kwargs) as db:
        ranks = ranks_frame(db, "planted")
        sets = get_query("eval_sets").run(db, eval_set=None)
    assert len(ranks) == len(kept) and ranks["candidates"].max() == 2  # img00 and img01; broken.jpg failed
    assert sets["images"].tolist() == [3] and sets["eval_set"].tolist() == ["planted"]
    assert counts()["eval_sets"] == 1

    # Another name is another set, side by side.
    other = evaluate(images, files["flickr8k"], embedder=PlantedEmbedder(), name="planted-b", progress=False, **kwargs)
    assert other.counts["images"] == N_IMAGES + 2
    with open_backend(kwargs) as db:
        assert get_query("eval_sets").run(db, eval_set=None)["eval_set"].tolist() == ["planted", "planted-b"]
        assert int(metrics_frame(db, "planted", kinds=["plain"])["queries"].iloc[0]) == len(kept)


def test_an_open_store_is_used_and_left_open(planted_set, tmp_path):
    images, files = planted_set
    with open_store(tmp_path, duckdb=":memory:") as db:
        report = evaluate(
            images,
            files["csv"],
            embedder=PlantedEmbedder(),
            db=db,
            kinds=["plain", "filtered"],
            ks=(1, 2, 3),
            progress=False,
        )
        assert report.metrics["query_kind"].tolist() == ["plain", "filtered"]
        ranks = [planted_rank(n) for n in range(len(PLANTED))]
        assert report.metrics["recall@2"].iloc[0] == pytest.approx(np.mean(np.asarray(ranks) <= 2))
        assert len(ranks_frame(db, "planted")) == len(PLANTED)  # still open


# --- caption formats ---------------------------------------------------------------------


def test_the_three_caption_formats_read_the_same_captions(planted_set):
    _, files = planted_set
    expected = all_captions()
    for fmt, path in files.items():
        found, captions = read_captions(path)
        assert found == fmt
        assert [(c.image_id, c.caption) for c in captions] == expected, fmt
        assert read_captions(path, fmt)[1] == captions
    _, captions = read_captions(files["flickr8k"])
    assert [c.line for c in captions[:3]] == [1, 2, 3]
    _, captions = read_captions(files["csv"])
    assert captions[0].line == 2  # after the header
    assert "," in captions[0].caption  # an unquoted caption with a comma stays whole


@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_every_format_gives_the_same_metrics(planted_set, tmp_path, fmt):
    images, files = planted_set
    reports = [
        evaluate(
            images,
            files[f],
            embedder=PlantedEmbedder(),
            progress=False,
            store=tmp_path,
            duckdb=":memory:",
            kinds=["plain"],
        )
        for f in ("flickr8k", fmt)
    ]
    assert reports[1].captions_format == fmt
    pd.testing.assert_frame_equal(reports[0].metrics, reports[1].metrics)


def test_flickr8k_lines_without_a_number_and_real_kaggle_quoting(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_text('a.jpg\tA dog .\n\nb.jpg#3\tTwo "dogs" , playing .\r\n', encoding="utf-8")
    assert [(c.image_id, c.caption, c.line) for c in read_captions(path)[1]] == [
        ("a.jpg", "A dog .", 1),
        ("b.jpg", 'Two "dogs" , playing .', 3),
    ]
    path = tmp_path / "captions.txt"
    path.write_text(
        'image,caption\n1001773457_577c3a7d70.jpg,"A black dog and a spotted dog are fighting"\n'
        "1001773457_577c3a7d70.jpg,A black dog and a tri-colored dog playing with each other on the road .\n"
        '1002674143_1b742ab4b8.jpg,"A little girl covered in paint sits in front of a painted rainbow '
        'with her hands in a bowl ."\n',
        encoding="utf-8",
    )
    fmt, captions = read_captions(path)
    assert fmt == "csv" and [c.line for c in captions] == [2, 3, 4]
    assert captions[0].caption == "A black dog and a spotted dog are fighting"


@pytest.mark.parametrize(
    "name, text, line, message",
    [
        ("a.txt", "a.jpg#0\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0 no tab here\n", 3, "expected 'name.jpg#N<TAB>caption'"),
        ("a.txt", "a.jpg#0\tA dog .\nb.jpg#0\t   \n", 2, "caption is empty"),
        ("a.txt", "a.jpg#0\tA dog .\n../etc/passwd#0\tescape\n", 2, "must be a relative path"),
        ("a.txt", "a.jpg#0\tA dog .\n/abs/b.jpg#0\tescape\n", 2, "must be a relative path"),
        ("a.csv", "image,caption\na.jpg,A dog .\nb.jpg\n", 3, "expected 'name.jpg,caption'"),
        ("a.csv", "picture,text\na.jpg,A dog .\n", 1, "cannot tell the captions format"),
        (
            "a.json",
            '{\n "images": [{"id": 1, "file_name": "a.jpg"}],\n "annotations": [\n  {"image_id": 1 "caption": "x"}]}',
            4,
            "not valid JSON",
        ),
        (
            "a.json",
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": "x"}, '
            '{"image_id": 2, "caption": "y"}]}',
            "annotations[1]",
            'is not the "id"',
        ),
        ("a.json", '{"images": [{"id": 1}], "annotations": []}', "images[0]", 'needs "id" and "file_name"'),
        ("a.json", '{"annotations": []}', 1, 'the lists "images" and "annotations"'),
        ("a.txt", "\n\n", 1, "cannot tell the captions format"),
        ("a.txt", "just some words\n", 1, "cannot tell the captions format"),
    ],
)
def test_a_bad_captions_file_names_the_file_and_line(tmp_path, name, text, line, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=re.escape(message)) as info:
        read_captions(path)
    assert str(info.value).startswith(f"{path}:{line}:")


def test_undecodable_text_and_empty_files_are_errors_too(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_bytes(b"a.jpg#0\tA dog .\nb.jpg#0\tA caf\xe9 .\n")
    with pytest.raises(SourceError, match=r"caps\.txt:2: not UTF-8"):
        read_captions(path)
    path.write_text("image,caption\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"caps\.txt:1: no captions"):
        read_captions(path)
    with pytest.raises(NotFound, match="does not exist"):
        read_captions(tmp_path / "nope.txt")
    with pytest.raises(BadArgument, match="captions format"):
        read_captions(path, "xml")


def test_bad_arguments_are_refused_before_any_work(planted_set, tmp_path):
    images, files = planted_set
    embedder = PlantedEmbedder()
    for kwargs, message in [
        ({"limit": 0}, "limit"),
        ({"batch_size": 0}, "batch_size"),
        ({"name": ""}, "name"),
        ({"ks": (1, 5)}, "ks"),
        ({"kinds": ["plain", "fancy"]}, "query kinds"),
    ]:
        with pytest.raises(BadArgument, match=message):
            evaluate(
                images,
                files["flickr8k"],
                embedder=embedder,
                store=tmp_path,
                duckdb=":memory:",
                progress=False,
                **kwargs,
            )
    with pytest.raises(NotFound, match="images folder"):
        evaluate(tmp_path / "nope", files["flickr8k"], embedder=embedder, store=tmp_path, duckdb=":memory:")
    with pytest.raises(BadArgument, match="lacks embed_texts"):
        evaluate(
            images,
            files["flickr8k"],
            embedder=type("Half", (), {"embed_images": None})(),
            store=tmp_path,
            duckdb=":memory:",
        )
    assert embedder.image_calls == 0


def test_vectors_of_the_wrong_shape_are_a_model_error(planted_set, tmp_path):
    images, files = planted_set

    class Narrow(PlantedEmbedder):
        def embed_texts(self, texts):
            return super().embed_texts(texts)[:, : DIM - 1]

    with pytest.raises(ModelError, match=rf"text vectors of shape \(\d+, {DIM - 1}\), expected"):
        evaluate(images, files["flickr8k"], embedder=Narrow(), store=tmp_path, duckdb=":memory:", progress=False)


# --- the query texts ---------------------------------------------------------------------


def test_eval_ranks_and_eval_metrics_share_one_rank_block():
    def block(name):
        m = re.search(r"-- ranks: begin.*?-- ranks: end", get_query(name).sql, re.DOTALL)
        assert m, name
        return m.group(0)

    assert block("eval_ranks") == block("eval_metrics")
    for name in ("eval_ranks", "eval_metrics", "eval_sets", "eval_failures"):
        query = get_query(name)
        assert query.description and all(p.meaning for p in query.parameters.values())


# --- the command, with the tiny random CLIP ----------------------------------------------


def run_cli(argv: list) -> int:
    """`clipsql.cli.main` with every argument as text, as a shell passes it."""
    return cli.main([str(a) for a in argv])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_command_with_the_tiny_clip_model(tiny_clip, tmp_path, capsys, engine):
    images = tmp_path / "flickr-mini"
    images.mkdir()
    rows = []
    for i in range(6):
        (images / f"{1000 + i}_ab.jpg").write_bytes(jpeg_bytes(i, size=(96, 64) if i % 2 else (64, 96)))
        rows += [
            (f"{1000 + i}_ab.jpg", f"A photo number {i} of colored blobs ."),
            (f"{1000 + i}_ab.jpg", f"Blobs, {i} of them , in color ."),
        ]
    (images / "truncated.jpg").write_bytes(jpeg_bytes(9)[:300])
    rows.append(("truncated.jpg", "A cut file ."))
    captions = write_csv(tmp_path / "captions.txt", rows)
    store = ["--store", tmp_path / "store"] + (
        ["--duckdb", tmp_path / "store" / "e.duckdb"] if engine == "duckdb" else []
    )
    code = run_cli(
        [
            "eval",
            "--images",
            images,
            "--captions",
            captions,
            "--model",
            tiny_clip,
            "--device",
            "cpu",
            "--batch-size",
            4,
            "-q",
            *store,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "query_kind" in out and "recall@10" in out and "1 images failed (undecodable: 1)" in out
    report = json.loads((tmp_path / "store" / "eval" / "flickr-mini.json").read_text(encoding="utf-8"))
    assert f"JSON report: {tmp_path / 'store' / 'eval' / 'flickr-mini.json'}" in err
    assert report["model"] == tiny_clip.name and report["counts"]["captions_evaluated"] == 12
    plain = next(m for m in report["metrics"] if m["query_kind"] == "plain")
    # 6 images: every rank is within 10, whatever the random model ranks first; MRR is the mean
    # of 1 / rank over the per-caption ranks the store holds.
    assert plain["queries"] == 12 and plain["recall@10"] == 1.0 and plain["mean_candidates"] == 6
    with open_backend(
        {"store": tmp_path / "store", "duckdb": tmp_path / "store" / "e.duckdb" if engine == "duckdb" else None}
    ) as db:
        ranks = ranks_frame(db, "flickr-mini", "plain")["rank"].astype(float)
    assert len(ranks) == 12 and plain["mrr"] == pytest.approx(float((1 / ranks).mean()))
    assert report["failure_reasons"] == {"undecodable": 1}

    # --json, --name, --kind; then a malformed file: exit 2 with file and line.
    code = run_cli(
        [
            "eval",
            "--images",
            images,
            "--captions",
            captions,
            "--model",
            tiny_clip,
            "--device",
            "cpu",
            "--name",
            "mini",
            "--kind",
            "plain",
            "--json",
            tmp_path / "out.json",
            "-q",
            *store,
        ]
    )
    assert code == 0
    again = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert again["name"] == "mini" and [m["query_kind"] for m in again["metrics"]] == ["plain"]
    assert again["metrics"][0]["mrr"] == pytest.approx(plain["mrr"], abs=1e-6)
    capsys.readouterr()
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg#0\tfine\nb.jpg#0 broken\n", encoding="utf-8")
    code = run_cli(["eval", "--images", images, "--captions", bad, "--model", tiny_clip, *store])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"clipsql: error: {bad}:2: expected 'name.jpg#N<TAB>caption' (Flickr8k), got 'b.jpg#0 broken'"
    )
