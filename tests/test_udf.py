"""clip_text_embedding, the CLIP text embedding as a SQL function (clipsql.udf): registered in
real chdb and DuckDB stores it gives the vector clipsql.search.text searches with, so the
SQL-only text query (queries/search_text_sql.sql) returns search.text's photos; its script
speaks ClickHouse's executable-function protocol block by block; the shipped server XML runs
on chdb as a server would run it; bad models fail with messages that name them."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import searchdata
from clipsql import search, udf
from clipsql.db import open_store
from clipsql.errors import ModelError, NotFound
from clipsql.queries import get_query

N = 600
TEXTS = [
    "surfing",
    "a dog on a beach",
    "ünïcode café 🏄 — 東京の夜景",
    "a long text " + " ".join(f"word{i}" for i in range(200)),
]  # past CLIP's 77 tokens
UDF_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_clip):
    """A chdb and a DuckDB store, same photos and vectors, clip_text_embedding registered."""
    opened = {}
    for engine in ("chdb", "duckdb"):
        root = tmp_path_factory.mktemp(f"udf-{engine}")
        db = open_store(root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None)
        searchdata.load(db, N, model_source=str(tiny_clip))
        assert udf.register_text_embedding(db, device="cpu") == searchdata.MODEL
        opened[engine] = db
    yield opened
    for db in opened.values():
        db.close()


@pytest.fixture(params=["chdb", "duckdb"])
def db(request, stores):
    return stores[request.param]


def reference(embedder, texts):
    """(n, 512) float32: what search.text embeds each text to."""
    return embedder.embed_texts(texts)


def absorb_failed_query(db):
    """After a query fails while running, chdb's next query through clickhouse-connect reads
    the failed one's leftover result (an Arrow error); a throwaway command takes it."""
    if db.engine == "chdb":
        db.command("SELECT 1")


# --- in the stores clipsql opens ----------------------------------------------------------


@pytest.mark.parametrize("k", [1, 10])
def test_the_sql_only_text_query_returns_the_python_search_results(db, k):
    query = get_query("search_text_sql")
    for text in TEXTS:
        in_sql = query.run(db, query=text, model=searchdata.MODEL, k=k)
        in_python = search.text(text, k, db=db, device="cpu")
        assert list(in_sql.columns) == search.PHOTO_COLUMNS
        assert in_sql["photo_id"].tolist() == in_python["photo_id"].tolist(), text
        np.testing.assert_allclose(in_sql["distance"].astype(float), in_python["distance"], atol=1e-6)
        assert not set(in_sql["photo_id"]) & {searchdata.photo_id(i) for i in searchdata.DELETED}


def test_the_function_is_the_search_vector_and_blank_text_gives_an_empty_array(db, embedder):
    rows = ["a dog", None, "ünïcode café 🏄", "", "a dog", "   ", 'tab\there, "quotes", back\\slash\nnewline']
    expected = reference(embedder, ["a dog", "ünïcode café 🏄", rows[-1]])
    got = [
        np.asarray(
            db.query_clickhouse("SELECT clip_text_embedding({text:Nullable(String)}) AS v", {"text": text})["v"].iloc[
                0
            ],
            dtype=np.float32,
        )
        for text in rows
    ]
    assert [len(v) for v in got] == [512, 0, 512, 0, 512, 0, 512]
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(got[2], expected[1], atol=1e-6)
    np.testing.assert_allclose(got[4], expected[0], atol=1e-6)
    np.testing.assert_allclose(got[6], expected[2], atol=1e-6)
    assert abs(float(np.linalg.norm(got[0])) - 1.0) < 1e-5


def test_a_column_of_texts_gets_one_vector_per_row_in_order(db, embedder):
    # Photo descriptions: None for i % 6 == 0, '' for i % 6 == 1, else f'photo {i}'.
    frame = db.query_clickhouse(
        "SELECT photo_id, photo_description AS text, clip_text_embedding(photo_description) AS v "
        "FROM photos FINAL WHERE photo_id < 'p0030' ORDER BY photo_id"
    )
    assert len(frame) == 30
    expected = dict(zip([f"photo {i}" for i in range(30)], reference(embedder, [f"photo {i}" for i in range(30)])))
    for text, vector in zip(frame["text"], frame["v"]):
        if text is None or text != text or text == "":
            assert len(vector) == 0
        else:
            np.testing.assert_allclose(np.asarray(vector, np.float32), expected[text], atol=1e-6)


def test_a_blank_query_fails_with_an_array_size_error(db):
    for text in ("", "   "):
        with pytest.raises(Exception, match=r"(?i)equal|dimension|size"):
            get_query("search_text_sql").run(db, query=text, model=searchdata.MODEL, k=5)
        absorb_failed_query(db)


