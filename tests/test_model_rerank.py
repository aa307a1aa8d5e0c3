"""Model re-ranking (rerank="model:CHECKPOINT"): tiny random BLIP and BLIP-2 image-text
matching checkpoints, written with save_pretrained and loaded back through from_pretrained
(the path a hub name takes), re-score the candidates of text searches on real chdb and
DuckDB stores; the result is always a permutation of the candidates, and checkpoints that
cannot serve are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import searchdata
from clipsql import search
from clipsql.cli import main
from clipsql.db import open_store
from clipsql.errors import BadArgument, ModelError
from clipsql.images import open_rgb
from clipsql.search import model_rerank
from conftest import jpeg_bytes

N = 120
#: Photos without a cached image (their photo_image_url, port 9 of 127.0.0.1, refuses).
UNCACHED = 8
#: A wordpiece vocabulary: BERT's special tokens and the words the tests' queries use.
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "on", "the", "beach", "red", "car", "sunset"]
#: Tiny towers. initializer_range 0.5, not BERT's 0.02: at 0.02 the random vision tower gives
#: every image the same output to 1e-6, and every image the same score.
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, initializer_range=0.5)
SPECIAL = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, sep_token_id=3)


def _tokenizer(out: Path):
    from transformers import BertTokenizer

    (out / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return BertTokenizer(str(out / "vocab.txt"), model_max_length=32)


def _image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": 32, "width": 32})


def build_tiny_blip(out: Path, *, captioning: bool = False) -> Path:
    """A BLIP checkpoint with random weights: BlipForImageTextRetrieval (ITM head), or with
    `captioning` BlipForConditionalGeneration (no ITM head); 32 px images, 2-layer towers."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval, BlipProcessor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(out)
    config = BlipConfig(
        text_config=dict(SMALL, **SPECIAL, vocab_size=len(WORDS), max_position_embeddings=32, encoder_hidden_size=32),
        vision_config=dict(SMALL, image_size=32, patch_size=16),
        projection_dim=16,
        image_text_hidden_size=16,
    )
    torch.manual_seed(0)
    model_class = BlipForConditionalGeneration if captioning else BlipForImageTextRetrieval
    model_class(config).eval().save_pretrained(out)
    BlipProcessor(image_processor=_image_processor(), tokenizer=tokenizer).save_pretrained(out)
    return out


def build_tiny_blip2(out: Path) -> Path:
    """A BLIP-2 Blip2ForImageTextRetrieval checkpoint with random weights: a 2-layer vision
    tower, a Q-Former with 4 query tokens that reads text (use_qformer_text_input, as the ITM
    checkpoints do) over a wordpiece vocabulary (+1 for the `<image>` token Blip2Processor
    adds), and a one-layer OPT text config the retrieval model does not build."""
    import torch
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(out)
    config = Blip2Config(
        vision_config=dict(SMALL, image_size=32, patch_size=16),
        qformer_config=dict(
            SMALL,
            pad_token_id=0,
            vocab_size=len(WORDS) + 1,
            max_position_embeddings=32,
            cross_attention_frequency=1,
            use_qformer_text_input=True,
        ),
        text_config=dict(
            model_type="opt",
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=len(WORDS) + 1,
            word_embed_proj_dim=16,
        ),
        num_query_tokens=4,
        image_text_hidden_size=16,
    )
    torch.manual_seed(0)
    Blip2ForImageTextRetrieval(config).eval().save_pretrained(out)
    Blip2Processor(image_processor=_image_processor(), tokenizer=tokenizer).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("itm")
    return {"blip": build_tiny_blip(root / "blip"), "blip-2": build_tiny_blip2(root / "blip2")}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_clip) -> dict[str, dict]:
    """A chdb store and a DuckDB store with the same N photos (closed after loading: each test
    opens its own), every photo's image cached but the UNCACHED nearest to the test query."""
    from clipsql.embed import ClipEmbedder

    query = ClipEmbedder(str(tiny_clip), device="cpu").embed_texts(["a dog on the beach"])[0]
    nearest = np.argsort(1 - searchdata.vectors(N) @ query, kind="stable")
    uncached = {searchdata.photo_id(int(i)) for i in nearest[:UNCACHED]}
    out = {}
    for engine in ("chdb", "duckdb"):
        root = tmp_path_factory.mktemp(f"rerank-{engine}")
        where = dict(store=root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None)
        with open_store(**where) as db:
            searchdata.load(db, N, model_source=str(tiny_clip))
            db.image_dir.mkdir(parents=True, exist_ok=True)
            for i in range(N):
                if searchdata.photo_id(i) not in uncached:
                    (db.image_dir / f"{searchdata.photo_id(i)}.jpg").write_bytes(jpeg_bytes(i, size=(48, 40)))
        out[engine] = where
    return out


