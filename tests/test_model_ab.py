"""Model A/B (issue 14, items 3 and 4) on real chdb and DuckDB stores, with two tiny random
CLIP models of different widths (32 and 48) in one store:

- queries/model_overlap.sql through clipsql.evaluate.compare_models: a model against itself
  agrees totally; two models give the overlap and Spearman's footrule that numpy computes
  from the stored vectors;
- queries/neighbour_distances.sql: one row per model, its quantiles those of numpy
  (method='inverted_cdf') over the same MD5-ordered sample;
- `clipsql eval --model A --model B`: both models side by side, each as its own evaluation;
- captions in several languages and scripts (TSV with a language column, COCO JSON with a
  "language" field): `--language` picks one, and the text comes back from SQL unchanged.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from clipsql import cli, refresh
from clipsql.db import open_store
from clipsql.embed import cached_embedder
from clipsql.errors import BadArgument, ModelError, NotFound, SourceError
from clipsql.evaluate import compare_models, evaluate, evaluate_models, read_captions, select_language
from clipsql.queries import get_query
from conftest import build_tiny_clip, jpeg_bytes

ENGINES = ("chdb", "duckdb")
#: label -> (width, torch seed) of the two tiny models.
MODELS = {"clip-a": (32, 1), "clip-b": (48, 2)}
N_PHOTOS = 10
TEXT = "a red bicycle by the sea"
QUANTILES = (1, 5, 25, 50, 75, 95)
#: Captions in several scripts, each as the file writes it: (image index, caption, language).
MULTILINGUAL = [
    (0, "Ein Hund läuft über die Straße", "de"),
    (1, "Zwei Möwen am Strand, ganz früh", "de"),
    (0, "一只狗在街上跑", "zh"),
    (1, "海滩上的两只海鸥", "zh"),
    (2, "红色的自行车 🚲", "ZH"),  # a language tag in upper case is the same language
    (0, "كلب يركض في الشارع", "ar"),
    (2, "دراجة حمراء بجانب البحر", "ar"),
    (1, "🐕🌊☀️ 🎉", "und"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """{label: checkpoint directory} of the two tiny models (directory names = labels)."""
    root = tmp_path_factory.mktemp("ab-models")
    return {label: str(build_tiny_clip(root / label, dim=dim, seed=seed)) for label, (dim, seed) in MODELS.items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("ab-photos")
    for i in range(N_PHOTOS):
        (path / f"photo{i:02d}.jpg").write_bytes(jpeg_bytes(100 + i, size=(64 + 4 * i, 48)))
    return path


@pytest.fixture(scope="module", params=ENGINES)
def store(request, tmp_path_factory, models, folder):
    """A store of each engine holding both models' vectors of the folder's photos."""
    root = tmp_path_factory.mktemp(f"ab-{request.param}")
    backend = dict(store=root, duckdb=str(root / "s.duckdb") if request.param == "duckdb" else None)
    for label, path in models.items():
        refresh(folder, model=path, model_name=label, device="cpu", progress=False, **backend)
    return backend


def stored_vectors(db, model: str) -> tuple[list[str], np.ndarray]:
    frame = db.query_clickhouse(
        "SELECT photo_id, embedding FROM photo_embeddings FINAL WHERE model = {model:String} ORDER BY photo_id",
        {"model": model},
    )
    return frame["photo_id"].tolist(), np.stack([np.asarray(v, np.float64) for v in frame["embedding"]])


def cosine_distances(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    return 1 - vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)


def top_k(db, model: str, source: str, k: int) -> list[str]:
    """The model's top-k photo_ids for TEXT by numpy: cosine distance, ties by photo_id."""
    ids, vectors = stored_vectors(db, model)
    query = cached_embedder(source, model, "cpu", towers="text").embed_texts([TEXT])[0].astype(np.float64)
    distance = cosine_distances(vectors, query)
    order = np.lexsort((np.array(ids), distance))
    gaps = np.diff(distance[order])
    assert np.all(gaps > 1e-6), "the test photos must not hold near-ties"
    return [ids[i] for i in order[:k]]