@pytest.fixture(scope="module")
def negated_clip(tiny_clip, tmp_path_factory):
    """tiny_clip with its text projection negated: every text vector comes out negated."""
    from transformers import CLIPModel

    out = tmp_path_factory.mktemp("negated-clip")
    model = CLIPModel.from_pretrained(str(tiny_clip))
    model.text_projection.weight.data.neg_()
    model.save_pretrained(out)
    for name in os.listdir(tiny_clip):
        if not (out / name).exists():
            shutil.copy(tiny_clip / name, out / name)
    return out


def test_registering_again_replaces_the_model(db, embedder, negated_clip, tiny_clip):
    sql = "SELECT clip_text_embedding('a dog') AS v"
    before = np.asarray(db.query_clickhouse(sql)["v"].iloc[0], np.float32)
    try:
        udf.register_text_embedding(db, searchdata.MODEL, source=negated_clip, device="cpu")
        after = np.asarray(db.query_clickhouse(sql)["v"].iloc[0], np.float32)
    finally:
        udf.register_text_embedding(db, device="cpu")
    np.testing.assert_allclose(after, -before, atol=1e-6)
    np.testing.assert_allclose(np.asarray(db.query_clickhouse(sql)["v"].iloc[0], np.float32), before, atol=1e-6)


# --- bad models ---------------------------------------------------------------------------


def test_a_missing_checkpoint_directory_fails_at_registration(db, tmp_path):
    with pytest.raises(ModelError, match=f"model directory '{tmp_path}/nowhere' does not exist"):
        udf.register_text_embedding(db, source=tmp_path / "nowhere")
    with pytest.raises(NotFound, match="no-such-label"):
        udf.register_text_embedding(db, "no-such-label")


def test_an_unloadable_model_fails_on_the_first_call_with_its_name(db):
    try:
        udf.register_text_embedding(db, source="no-such-org/no-such-clip", device="cpu")  # a hub name: lazy
        with pytest.raises(Exception, match=r"cannot load model 'no-such-org/no-such-clip'"):
            db.query_clickhouse("SELECT clip_text_embedding('x') AS v")
        absorb_failed_query(db)
    finally:
        udf.register_text_embedding(db, device="cpu")
    assert len(db.query_clickhouse("SELECT clip_text_embedding('x') AS v")["v"].iloc[0]) == 512


def test_the_script_exits_with_a_clear_message_for_a_bad_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clipsql.udf", "--model", str(tmp_path / "nowhere")],
        input=b'1\n{"text":"x"}\n',
        capture_output=True,
        env=UDF_ENV,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"cannot start: model directory '{tmp_path}/nowhere' does not exist" in done.stderr.decode()
    assert done.stdout == b""
    bad = subprocess.run(
        [sys.executable, "-m", "clipsql.udf", "--device", "tpu"], capture_output=True, env=UDF_ENV, timeout=120
    )
    assert bad.returncode == 2 and "--device must be auto, cpu, cuda[:N] or mps" in bad.stderr.decode()
    bad = subprocess.run(
        [sys.executable, "-m", "clipsql.udf", "--threads", "-1"], capture_output=True, env=UDF_ENV, timeout=120
    )
    assert bad.returncode == 2 and "--threads must be 0 or more" in bad.stderr.decode()


# --- the script: ClickHouse's executable-function protocol --------------------------------


def _block(texts):
    return f"{len(texts)}\n".encode() + b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


def _read_answers(stream, count):
    return [json.loads(stream.readline())["embedding"] for _ in range(count)]


def test_the_script_answers_block_after_block_and_stays_alive(tiny_clip, embedder):
    blocks = [
        ["a dog", "ünïcode café 🏄", ""],
        [None, "a dog", 'tab\there, "quotes", back\\slash\nnewline', "a dog", "   "],
        [],
        [f"photo {i}" for i in range(150)],  # more than one batch of 64
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "clipsql.udf", "--model", str(tiny_clip), "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=UDF_ENV,
    )
    try:
        for texts in blocks:
            process.stdin.write(_block(texts))
            process.stdin.flush()
            answers = _read_answers(process.stdout, len(texts))
            assert process.poll() is None, "the script must stay alive between blocks"
            wanted = [t for t in texts if t is not None and t.strip()]
            expected = dict(zip(wanted, reference(embedder, wanted))) if wanted else {}
            for text, answer in zip(texts, answers):
                if text is None or not text.strip():
                    assert answer == []
                else:
                    np.testing.assert_allclose(np.asarray(answer, np.float32), expected[text], atol=1e-6)
        process.stdin.close()
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _fake_embed(texts):
    return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_serve_batches_distinct_texts_and_answers_in_order():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return _fake_embed(texts)

    out = io.BytesIO()
    stdin = io.BytesIO(_block(["aa", "b", "aa", None, ""]) + _block([]) + _block(["ccc"]))
    assert udf.serve(stdin, out, embed, batch_size=1) == 3
    answers = [json.loads(line)["embedding"] for line in out.getvalue().splitlines()]
    assert answers == [[2.0, 1.0], [1.0, 1.0], [2.0, 1.0], [], [], [3.0, 1.0]]
    assert calls == [["aa"], ["b"], ["ccc"]]


