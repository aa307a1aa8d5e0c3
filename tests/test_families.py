"""Any image-text dual encoder (issue 14, parts 1, 2 and 6).

Every family clipsql loads (CLIP, SigLIP, SigLIP 2 NaFlex, MetaCLIP 2, AltCLIP, Chinese-CLIP,
ALIGN, AIMv2) as a tiny random checkpoint saved with `save_pretrained` and loaded back
through the same `from_pretrained` path a hub name takes (tests/model_families.py):

- image and text vectors of the family's width, float32, L2-normalized; a text or an image
  embeds the same alone as in a batch of 32 (within 1e-5), so a query matches the refresh;
- the text tower alone (what a query process loads) and the image tower alone (what the
  refresh loads) give the whole model's vectors;
- queries in Chinese, Arabic, German, emoji and mixed scripts go through each family's own
  tokenizer class and give distinct vectors;
- a refresh, a text search (multilingual), the SQL function and an evaluation end to end on
  chdb and DuckDB, all eight families side by side in one store of eight widths;
- a checkpoint that is no dual encoder stops before any work, naming the families accepted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipsql import refresh, search, udf
from clipsql.db import open_store
from clipsql.embed import Embedder
from clipsql.errors import ModelError
from clipsql.evaluate import evaluate
from clipsql.families import FAMILIES
from etl_support import run_cli
from model_families import FAMILY_TYPES, QUERIES, WIDTHS, build_family

#: The tokenizer class each family's checkpoint loads with (its real one, not a stand-in).
TOKENIZERS = {
    "clip": "CLIPTokenizer",
    "siglip": "SiglipTokenizer",
    "siglip2": "Siglip2Tokenizer",
    "metaclip_2": "XLMRobertaTokenizer",
    "altclip": "XLMRobertaTokenizer",
    "chinese_clip": "BertTokenizer",
    "align": "BertTokenizer",
    "aimv2": "CLIPTokenizer",
}


#: Families run end to end on chdb too (three widths in one store; its SQL function is an
#: executable UDF, a child process per model: about 5 s each); DuckDB runs all eight.
ON_CHDB = ("clip", "siglip2", "chinese_clip")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """{model_type: checkpoint directory} for every family."""
    root = tmp_path_factory.mktemp("families")
    return {family: str(build_family(family, root / family, seed=i)) for i, family in enumerate(FAMILY_TYPES)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of 6 distinct pictures of different sizes and shapes."""
    path = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 70 - 5 * i, 3), dtype=np.uint8)).save(path / f"p{i}.png")
    return path


def _pictures(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 256, (30 + i % 7, 50 + i % 5, 3), dtype=np.uint8)) for i in range(n)]


def test_every_family_the_issue_names_is_known():
    assert set(FAMILY_TYPES) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_a_family_embeds_images_and_texts_of_its_width_alone_as_in_a_batch(checkpoints, family):
    embedder = Embedder(checkpoints[family], device="cpu", progress=False)
    assert embedder.family.model_type == family and embedder.dim == WIDTHS[family]
    assert type(embedder.processor.tokenizer).__name__ == TOKENIZERS[family]

    texts = [f"{QUERIES[i % len(QUERIES)]} {i}" for i in range(32)]
    batch = embedder.embed_texts(texts)
    assert batch.shape == (32, WIDTHS[family]) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([embedder.embed_texts([t]) for t in (texts[0], texts[17], texts[31])])
    np.testing.assert_allclose(alone, batch[[0, 17, 31]], atol=1e-5)

    pictures = _pictures(32)
    images = embedder.embed_images(pictures)
    assert images.shape == (32, WIDTHS[family]) and images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([embedder.embed_images([pictures[i]]) for i in (0, 13, 31)])
    np.testing.assert_allclose(alone, images[[0, 13, 31]], atol=1e-5)

    # What a query process loads (the text tower) and what the refresh loads (the image tower)
    # give the whole model's vectors.
    text_only = Embedder(checkpoints[family], device="cpu", progress=False, towers="text")
    np.testing.assert_allclose(text_only.embed_texts(texts), batch, atol=1e-5)
    image_only = Embedder(checkpoints[family], device="cpu", progress=False, towers="image")
    np.testing.assert_allclose(image_only.embed_images(pictures), images, atol=1e-5)


@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_queries_in_any_script_go_through_the_familys_tokenizer(checkpoints, family):
    embedder = Embedder(checkpoints[family], device="cpu", progress=False, towers="text")
    tokenizer = embedder.processor.tokenizer
    for query in QUERIES:
        ids = tokenizer(query)["input_ids"]
        unknown = tokenizer.unk_token_id
        # The script is tokenized, not collapsed to unknown tokens.
        assert any(i != unknown and i not in tokenizer.all_special_ids for i in ids), (family, query, ids)
    assert len({tuple(tokenizer(query)["input_ids"]) for query in QUERIES}) == len(QUERIES)
    vectors = embedder.embed_texts(QUERIES)
    for i in range(len(QUERIES)):  # five queries, five vectors
        for j in range(i):
            assert np.abs(vectors[i] - vectors[j]).max() > 1e-5, (family, QUERIES[i], QUERIES[j])