def footrule(a: list[str], b: list[str], k: int) -> int:
    """Spearman's footrule F^(k+1) of Fagin, Kumar & Sivakumar 2003, written out."""
    rank_a = {p: r for r, p in enumerate(a, 1)}
    rank_b = {p: r for r, p in enumerate(b, 1)}
    return sum(abs(rank_a.get(p, k + 1) - rank_b.get(p, k + 1)) for p in set(a) | set(b))


# --- model_overlap ------------------------------------------------------------------------


def test_a_model_compared_with_itself_agrees_totally(store):
    with open_store(**store) as db:
        for label in MODELS:
            row = compare_models(TEXT, label, label, k=5, db=db, device="cpu").iloc[0]
            assert (row["model_a"], row["model_b"], row["k"], row["top_a"], row["top_b"]) == (label, label, 5, 5, 5)
            assert (row["overlap"], row["overlap_share"], row["footrule"], row["footrule_similarity"]) == (5, 1, 0, 1)
        # k beyond the store: both lists are every photo, still the same
        row = compare_models(TEXT, "clip-b", "clip-b", k=50, db=db, device="cpu").iloc[0]
        assert (row["top_a"], row["overlap"], row["overlap_share"], row["footrule_similarity"]) == (10, 10, 1, 1)


def test_two_models_of_different_widths_give_numpys_overlap_and_footrule(store, models):
    k = 6  # of 10 photos: the two lists share 2 or more
    with open_store(**store) as db:
        row = compare_models(TEXT, "clip-a", "clip-b", k=k, db=db, device="cpu").iloc[0]
        a, b = (top_k(db, label, models[label], k) for label in MODELS)
    both = len(set(a) & set(b))
    expected = footrule(a, b, k)
    assert (row["top_a"], row["top_b"], row["overlap"], row["footrule"]) == (k, k, both, expected)
    assert row["overlap_share"] == pytest.approx(both / k)
    assert row["footrule_similarity"] == pytest.approx(1 - expected / (k * (k + 1)))
    assert 0 <= row["footrule_similarity"] <= 1


def test_model_overlap_sql_on_lists_of_known_ranks(store):
    """Vectors brought by hand: model b's query is a's rotated, so the lists are known."""
    with open_store(**store) as db:
        ids, vectors = stored_vectors(db, "clip-a")
        far = get_query("model_overlap").run(
            db, model_a="clip-a", query_a=vectors[0].tolist(), model_b="clip-a", query_b=(-vectors[0]).tolist(), k=3
        )
        # the negated query ranks the photos in reverse: with 10 photos two top-3 lists share none
        assert far.iloc[0][["overlap", "footrule"]].tolist() == [0, 12]  # 2 x (3 + 2 + 1) = k (k + 1)
        assert far.iloc[0]["footrule_similarity"] == 0
        nothing = get_query("model_overlap").run(
            db, model_a="no-such", query_a=[1.0], model_b="no-such", query_b=[1.0], k=3
        )
        assert nothing.iloc[0][["top_a", "top_b", "overlap", "footrule"]].tolist() == [0, 0, 0, 0]
        assert np.isnan(nothing.iloc[0]["overlap_share"]) and np.isnan(nothing.iloc[0]["footrule_similarity"])


def test_compare_models_refuses_bad_input_before_any_work(store):
    with open_store(**store) as db:
        with pytest.raises(BadArgument, match="query text is empty"):
            compare_models("  ", "clip-a", "clip-b", db=db)
        with pytest.raises(BadArgument, match="k must be"):
            compare_models(TEXT, "clip-a", "clip-b", k=0, db=db)
        with pytest.raises(BadArgument, match="device"):
            compare_models(TEXT, "clip-a", "clip-b", db=db, device="gpu")
        with pytest.raises(NotFound, match="model 'clip-c' has no vectors"):
            compare_models(TEXT, "clip-a", "clip-c", db=db, device="cpu")


# --- neighbour_distances --------------------------------------------------------------------


