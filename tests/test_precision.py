"""Precision as a setting and the cold query's fast path (issue 15).

- every precision the CPU runs (fp32, bf16, int8) gives vectors of the model's width, unit
  norm and a cosine to fp32 at or above the floor, or, explicitly asked for below the floor
  on these photos, stops with an error naming the cosine; `auto` then falls back, and never
  picks a precision the device lacks;
- fp16 on a CPU and unknown precisions stop before any model loads;
- the ONNX text tower (the cold query's path) gives the model's own vectors for texts in any
  script, and a new process embeds a query with it without importing torch or transformers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipsql.embed import Embedder, query_text_encoder
from clipsql.errors import BadArgument, ModelError
from clipsql.onnx_towers import TEXT_META, OnnxTextEncoder, export_folder
from clipsql.precision import COSINE_FLOOR, auto_candidates, native_bf16
from model_families import QUERIES, build_family

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    """Each test exports into a cache of its own."""
    monkeypatch.setenv("CLIPSQL_CACHE_DIR", str(tmp_path / "cache"))
    query_text_encoder.cache_clear()
    yield
    query_text_encoder.cache_clear()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("precision-models")
    # metaclip_2 holds the floor at int8 on its tiny random weights, clip does not (measured:
    # image cosine 0.99986 and 0.99333): one of each.
    return {family: str(build_family(family, root / family)) for family in ("clip", "metaclip_2", "siglip")}


def _pictures(n: int = 6) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 64, 3), dtype=np.uint8)) for i in range(n)]


def _photo_folder(tmp_path, n: int):
    """A folder of `n` generated PNG photos (an image-folder source)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, picture in enumerate(_pictures(n)):
        picture.save(folder / f"p{i}.png")
    return folder


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_each_precision_keeps_the_width_the_norm_and_the_cosine_floor(checkpoints, precision):
    reference = Embedder(checkpoints["metaclip_2"], device="cpu", progress=False)
    embedder = Embedder(checkpoints["metaclip_2"], device="cpu", progress=False, precision=precision)
    pictures = _pictures()
    images, texts = embedder.embed_images(pictures), embedder.embed_texts(QUERIES)
    assert embedder.precision == precision
    for vectors, exact in ((images, reference.embed_images(pictures)), (texts, reference.embed_texts(QUERIES))):
        assert vectors.shape == exact.shape and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.sum(vectors * exact, axis=1).min() >= COSINE_FLOOR


def test_a_precision_below_the_floor_stops_and_auto_falls_back(checkpoints):
    with pytest.raises(ModelError, match=r"image tower at int8 gives vectors whose cosine to fp32 is 0\.9\d+, below"):
        Embedder(checkpoints["clip"], device="cpu", progress=False, precision="int8").embed_images(_pictures())
    auto = Embedder(checkpoints["clip"], device="cpu", progress=False, precision="auto")
    vectors = auto.embed_images(_pictures())
    assert auto.precision in auto_candidates("cpu") and auto.precision != "int8"
    exact = Embedder(checkpoints["clip"], device="cpu", progress=False).embed_images(_pictures())
    assert np.sum(vectors * exact, axis=1).min() >= COSINE_FLOOR


def test_auto_never_picks_what_the_device_lacks(checkpoints):
    candidates = auto_candidates("cpu")
    assert candidates[-1] == "fp32" and "fp16" not in candidates
    assert ("bf16" in candidates) == native_bf16("cpu")  # emulated bf16 is 10x slower than fp32 here
    auto = Embedder(checkpoints["metaclip_2"], device="cpu", progress=False, precision="auto")
    auto.embed_images(_pictures())
    assert auto.precision == candidates[0]


def test_bad_precisions_stop_before_any_model_loads(tmp_path):
    missing = str(tmp_path / "no-model")  # would fail to load: the precision is checked first
    with pytest.raises(BadArgument, match="precision must be one of auto, fp32, bf16, fp16, int8, got 'int4'"):
        Embedder(missing, device="cpu", precision="int4")
    with pytest.raises(BadArgument, match="fp16 runs on CUDA or MPS only"):
        Embedder(missing, device="cpu", precision="fp16")