@pytest.mark.parametrize(
    "stdin, message",
    [
        (b"x\n", r"block 1: expected a row count line \(send_chunk_header = 1\)"),
        (b'2\n{"text":"a"}\n', "block 1: stdin ended after 1 of 2 rows"),
        (b'1\n"a"\n', "block 1 row 1: expected a JSONEachRow object with one field"),
        (b'1\n{"text":"a"}\n1\n{"text":3}\n', "block 2 row 1: the text must be a string or null"),
    ],
)
def test_serve_rejects_input_that_breaks_the_protocol(stdin, message):
    with pytest.raises(udf.UdfProtocolError, match=message):
        udf.serve(io.BytesIO(stdin), io.BytesIO(), _fake_embed)


# --- the server's configuration -----------------------------------------------------------


def test_the_shipped_configuration_declares_the_function():
    function = ET.parse(udf.function_config_path()).getroot().find("function")
    get = lambda tag: function.findtext(tag)  # noqa: E731
    assert (get("type"), get("name"), get("return_type"), get("format")) == (
        "executable_pool",
        "clip_text_embedding",
        "Array(Float32)",
        "JSONEachRow",
    )
    assert (function.findtext("argument/type"), function.findtext("argument/name")) == ("Nullable(String)", "text")
    assert (get("send_chunk_header"), get("execute_direct"), get("deterministic")) == ("1", "1", "true")
    assert get("command").split() == [
        "clipsql-text-embedding-udf",
        "--model",
        "openai/clip-vit-base-patch32",
        "--device",
        "cpu",
    ]
    replaced = ET.fromstring(udf.function_config(command="launcher.py"))
    assert replaced.findtext("function/command") == "launcher.py"
    assert replaced.findtext("function/max_command_execution_time") == get("max_command_execution_time")


def test_the_shipped_configuration_runs_on_chdb_as_a_server_runs_it(tmp_path, tiny_clip, embedder):
    """The server install, with chdb standing in for clickhouse-server: the XML verbatim but
    for the model, in user_scripts a link to a `clipsql-text-embedding-udf` console script."""
    scripts, bin_dir = tmp_path / "user_scripts", tmp_path / "venv-bin"
    scripts.mkdir()
    bin_dir.mkdir()
    config = udf.function_config_path().read_text(encoding="utf-8")
    assert config.count("--model openai/clip-vit-base-patch32") == 1
    (scripts / "clip_text_embedding_function.xml").write_text(
        config.replace("--model openai/clip-vit-base-patch32", f"--model {tiny_clip}"), encoding="utf-8"
    )
    console_script = bin_dir / "clipsql-text-embedding-udf"  # what pip writes for [project.scripts]
    console_script.write_text(f"#!{sys.executable}\nimport sys\nfrom clipsql.udf import main\nsys.exit(main())\n")
    console_script.chmod(0o755)
    (scripts / "clipsql-text-embedding-udf").symlink_to(console_script)
    program = textwrap.dedent(f"""
        import json, chdb
        sql = ("SELECT clip_text_embedding(t) AS v FROM "
               "(SELECT arrayJoin(['surfing', '', 'ünïcode café 🏄', 'surfing']) AS t)")
        print(chdb.query(sql, "JSONEachRow", udf_path={str(scripts)!r}).data())
        print(chdb.query("SELECT clip_text_embedding('surfing') AS v", "JSONEachRow").data())
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, env=UDF_ENV, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    rows = [json.loads(line)["v"] for line in done.stdout.decode().split("\n") if line.startswith("{")]
    expected = reference(embedder, ["surfing", "ünïcode café 🏄"])
    assert [len(r) for r in rows] == [512, 0, 512, 512, 512]
    for row, vector in zip(rows, [expected[0], None, expected[1], expected[0], expected[0]]):
        if vector is not None:
            np.testing.assert_allclose(np.asarray(row, np.float32), vector, atol=1e-6)


def test_the_cache_runs_the_model_only_on_texts_it_has_not_seen():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return _fake_embed(texts)

    cached = udf.CachedEmbed(embed, size=2)
    np.testing.assert_array_equal(cached(["aa", "b", "aa"]), _fake_embed(["aa", "b", "aa"]))
    np.testing.assert_array_equal(cached(["b", "ccc"]), _fake_embed(["b", "ccc"]))  # evicts "aa"
    cached(["aa", "ccc"])
    assert calls == [["aa", "b"], ["ccc"], ["aa"]]
    assert cached.hits == 2