def test_neighbour_distances_give_one_row_per_model_with_numpys_quantiles(store):
    sample, k = 7, 3
    with open_store(**store) as db:
        frame = get_query("neighbour_distances").run(db, sample=sample, k=k)
        assert frame["model"].tolist() == list(MODELS)
        for row in frame.to_dict(orient="records"):
            ids, vectors = stored_vectors(db, row["model"])
            assert (row["photos"], row["sampled"], row["k"]) == (N_PHOTOS, sample, k)
            # the sample: the first `sample` photos by their MD5 bytes
            chosen = sorted(ids, key=lambda p: (hashlib.md5(p.encode()).digest(), p))[:sample]
            nearest, kth = [], []
            for photo in chosen:
                i = ids.index(photo)
                distance = np.sort(np.delete(cosine_distances(vectors, vectors[i]), i))
                nearest.append(distance[0])
                kth.append(distance[k - 1])
            for name, values in (("nearest", nearest), ("kth", kth)):
                got = [row[f"{name}_p{q}"] for q in QUANTILES]
                want = [np.quantile(values, q / 100, method="inverted_cdf") for q in QUANTILES]
                np.testing.assert_allclose(got, want, atol=2e-5)
                assert got == sorted(got), f"{row['model']}: {name} quantiles out of order"
            assert all(row[f"nearest_p{q}"] <= row[f"kth_p{q}"] + 1e-6 for q in QUANTILES)
        # k past the other photos: no k-th neighbour, so NULL; the nearest ones stay
        frame = get_query("neighbour_distances").run(db, sample=100, k=N_PHOTOS)
        assert frame["sampled"].tolist() == [N_PHOTOS, N_PHOTOS]
        assert frame["kth_p50"].isna().all() and frame["nearest_p50"].notna().all()


# --- eval with several models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, folder):
    """Captions of the folder's first 5 photos: an English CSV and the multilingual TSV and COCO."""
    root = tmp_path_factory.mktemp("ab-captions")
    csv_lines = ["image,caption"]
    for i in range(5):
        csv_lines += [f"photo{i:02d}.jpg,A photo of blobs number {i}", f"photo{i:02d}.jpg,Colored shapes {i}"]
    (root / "captions.txt").write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    tsv = ["image\tcaption\tlanguage"] + [f"photo{i:02d}.jpg\t{text}\t{lang}" for i, text, lang in MULTILINGUAL]
    (root / "multi.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")
    coco = {
        "images": [{"id": 7 + i, "file_name": f"photo{i:02d}.jpg"} for i in range(3)],
        "annotations": [
            {"id": n, "image_id": 7 + i, "caption": text, "language": lang}
            for n, (i, text, lang) in enumerate(MULTILINGUAL)
        ],
    }
    (root / "multi.json").write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
    return root


def test_eval_prints_several_models_side_by_side(store, models, folder, captioned, tmp_path, capsys):
    argv = ["eval", "--images", folder, "--captions", captioned / "captions.txt", "--name", "mini"]
    argv += ["--model", models["clip-a"], "--model", models["clip-b"], "--device", "cpu", "--kind", "plain"]
    argv += ["--kind", "negative", "--json", tmp_path / "ab.json", "-q", "--store", store["store"]]
    argv += ["--duckdb", store["duckdb"]] if store["duckdb"] else []
    assert cli.main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("query_kind"))
    assert header.split() == ["query_kind", "metric", "clip-a", "clip-b"]
    report = json.loads((tmp_path / "ab.json").read_text(encoding="utf-8"))
    assert report["models"] == ["clip-a", "clip-b"]
    assert [r["name"] for r in report["reports"]] == ["mini@clip-a", "mini@clip-b"]
    table = {(row["query_kind"], row["metric"]): row for row in report["side_by_side"]}
    assert len(table) == 2 * 7 and table[("plain", "queries")]["clip-b"] == 10
    with open_store(**store) as db:
        assert set(get_query("eval_sets").run(db, eval_set=None)["eval_set"]) >= {"mini@clip-a", "mini@clip-b"}
        # each column is that model evaluated alone on the same captions
        for label in MODELS:
            alone = evaluate(
                folder,
                captioned / "captions.txt",
                model=models[label],
                name=f"alone-{label}",
                device="cpu",
                kinds=["plain", "negative"],
                db=db,
                progress=False,
            )
            for row in alone.metrics.to_dict(orient="records"):
                for metric in ("queries", "recall@1", "recall@5", "mrr", "mean_rank"):
                    assert table[(row["query_kind"], metric)][label] == pytest.approx(row[metric]), (label, metric)