@pytest.mark.parametrize("family", ["clip", "metaclip_2"])
def test_the_onnx_text_tower_gives_the_models_vectors_in_any_script(checkpoints, family):
    reference = Embedder(checkpoints[family], device="cpu", progress=False, towers="text")
    folder = reference.export_text_tower()
    assert folder is not None and folder == export_folder(checkpoints[family])
    # The int8 copy is made only when a query asks for it (it costs seconds on a real model).
    assert not (folder / "text-int8.onnx").exists()
    assert "int8" not in json.loads((folder / TEXT_META).read_text())["usable"]
    assert reference.export_text_tower(int8=True) == folder
    meta = json.loads((folder / TEXT_META).read_text())
    assert meta["usable"]["fp32"] and meta["fp32_difference"] <= 1e-4
    # The weights sit in a file of their own beside each model (ONNX Runtime maps it).
    assert (folder / "text-fp32.onnx.data").stat().st_size > (folder / "text-fp32.onnx").stat().st_size
    texts = QUERIES + ["x " * 500]
    exact = reference.embed_texts(texts)
    fp32 = OnnxTextEncoder.load(checkpoints[family], family, "fp32")
    assert fp32 is not None and fp32.precision == "fp32"
    np.testing.assert_allclose(fp32.embed_texts(texts), exact, atol=1e-4)
    # auto: int8 exactly where it held the floor when it was exported, and then within it.
    auto = OnnxTextEncoder.load(checkpoints[family], family, "auto")
    assert auto is not None and auto.precision == ("int8" if meta["usable"]["int8"] else "fp32")
    assert meta["usable"]["int8"] == (meta["int8_min_cosine"] >= COSINE_FLOOR)
    assert np.sum(auto.embed_texts(texts) * exact, axis=1).min() >= COSINE_FLOOR - 1e-3


def test_a_query_at_auto_makes_the_int8_copy_a_query_at_fp32_does_not(checkpoints):
    source = checkpoints["metaclip_2"]
    fp32 = query_text_encoder(source, "m", "cpu")
    folder = export_folder(source)
    assert isinstance(fp32, OnnxTextEncoder) and fp32.precision == "fp32"
    assert not (folder / "text-int8.onnx").exists()
    auto = query_text_encoder(source, "m", "cpu", "auto")
    meta = json.loads((folder / TEXT_META).read_text())
    assert (folder / "text-int8.onnx").is_file() and meta["usable"]["fp32"]
    assert isinstance(auto, OnnxTextEncoder) and auto.precision == ("int8" if meta["usable"]["int8"] else "fp32")
    exact = fp32.embed_texts(QUERIES)
    assert np.sum(auto.embed_texts(QUERIES) * exact, axis=1).min() >= COSINE_FLOOR - 1e-3


def test_int8_queries_below_the_floor_are_refused_and_auto_keeps_fp32(checkpoints):
    source = checkpoints["clip"]
    Embedder(source, device="cpu", progress=False, towers="text").export_text_tower(int8=True)
    meta_path = export_folder(source) / TEXT_META
    meta = json.loads(meta_path.read_text())
    # As an export of a checkpoint that loses more under int8 would record it.
    meta["usable"]["int8"], meta["int8_min_cosine"] = False, 0.99
    meta_path.write_text(json.dumps(meta))
    query_text_encoder.cache_clear()
    assert OnnxTextEncoder.load(source, "clip", "int8") is None
    auto = query_text_encoder(source, "clip", "cpu", "auto")
    assert isinstance(auto, OnnxTextEncoder) and auto.precision == "fp32"
    with pytest.raises(ModelError, match="below the floor"):
        query_text_encoder(source, "clip", "cpu", "int8").embed_texts(QUERIES)


def test_a_tokenizer_without_a_tokenizers_form_keeps_the_model(checkpoints):
    # SigLIP's SentencePiece tokenizer has no tokenizer.json: queries use the model itself.
    encoder = query_text_encoder(checkpoints["siglip"], "siglip", "cpu")
    assert isinstance(encoder, Embedder)
    meta = json.loads((export_folder(checkpoints["siglip"]) / TEXT_META).read_text())
    assert not meta["usable"] and "SiglipTokenizer" in meta["reason"]