class NoSQL:
    """A store that fails the test if anything reaches it."""

    description = "no-sql"

    def __getattr__(self, name):
        raise AssertionError(f"the store was used ({name})")


def images(n: int) -> list:
    return [open_rgb(jpeg_bytes(i, size=(40 + i, 30))) for i in range(n)]


# --- the model -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["blip", "blip-2"])
def test_itm_scores_are_match_probabilities_one_per_image(checkpoints, family):
    reranker = model_rerank.cached_reranker(str(checkpoints[family]), "cpu")
    assert reranker is model_rerank.cached_reranker(str(checkpoints[family]), "cpu")  # loaded once
    assert reranker.family.model_type == family and reranker.device == "cpu"
    pictures = images(5)
    scores = reranker.score("a dog on the beach", pictures)
    assert scores.shape == (5,) and scores.dtype == np.float64
    assert np.all((scores > 0) & (scores < 1))
    assert len(np.unique(scores)) > 1  # the images differ, so do their scores
    # Batching does not change a score; the order of the images is the order of the scores.
    small = model_rerank.ItmReranker(str(checkpoints[family]), device="cpu", batch_size=2)
    np.testing.assert_allclose(small.score("a dog on the beach", pictures), scores, rtol=1e-5)
    np.testing.assert_allclose(reranker.score("a dog on the beach", pictures[::-1]), scores[::-1], rtol=1e-5)
    assert reranker.score("a dog", []).shape == (0,)
    # A text longer than the text tower's 32 positions is cut to them.
    assert reranker.score(" ".join(["dog"] * 500), pictures[:1]).shape == (1,)


# --- the permutation guarantee -------------------------------------------------------------


def test_check_permutation_names_what_was_dropped_invented_or_repeated():
    model_rerank.check_permutation(["a", "b", "c"], ["c", "a", "b"])
    model_rerank.check_permutation([], [])
    for after, words in [
        (["b", "a"], "dropped ['c']"),
        (["b", "a", "c", "x"], "invented ['x']"),
        (["a", "a", "b", "c"], "repeated ['a']"),
        (["a", "a", "b"], "dropped ['c'], invented [], repeated ['a']"),
    ]:
        with pytest.raises(model_rerank.RerankError, match=words.replace("[", r"\[").replace("]", r"\]")):
            model_rerank.check_permutation(["a", "b", "c"], after)


def test_rerank_order_puts_ties_in_distance_order_and_unscored_last():
    order = model_rerank.rerank_order(np.array([0.2, np.nan, 0.9, 0.2, np.nan, 0.9]))
    assert order.tolist() == [2, 5, 0, 3, 1, 4]


def candidates(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "photo_id": [f"c{i}" for i in range(n)],
            "distance": np.linspace(0.1, 0.5, n),
            "description": ["x"] * n,
            "photo_url": [""] * n,
            "photo_image_url": [None] * n,
        }
    )


class DroppingScorer:
    """A broken re-ranker, as seed document 002's was: it leaves one image out."""

    def score(self, text, pictures):
        return np.linspace(0.9, 0.1, len(pictures))[:-1]


class NaNScorer:
    def score(self, text, pictures):
        return np.full(len(pictures), np.nan)


def test_a_corrupting_reranker_is_caught(tmp_path):
    frame = candidates(4)
    for i in range(4):
        (tmp_path / f"c{i}.jpg").write_bytes(jpeg_bytes(i))
    for scorer in (DroppingScorer(), NaNScorer()):
        with pytest.raises(model_rerank.RerankError, match="one finite score in 0..1 per image"):
            model_rerank.rerank_candidates(frame, "a dog", scorer, tmp_path)