def test_evaluate_models_refuses_bad_models_before_any_work(folder, captioned, models, tmp_path):
    common = dict(store=tmp_path, duckdb=str(tmp_path / "s.duckdb"), progress=False, device="cpu")
    captions = captioned / "captions.txt"
    with pytest.raises(BadArgument, match="'clip-a' is given twice"):
        evaluate_models(folder, captions, [models["clip-a"], models["clip-a"]], **common)
    with pytest.raises(ModelError, match="does not exist"):
        evaluate_models(folder, captions, [models["clip-a"], str(tmp_path / "nope")], **common)
    with pytest.raises(BadArgument, match="model_names must name each"):
        evaluate_models(folder, captions, [models["clip-a"]], model_names=["x", "y"], **common)
    with pytest.raises(BadArgument, match="one or more"):
        evaluate_models(folder, captions, [], **common)
    assert not (tmp_path / "s.duckdb").exists()  # no store was even opened


# --- captions in other languages -----------------------------------------------------------------


def test_multilingual_tsv_and_coco_read_the_same_captions_unchanged(captioned):
    expected = [(f"photo{i:02d}.jpg", text, lang) for i, text, lang in MULTILINGUAL]
    for name, fmt in (("multi.tsv", "tsv"), ("multi.json", "coco")):
        found, captions = read_captions(captioned / name)
        assert found == fmt
        assert [(c.image_id, c.caption, c.language) for c in captions] == expected
    _, captions = read_captions(captioned / "multi.tsv")
    assert [c.caption for c in select_language(captions, "zh")] == [
        t for _, t, lang in MULTILINGUAL if lang.casefold() == "zh"
    ]
    assert [c.line for c in select_language(captions, " AR ")] == [7, 8]
    with pytest.raises(BadArgument, match=r"in language 'fr'; its languages: ZH, ar, de, und, zh"):
        select_language(captions, "fr", captioned / "multi.tsv")
    _, english = read_captions(captioned / "captions.txt")
    with pytest.raises(BadArgument, match=r"its languages: none \(10 captions without a language\)"):
        select_language(english, "en")


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("picture\tcaption\nphoto00.jpg\tx\n", 1, "expected the header 'image<TAB>caption<TAB>language'"),
        ("image\tcaption\tlanguage\nphoto00.jpg\n", 2, "expected 3 tab-separated fields, got 1"),
        ("image\tcaption\tlanguage\n\nphoto00.jpg\tfine\tde\nphoto01.jpg\t \tde\n", 4, "the caption is empty"),
    ],
)
def test_a_bad_tsv_names_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=message) as info:
        read_captions(path)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_each_language_round_trips_through_the_eval_tables(store, models, folder, captioned):
    for name, language in (("multi.tsv", "zh"), ("multi.json", "ar"), ("multi.tsv", "und")):
        report = evaluate(
            folder,
            captioned / name,
            model=models["clip-a"],
            device="cpu",
            language=language,
            progress=False,
            kinds=["plain"],
            **store,
        )
        want = [t for _, t, lang in MULTILINGUAL if lang.casefold() == language]
        assert report.name == f"{folder.name}-{language}" and report.language == language
        assert report.counts["captions"] == len(want) == report.metrics["queries"][0]
        with open_store(**store) as db:
            stored = db.query_clickhouse(
                "SELECT caption FROM eval_captions FINAL WHERE eval_set = {s:String} ORDER BY caption_id",
                {"s": report.name},
            )["caption"].tolist()
            by_text = db.query_clickhouse(
                "SELECT count() AS n FROM eval_captions FINAL WHERE caption = {c:String}", {"c": want[-1]}
            )["n"][0]
        assert stored == want and by_text >= 1
        assert json.loads(report.to_json())["language"] == language