def test_a_new_process_embeds_a_query_without_torch_or_transformers(checkpoints, tmp_path):
    source = checkpoints["clip"]
    first = query_text_encoder(source, "clip", "cpu")  # the first query exports and checks
    assert isinstance(first, OnnxTextEncoder)
    expected = Embedder(source, device="cpu", progress=False, towers="text").embed_texts(["一只狗 on a beach"])[0]
    script = (
        "import json, sys\n"
        "from clipsql.embed import query_text_encoder\n"
        f"vector = query_text_encoder({source!r}, 'clip', 'auto').embed_texts(['一只狗 on a beach'])[0]\n"
        "print(json.dumps({'vector': vector.tolist(), 'torch': 'torch' in sys.modules,"
        " 'transformers': 'transformers' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False and result["transformers"] is False
    np.testing.assert_allclose(result["vector"], expected, atol=1e-4)


def test_a_cli_text_search_prints_what_the_api_finds_without_loading_pandas_torch_or_transformers(
    checkpoints, tmp_path
):
    # The cold CLI search's budget (issue 15): its result travels as Arrow and is printed
    # from there; what it prints is what the Python API's DataFrame renders to.
    from clipsql import refresh, search
    from clipsql.cli_search import render_frame
    from etl_support import subprocess_env

    folder, store = _photo_folder(tmp_path, 5), tmp_path / "store"
    refresh(folder, model=checkpoints["metaclip_2"], store=store, progress=False)
    frame = search.text("a red square", k=4, store=store)
    for fmt in ("table", "csv"):
        script = (
            "import json, sys\n"
            "from clipsql.cli import main\n"
            f"code = main(['search', 'text', 'a red square', '-k', '4', '--format', {fmt!r}, '--store', {str(store)!r}])\n"
            "loaded = [m for m in ('pandas', 'torch', 'transformers') if m in sys.modules]\n"
            "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=120
        )
        assert json.loads(out.stderr.strip().splitlines()[-1]) == {"code": 0, "loaded": []}, out.stderr
        columns = ["photo_id", "distance", "description", "photo_url"]
        assert out.stdout == render_frame(frame, fmt, table_columns=columns) + "\n"


def test_the_refresh_records_each_vectors_precision(checkpoints, tmp_path):
    from clipsql import refresh
    from clipsql.db import open_store
    from etl_support import run_cli

    folder, store = _photo_folder(tmp_path, 4), tmp_path / "store"
    refresh(folder, model=checkpoints["metaclip_2"], model_name="m-int8", precision="int8", store=store, progress=False)
    refresh(folder, model=checkpoints["metaclip_2"], model_name="m-fp32", store=store, progress=False)
    with open_store(store) as db:
        rows = db.query_clickhouse(
            "SELECT model, embed_precision, count() AS n FROM photo_embeddings FINAL "
            "GROUP BY model, embed_precision ORDER BY model"
        )
    assert rows.values.tolist() == [["m-fp32", "fp32", 4], ["m-int8", "int8", 4]]
    out = run_cli(
        *("refresh", "--source", str(folder), "--model", checkpoints["metaclip_2"]),
        *("--precision", "fp16", "--device", "cpu", "--store", str(tmp_path / "other")),
    )
    assert out.returncode == 2 and "fp16 runs on CUDA or MPS only" in out.stderr
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_a_cold_search_prefetches_the_model_its_store_used_last_and_is_right_when_that_changed(checkpoints, tmp_path):
    from clipsql import refresh, search
    from clipsql.embed import QUERY_MODELS_FILE
    from etl_support import run_cli

    folder, store = _photo_folder(tmp_path, 5), tmp_path / "store"
    refresh(folder, model=checkpoints["metaclip_2"], model_name="meta", store=store, progress=False)
    command = ("search", "text", "a red square", "-k", "5", "--format", "csv", "--store", str(store))
    first = run_cli(*command)
    assert first.returncode == 0, first.stderr
    remembered = tmp_path / "cache" / QUERY_MODELS_FILE
    assert json.loads(remembered.read_text()) == {str(store): [checkpoints["metaclip_2"], "meta"]}
    again = run_cli(*command)
    assert again.returncode == 0 and again.stdout == first.stdout
    # The store's model changed since (here: the memory is wrong): the search still uses the
    # store's model, and remembers it.
    remembered.write_text(json.dumps({str(store): [checkpoints["clip"], "meta"]}))
    changed = run_cli(*command)
    assert changed.returncode == 0 and changed.stdout == first.stdout
    assert json.loads(remembered.read_text()) == {str(store): [checkpoints["metaclip_2"], "meta"]}
    # The Python API is the same function.
    frame = search.text("a red square", k=5, store=store)
    assert frame["photo_id"].tolist() == [line.split(",")[0] for line in first.stdout.splitlines()[1:]]