def test_candidate_images_come_from_the_cache_else_the_url(checkpoints, tmp_path, image_server):
    frame = candidates(4)
    (tmp_path / "c0.jpg").write_bytes(jpeg_bytes(0))
    frame.loc[1, "photo_image_url"] = f"{image_server.url}/img/3.jpg"
    frame.loc[2, "photo_image_url"] = f"{image_server.url}/missing.jpg"
    frame.loc[3, "photo_image_url"] = "/etc/passwd"  # never read: only http(s) URLs are fetched
    pictures, unscored = model_rerank.candidate_images(frame, tmp_path)
    assert pictures[0] is not None and pictures[1] is not None and pictures[1].size == (96, 64)
    assert pictures[2] is None and pictures[3] is None
    assert "http_4xx" in unscored["c2"] and "not an http(s) URL" in unscored["c3"] and set(unscored) == {"c2", "c3"}
    reranker = model_rerank.cached_reranker(str(checkpoints["blip"]), "cpu")
    ranked = model_rerank.rerank_candidates(frame, "a dog", reranker, tmp_path)
    assert ranked["photo_id"].tolist()[2:] == ["c2", "c3"]  # unscored: last, in distance order
    assert ranked["rerank_score"].iloc[:2].notna().all() and ranked["rerank_score"].iloc[2:].isna().all()
    assert ranked.attrs["rerank_unscored"] == unscored


# --- searches --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["blip", "blip-2"])
@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_text_search_reranked_is_a_permutation_of_its_candidates(stores, checkpoints, family, engine, caplog):
    rerank = f"model:{checkpoints[family]}"
    reranker = model_rerank.cached_reranker(str(checkpoints[family]), "cpu")
    with open_store(**stores[engine]) as db:
        plain = search.text("a dog on the beach", 12, db=db, device="cpu")
        with caplog.at_level("WARNING", logger="clipsql.search.model_rerank"):
            ranked = search.text("a dog on the beach", 12, db=db, device="cpu", rerank=rerank, overfetch=1)
        cached = [open_rgb((db.image_dir / f"{p}.jpg").read_bytes()) for p in plain["photo_id"][UNCACHED:]]
        paged = search.text("a dog on the beach", 3, db=db, device="cpu", rerank=rerank, overfetch=2, offset=2)
        as_arrow = search.text(
            "a dog on the beach", 12, db=db, device="cpu", rerank=rerank, overfetch=1, output="arrow"
        )
    # The Arrow form: the same rows, no score where there was no image, the unscored in its metadata.
    assert as_arrow.column("photo_id").to_pylist() == ranked["photo_id"].tolist()
    assert as_arrow.column("rerank_score").null_count == UNCACHED
    assert json.loads(as_arrow.schema.metadata[b"rerank_unscored"]) == ranked.attrs["rerank_unscored"]
    assert list(ranked.columns) == search.PHOTO_COLUMNS + ["rerank_score"]
    assert sorted(ranked["photo_id"]) == sorted(plain["photo_id"]) and ranked["photo_id"].is_unique
    by_id = plain.set_index("photo_id")["distance"]
    np.testing.assert_allclose(ranked["distance"], by_id[ranked["photo_id"]].to_numpy())
    # The scored photos first, best match first, with the scores the model gives their images;
    # the UNCACHED photos (no image: their URL refuses) last, in distance order, never dropped.
    scores = reranker.score("a dog on the beach", cached)
    expected = plain["photo_id"][UNCACHED:].to_numpy()[model_rerank.rerank_order(scores)]
    assert ranked["photo_id"].tolist() == list(expected) + plain["photo_id"][:UNCACHED].tolist()
    np.testing.assert_allclose(ranked["rerank_score"][: 12 - UNCACHED], np.sort(scores)[::-1], rtol=1e-5)
    assert ranked["rerank_score"][12 - UNCACHED :].isna().all()
    assert set(ranked.attrs["rerank_unscored"]) == set(plain["photo_id"][:UNCACHED])
    assert "have no image to re-rank" in caplog.text
    # A page of a larger pool: rows 2..5 of the 10 nearest (overfetch 2 x (k 3 + offset 2)), re-ranked.
    pool = plain["photo_id"][:10].tolist()
    assert len(paged) == 3 and set(paged["photo_id"]) <= set(pool)