def test_the_text_tower_alone_holds_part_of_the_weights(checkpoints):
    for family in ("clip", "siglip", "metaclip_2"):  # families with a class for one tower
        whole = Embedder(checkpoints[family], device="cpu", progress=False)
        text_only = Embedder(checkpoints[family], device="cpu", progress=False, towers="text")
        whole_n = sum(p.numel() for p in whole.text_model.parameters())
        text_n = sum(p.numel() for p in text_only.text_model.parameters())
        assert text_n < 0.8 * whole_n, family
        with pytest.raises(Exception, match="text tower only"):
            text_only.embed_images(_pictures(1))


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_all_families_refresh_search_sql_and_eval_side_by_side(tmp_path, folder, checkpoints, engine):
    backend = dict(store=tmp_path / "store", duckdb=str(tmp_path / "s.duckdb") if engine == "duckdb" else None)
    if engine == "chdb":
        checkpoints = {family: path for family, path in checkpoints.items() if family in ON_CHDB}
    for family, path in checkpoints.items():
        summary = refresh(folder, model=path, model_name=family, progress=False, **backend)
        assert summary.stage("embed").ok == 6, family
    with open_store(**backend) as db:
        stored = db.query_clickhouse("SELECT model, dim FROM models FINAL ORDER BY model")
        assert dict(stored.values.tolist()) == {family: WIDTHS[family] for family in checkpoints}
        for family, path in checkpoints.items():
            reference = Embedder(path, device="cpu", progress=False, towers="text")
            vectors = db.query_clickhouse(
                "SELECT photo_id, embedding FROM photo_embeddings FINAL WHERE model = {m:String} ORDER BY photo_id",
                {"m": family},
            )
            stored_vectors = np.stack([np.asarray(v, np.float32) for v in vectors["embedding"]])
            assert stored_vectors.shape == (6, WIDTHS[family])
            np.testing.assert_allclose(np.linalg.norm(stored_vectors, axis=1), 1.0, atol=1e-5)
            for query in QUERIES[:2] + QUERIES[-1:]:  # Chinese, Arabic, mixed scripts
                found = search.text(query, 6, db=db, model=family, device="cpu")
                expected = 1 - stored_vectors @ reference.embed_texts([query])[0]
                order = sorted(zip(expected, vectors["photo_id"]))
                assert found["photo_id"].tolist() == [photo_id for _, photo_id in order], (family, query)
            # The SQL function embeds with the model's text tower; a hand query ranks like search.text.
            udf.register_text_embedding(db, family, device="cpu")
            by_hand = db.query_clickhouse(
                "SELECT photo_id FROM photo_search WHERE model = {m:String} "
                "ORDER BY cosineDistance(embedding, clip_text_embedding({q:String})), photo_id LIMIT 6",
                {"m": family, "q": "ein Hund 🐶"},
            )
            assert (
                by_hand["photo_id"].tolist() == search.text("ein Hund 🐶", 6, db=db, model=family)["photo_id"].tolist()
            )


def test_every_family_is_evaluated_on_multilingual_captions(tmp_path, folder, checkpoints):
    captions = tmp_path / "captions.csv"
    lines = ["image,caption"] + [f"p{i}.png,{QUERIES[i % len(QUERIES)]} {i}" for i in range(6)]
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for family, path in checkpoints.items():
        report = evaluate(folder, captions, model=path, model_name=family, store=tmp_path / "store", progress=False)
        plain = report.metrics[report.metrics["query_kind"] == "plain"].iloc[0]
        assert int(plain["queries"]) == 6, family
        assert 0 < float(plain["mrr"]) <= 1, family


def test_a_checkpoint_that_is_no_dual_encoder_stops_before_any_work(tmp_path, folder):
    import transformers

    bert = tmp_path / "bert"
    config = transformers.BertConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=30
    )
    transformers.BertModel(config).save_pretrained(bert)
    with pytest.raises(ModelError, match=r"'bert' checkpoint, not an image-text dual encoder.*SigLIP \(siglip\)"):
        Embedder(str(bert), device="cpu", progress=False)
    store = tmp_path / "store"
    out = run_cli("refresh", "--source", str(folder), "--model", str(bert), "--store", str(store))
    assert out.returncode != 0
    assert "not an image-text dual encoder" in out.stderr and "accepted families" in out.stderr
    assert not store.exists() or not any(store.iterdir())  # nothing was written


def test_a_checkpoint_whose_towers_differ_in_width_is_refused(tmp_path):
    path = build_family("align", tmp_path / "align")
    config = json.loads((path / "config.json").read_text())
    config["projection_dim"] = 24  # text projected to 24, images pooled to 32 channels
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="ALIGN model .* embeds text in 24 and images in 32 dimensions"):
        Embedder(str(path), device="cpu", progress=False)