def test_combined_search_reranks_against_its_positive_terms(stores, checkpoints, tmp_path):
    picture = tmp_path / "q.jpg"
    picture.write_bytes(jpeg_bytes(3))
    assert search.kinds.rerank_terms_text(search.parse_terms("dog -people 2:sunset"), 1.0) == "dog, sunset"
    assert search.kinds.rerank_terms_text(search.parse_terms("dog -people"), -1.0) == "people"
    rerank = f"model:{checkpoints['blip']}"
    with open_store(**stores["duckdb"]) as db:
        plain = search.combined("dog -people", images=[picture], k=6, db=db, device="cpu")
        ranked = search.combined("dog -people", images=[picture], k=6, db=db, device="cpu", rerank=rerank, overfetch=1)
        with pytest.raises(BadArgument, match="no positive text term"):
            search.combined("-people", images=[picture], db=db, device="cpu", rerank=rerank)
    assert sorted(ranked["photo_id"]) == sorted(plain["photo_id"]) and "rerank_score" in ranked


def test_cli_text_search_with_a_model_rerank(stores, checkpoints, capsys):
    where = stores["duckdb"]
    opts = ["--store", str(where["store"]), "--duckdb", where["duckdb"], "--device", "cpu"]
    rerank = ["--rerank", f"model:{checkpoints['blip-2']}", "--overfetch", "1"]
    code = main(["search", "text", "a", "dog", "-k", "10", *rerank, "--format", "json", *opts])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads(captured.out)
    with open_store(**where) as db:
        plain = search.text("a dog", 10, db=db, device="cpu")
    assert sorted(r["photo_id"] for r in records) == sorted(plain["photo_id"])
    assert all("rerank_score" in r for r in records) and records[-1]["rerank_score"] is None
    assert captured.err.startswith("note: ") and "kept after the scored ones" in captured.err
    code = main(["search", "text", "a", "dog", "-k", "3", *rerank, *opts])
    captured = capsys.readouterr()
    assert code == 0 and captured.out.splitlines()[0].split() == [
        "photo_id",
        "distance",
        "rerank_score",
        "description",
        "photo_url",
    ]
    code = main(["search", "similar", "p0010", "--rerank", f"model:{checkpoints['blip']}", *opts[:4]])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("clipsql: error: ") and "query text" in err and err.count("\n") == 1
    assert main(["search", "text", "a", "--rerank", "model:", *opts]) == 2
    assert "model:CHECKPOINT" in capsys.readouterr().err


# --- refusals before any work --------------------------------------------------------------


def test_checkpoints_that_cannot_serve_are_refused_before_any_work(tiny_clip, tmp_path):
    families = r"blip \(BlipForImageTextRetrieval.*blip-2 \(Blip2ForImageTextRetrieval"
    with pytest.raises(ModelError, match=f"is a 'clip' checkpoint; .*{families}"):
        search.text("a dog", db=NoSQL(), device="cpu", rerank=f"model:{tiny_clip}")
    captioning = build_tiny_blip(tmp_path / "captioning", captioning=True)
    with pytest.raises(ModelError, match="BlipForConditionalGeneration checkpoint, without the image-text matching"):
        search.text("a dog", db=NoSQL(), device="cpu", rerank=f"model:{captioning}")
    with pytest.raises(ModelError, match="does not exist"):
        search.text("a dog", db=NoSQL(), device="cpu", rerank=f"model:{tmp_path / 'nope'}")
    with pytest.raises(ModelError, match="does not exist"):
        search.text("a dog", db=NoSQL(), device="cpu", rerank="model:./no-such-checkpoint")
    with pytest.raises(BadArgument, match="checkpoint of rerank='model:CHECKPOINT' is empty"):
        search.SearchOptions(rerank="model: ")
    with pytest.raises(BadArgument, match="rerank must be one of exact, mmr, model:CHECKPOINT or None"):
        search.SearchOptions(rerank="blip")


def test_searches_without_a_query_text_refuse_a_model_rerank(checkpoints, tmp_path):
    rerank = f"model:{checkpoints['blip']}"
    picture = tmp_path / "q.jpg"
    picture.write_bytes(jpeg_bytes(1))
    for call, kind in [
        (lambda: search.image(picture, db=NoSQL(), rerank=rerank), "an image search"),
        (lambda: search.similar("p0001", db=NoSQL(), rerank=rerank), "a similar-photo search"),
        (lambda: search.crop(picture, (0, 0, 1, 1), db=NoSQL(), rerank=rerank), "a crop search"),
        (lambda: search.nearest(NoSQL(), [1.0] * 512, model="m", rerank=rerank), "a vector search"),
    ]:
        with pytest.raises(BadArgument, match=f"scores photos against the query text, and {kind} has none"):
            call()
