"""The `clipsql` command's contract, with real processes (`python -m clipsql.cli`): one exit
status table for every command (0 done, 2 any error, 75 the store is busy, 130 interrupted)
and exactly one line on stderr for an error, never a traceback unless -vv; arguments that
start with '-'; empty results that say why; the float32 norm of a query vector; the refresh's
two new options.

Fast on purpose: small DuckDB stores (a copy per process), the tiny random CLIP, the model
loaded by as few processes as possible, and the processes run a few at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import searchdata
from clipsql import search
from clipsql.cli import build_parser, main
from clipsql.db import open_store
from clipsql.errors import BadArgument
from clipsql.load import embeddings_table
from conftest import jpeg_bytes
from etl_support import cli_command, subprocess_env

N = 40
#: Photos whose ids start with '-', as 115 of 7,174 Unsplash ids do; each a near copy of photo `like`.
DASH_PHOTOS = {"--2IBUMom1I": 1, "-abc": 2, "-kAbc1234567": 3}


def _add_photo(db, photo_id: str, like: int, vector: np.ndarray) -> None:
    row = dict(searchdata.photo_rows(like + 1)[like], photo_id=photo_id, photo_description=f"dash {photo_id}")
    photos = searchdata._table("photos", [row], 1)
    photos = photos.append_column("source_version", pa.array(["test"]))
    photos = photos.append_column("is_deleted", pa.array(np.zeros(1, dtype=np.uint8)))
    db.upsert("photos", photos)
    db.upsert("photo_embeddings", embeddings_table([photo_id], vector[None, :].astype(np.float32), searchdata.MODEL, 1))


def _complete_model(db, model_source: str) -> None:
    """The model as a finished refresh leaves it (completed_at set): search then logs nothing."""
    db.upsert(
        "models",
        pa.table(
            {
                "model": [searchdata.MODEL],
                "model_source": [model_source],
                "dim": pa.array([512], pa.uint16()),
                "version": pa.array([2], pa.uint64()),
                "completed_at": pa.array([dt.datetime.now(dt.timezone.utc)], pa.timestamp("ms", tz="UTC")),
            }
        ),
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_clip) -> Path:
    """A DuckDB store (<dir>/s.duckdb) with N photos, the dash photos, a complete model and
    cached images of p0001 and '-abc'; copied for each process that opens it."""
    root = tmp_path_factory.mktemp("contract-base")
    with open_store(root, duckdb=str(root / "s.duckdb")) as db:
        vectors = searchdata.load(db, N, model_source=str(tiny_clip))
        for photo_id, like in DASH_PHOTOS.items():
            _add_photo(db, photo_id, like, vectors[like] + 0.01)
        _complete_model(db, str(tiny_clip))
        db.image_dir.mkdir(parents=True, exist_ok=True)
        for photo_id, seed in (("p0001", 1), ("-abc", 2)):
            (db.image_dir / f"{photo_id}.jpg").write_bytes(jpeg_bytes(seed, size=(120, 80)))
    return root


def store_copy(base: Path, where: Path) -> list[str]:
    shutil.copytree(base, where)
    return ["--store", str(where), "--duckdb", str(where / "s.duckdb")]


def duck(root: Path) -> list[str]:
    return ["--store", str(root), "--duckdb", str(root / "s.duckdb")]


# --- the exit status table, with real processes ------------------------------------------


class Stall:
    """A loopback TCP server that accepts connections and never answers (an image URL or a
    model hub that hangs), so that a command can be interrupted while it waits."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []

    def wait_connected(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return False
        self.conns.append(conn)
        return True

    def answer_404(self):
        """Answer the waiting requests at last (a 404 is not retried), so that a download
        thread the command still waits for ends."""
        for conn in self.conns:
            try:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass

    def close(self):
        for conn in self.conns:
            conn.close()
        self.sock.close()


@dataclasses.dataclass
class Case:
    """One command driven into one outcome: `argv(world)` -> the command line; `code` the exit
    status wanted; `says` a text stderr must hold. `interrupt`: (signal, how to know the
    command is waiting: 'fifo:<name>' (its job file), 'stall' or 'file')."""

    id: str
    code: int
    argv: Callable[[dict], list[str]]
    says: str = ""
    interrupt: tuple[int, str] | None = None
    verbose: bool = False


OK, ERROR, BUSY, INTERRUPTED = 0, 2, 75, 130

CASES = [
    # refresh
    Case(
        "refresh-ok",
        OK,
        lambda w: [
            "refresh",
            "--source",
            w["images"],
            "--model",
            w["model"],
            "--device",
            "cpu",
            "-q",
            "--store",
            w["tmp"] / "r",
            "--duckdb",
            w["tmp"] / "r" / "r.duckdb",
        ],
    ),
    Case(
        "refresh-bad-argument",
        ERROR,
        lambda w: ["refresh", "--limit", "many", "--store", w["tmp"] / "r2"],
        "argument --limit: invalid int value: 'many'",
    ),
    Case(
        "refresh-engine-error",
        ERROR,
        lambda w: ["refresh", "--source", w["images"], "--model", w["model"], "--store", w["chdb_file"]],
        "cannot open chdb store",
    ),
    Case(
        "refresh-busy",
        BUSY,
        lambda w: [
            "refresh",
            "--source",
            w["images"],
            "--model",
            w["model"],
            "-q",
            "--store",
            w["held"],
            "--wait",
            "0",
        ],
        "is busy: held by pid",
    ),
    Case(
        "refresh-interrupted",
        INTERRUPTED,
        lambda w: ["refresh", w["tmp"] / "refresh-job.toml"],
        "interrupted",
        interrupt=(signal.SIGTERM, "fifo:refresh-job.toml"),
    ),
    # status
    Case("status-ok", OK, lambda w: ["status", *w["store"]()]),
    Case("status-bad-argument", ERROR, lambda w: ["status", "--runs", "0", *w["store"]()], "runs must be"),
    Case("status-engine-error", ERROR, lambda w: ["status", *w["broken"]()], "status failed: CatalogException"),
    Case("status-busy", BUSY, lambda w: ["status", "--store", w["held"], "--wait", "0"], "is busy: held by pid"),
    Case(
        "status-interrupted",
        INTERRUPTED,
        lambda w: ["status", w["tmp"] / "status-job.toml"],
        "interrupted",
        interrupt=(signal.SIGINT, "fifo:status-job.toml"),
    ),
    # search
    Case("search-ok", OK, lambda w: ["search", "similar", "p0001", "-k", "3", *w["store"]()]),
    Case("search-dash-id-ok", OK, lambda w: ["search", "similar", "--2IBUMom1I", "-k", "3", *w["store"]()]),
    Case(
        "search-bad-argument",
        ERROR,
        lambda w: ["search", "similar", "-k", "3", *w["store"]()],
        "put ids starting with '-' after --: clipsql search similar -- -abc",
    ),
    Case(
        "search-bad-argument-k",
        ERROR,
        lambda w: ["search", "text", "x", "-k", "0", *w["store"]()],
        "k must be an integer",
    ),
    Case(
        "search-corrupt-image", ERROR, lambda w: ["search", "image", w["corrupt"], *w["store"]()], "not a usable image"
    ),
    Case(
        "search-engine-error",
        ERROR,
        lambda w: ["search", "text", "x", "--store", w["chdb_file"]],
        "cannot open chdb store",
    ),
    Case(
        "search-engine-error-query",
        ERROR,
        lambda w: ["search", "similar", "p0001", *w["broken"]()],
        "search similar failed: CatalogException",
    ),
    Case(
        "search-engine-error-vv",
        ERROR,
        lambda w: ["search", "similar", "p0001", "-vv", *w["broken"]()],
        "search similar failed: CatalogException",
        verbose=True,
    ),
    Case(
        "search-disk-full",
        ERROR,
        lambda w: ["search", "similar", "p0001", "--html", "/dev/full", *w["store"]()],
        "No space left on device",
    ),
    Case(
        "search-busy",
        BUSY,
        lambda w: ["search", "text", "x", "--store", w["held"], "--wait", "0"],
        "is busy: held by pid",
    ),
    Case(
        "search-interrupted",
        INTERRUPTED,
        lambda w: ["search", "image", f"{w['stall'].url}/a.jpg", *w["store"]()],
        "interrupted",
        interrupt=(signal.SIGTERM, "stall"),
    ),
    # sql (prints text: nothing to be busy with or to interrupt)
    Case("sql-ok", OK, lambda w: ["sql", "--dialect", "duckdb", "--query", "similar_photos"]),
    Case("sql-bad-argument", ERROR, lambda w: ["sql", "--dialect", "sqlite"], "argument --dialect: invalid choice"),
    Case("sql-not-found", ERROR, lambda w: ["sql", "--query", "no_such_query"], "no query named 'no_such_query'"),
    # eval
    Case(
        "eval-ok",
        OK,
        lambda w: [
            "eval",
            "--images",
            w["images"],
            "--captions",
            w["captions"],
            "--model",
            w["model"],
            "--device",
            "cpu",
            "-q",
            "--store",
            w["tmp"] / "e",
            "--duckdb",
            w["tmp"] / "e" / "e.duckdb",
        ],
    ),
    Case(
        "eval-bad-argument",
        ERROR,
        lambda w: [
            "eval",
            "--images",
            w["images"],
            "--captions",
            w["bad_captions"],
            "--model",
            w["model"],
            *w["store"](),
        ],
        "expected 'name.jpg#N",
    ),
    Case(
        "eval-engine-error",
        ERROR,
        lambda w: [
            "eval",
            "--images",
            w["images"],
            "--captions",
            w["captions"],
            "--model",
            w["model"],
            "--store",
            w["chdb_file"],
        ],
        "cannot open chdb store",
    ),
    Case(
        "eval-busy",
        BUSY,
        lambda w: [
            "eval",
            "--images",
            w["images"],
            "--captions",
            w["captions"],
            "--model",
            w["model"],
            "--store",
            w["held"],
            "--wait",
            "0",
        ],
        "is busy: held by pid",
    ),
    Case(
        "eval-interrupted",
        INTERRUPTED,
        lambda w: [
            "eval",
            "--images",
            w["images"],
            "--captions",
            w["captions"],
            "--model",
            w["model"],
            "--device",
            "cpu",
            "-q",
            "--store",
            w["tmp"] / "ei",
            "--duckdb",
            w["tmp"] / "ei" / "e.duckdb",
        ],
        "interrupted",
        interrupt=(signal.SIGINT, "file"),
    ),
]

#: A process that holds the store's engine (a session block) until its stdin closes.
HOLD = (
    "import sys; from clipsql.db import open_store; db = open_store(store=sys.argv[1]); "
    "s = db.session(); s.__enter__(); print('held', flush=True); sys.stdin.read()"
)


def _env() -> dict:
    # The tiny random checkpoint makes transformers warn about its config on every load.
    return dict(subprocess_env(), TRANSFORMERS_VERBOSITY="error")


def _run_interrupted(case: Case, command: list[str], world: dict, cwd: Path) -> tuple[int, str, str]:
    sig, how = case.interrupt
    proc = subprocess.Popen(command, env=_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = None
    deadline = time.monotonic() + 120
    try:
        if how.startswith("fifo:"):  # the command blocks reading its job file (a FIFO) until a writer comes
            while writer is None and proc.poll() is None and time.monotonic() < deadline:
                try:
                    writer = os.open(world["tmp"] / how[5:], os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    assert exc.errno == errno.ENXIO, exc
                    time.sleep(0.05)
        elif how == "stall":  # the command waits for an answer that never comes
            assert world["stall"].wait_connected(timeout=120), "the command never connected"
        else:  # 'file': eval opened its new store and is loading the model (seconds)
            target = world["tmp"] / "ei" / "e.duckdb"
            while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
        assert proc.poll() is None, f"{case.id} ended before it could be interrupted: {proc.communicate()}"
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:  # a download thread still waits for its answer
            world["stall"].answer_404()
            out, err = proc.communicate(timeout=60)
        return proc.returncode, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if writer is not None:
            os.close(writer)


@pytest.fixture(scope="module")
def outcomes(base, tiny_clip, tmp_path_factory) -> dict[str, tuple[int, str, str]]:
    """Every case of CASES run once (a few processes at a time): {id: (code, stdout, stderr)}."""
    tmp = tmp_path_factory.mktemp("contract")
    copies = iter(range(1000))
    broken = tmp / "broken"
    store_copy(base, broken)
    import duckdb

    connection = duckdb.connect(str(broken / "s.duckdb"))
    connection.execute("DROP TABLE photos")  # an engine error at the first query
    connection.close()
    broken_copies = iter(range(1000))

    images = tmp / "images"
    images.mkdir()
    lines = []
    for i in range(3):
        (images / f"{1000 + i}_ab.jpg").write_bytes(jpeg_bytes(i, size=(64, 48)))
        lines.append(f"{1000 + i}_ab.jpg#0\tA photo number {i} of colored blobs .")
    (tmp / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "bad.txt").write_text("a.jpg#0\tfine\nb.jpg#0 broken\n", encoding="utf-8")
    (tmp / "corrupt.jpg").write_bytes(jpeg_bytes(3, size=(200, 150))[:600])
    (tmp / "chdb-file").mkdir()
    (tmp / "chdb-file" / "chdb").write_text("not a directory\n", encoding="utf-8")
    for case in CASES:
        if case.interrupt and case.interrupt[1].startswith("fifo:"):
            os.mkfifo(tmp / case.interrupt[1][5:])
    cwd = tmp / "cwd"  # where a command that fell back to ./clipsql-store would write
    cwd.mkdir()
    world = {
        "tmp": tmp,
        "model": str(tiny_clip),
        "images": images,
        "captions": tmp / "captions.txt",
        "bad_captions": tmp / "bad.txt",
        "corrupt": tmp / "corrupt.jpg",
        "chdb_file": tmp / "chdb-file",
        "held": tmp / "held",
        "stall": Stall(),
        "store": lambda: store_copy(base, tmp / f"copy{next(copies)}"),
        "broken": lambda: store_copy(broken, tmp / f"broken{next(broken_copies)}"),
    }
    holder = subprocess.Popen(
        cli_command()[:1] + ["-c", HOLD, str(world["held"])],
        env=_env(),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def run(case: Case) -> tuple[int | None, str, str]:
        command = cli_command(*[str(a) for a in case.argv(world)])
        try:
            if case.interrupt:
                return _run_interrupted(case, command, world, cwd)
            done = subprocess.run(command, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=300)
        except (AssertionError, subprocess.TimeoutExpired) as exc:  # that case fails, the others still run
            return None, "", f"{type(exc).__name__}: {exc}"
        return done.returncode, done.stdout, done.stderr

    try:
        assert holder.stdout.readline().strip() == "held"
        world["holder_pid"] = holder.pid
        # The busy cases one after another (a refresh also takes <store>/refresh.lock); the
        # heavy ones (the model loads) first.
        busy = [c for c in CASES if c.code == BUSY]
        order = sorted((c for c in CASES if c.code != BUSY), key=lambda c: not c.id.startswith(("refresh-ok", "eval")))
        with ThreadPoolExecutor(max_workers=3) as pool:
            busy_results = pool.submit(lambda: {c.id: run(c) for c in busy})
            results = {c.id: pool.submit(run, c) for c in order}
            out = {cid: future.result() for cid, future in results.items()}
            out.update(busy_results.result())
    finally:
        holder.stdin.close()
        holder.terminate()
        holder.wait(timeout=30)
        world["stall"].close()
    out["_world"] = world
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exit_status_and_one_line_on_stderr(outcomes, case):
    code, out, err = outcomes[case.id]
    assert code == case.code, (code, err[-3000:])
    if case.verbose:  # -vv: the traceback goes to the log, the last line is still the error
        assert "Traceback" in err and err.splitlines()[-1].startswith("clipsql: error: ")
        assert case.says in err.splitlines()[-1]
        return
    assert "Traceback" not in err
    if code == OK:
        if case.id.startswith("eval"):
            assert err.startswith("JSON report: ") and err.count("\n") == 1, err
        else:
            assert err == "", err
        return
    assert err.count("\n") == 1 and err.endswith("\n"), err
    line = err.rstrip("\n")
    if code == INTERRUPTED:
        assert line == "clipsql: interrupted"
    else:
        assert line.startswith("clipsql: error: ") and case.says in line, line


def test_busy_names_the_holder(outcomes):
    """The busy store's line says who holds it: the pid (read from the engine's status file)
    and its command line, and what to do."""
    world = outcomes["_world"]
    line = outcomes["search-busy"][2].strip()
    assert line.startswith(
        f"clipsql: error: store {world['held'].resolve()} is busy: held by pid {world['holder_pid']} (python"
    )
    assert "open_store(store=sys.argv[1])" in line and line.endswith("; try again when it ends")


def test_ok_outputs(outcomes):
    assert "photo_id" in outcomes["search-ok"][1] and "stage" in outcomes["refresh-ok"][1]
    assert "recall@10" in outcomes["eval-ok"][1] and "SELECT" in outcomes["sql-ok"][1]
    assert "p0001" in outcomes["search-dash-id-ok"][1]  # '--2IBUMom1I' is a near copy of p0001


def test_an_interrupt_that_the_engine_turns_into_its_own_error_still_exits_130(monkeypatch, capsys):
    """DuckDB answers Ctrl-C or SIGTERM during a query with RuntimeError('Query interrupted'):
    main() noted the signal, so the command still ends as interrupted."""
    import clipsql.cli_search

    def query_interrupted(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # main()'s handler raises KeyboardInterrupt here
        except KeyboardInterrupt:
            raise RuntimeError("Query interrupted") from None
        return 0

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(clipsql.cli_search, "_sql", query_interrupted)
    assert main(["sql"]) == INTERRUPTED
    assert capsys.readouterr().err == "clipsql: interrupted\n"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # the caller's again


# --- arguments that start with '-' (in-process: the same main()) -------------------------


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def dash_store(base, tmp_path_factory) -> list[str]:
    return store_copy(base, tmp_path_factory.mktemp("dash") / "s")


def test_ids_and_terms_that_start_with_a_dash(dash_store, capsys, tiny_clip):
    opts = dash_store
    with open_store(opts[1], duckdb=opts[3]) as db:
        want = search.similar("--2IBUMom1I", 3, db=db)["photo_id"].tolist()
        want_abc = search.similar("-abc", 3, db=db)["photo_id"].tolist()
        want_combined = search.combined("-people 2:beach", 3, db=db, device="cpu")["photo_id"].tolist()
        want_text = search.text("-x", 3, db=db, device="cpu")["photo_id"].tolist()
        want_facets = search.facets(photo_id="-abc", n=20, by="country", db=db)
        want_k = search.similar("-kAbc1234567", 1, db=db)["photo_id"].tolist()
    assert want[0] == "p0001" and want_abc[0] == "p0002"

    def ids(*argv):
        code, out, err = cli(capsys, *argv, "--format", "json", *opts)
        assert code == 0 and err == "", (argv, err)
        return [r.get("photo_id") for r in json.loads(out)] if "facets" not in argv else json.loads(out)

    assert ids("search", "similar", "--2IBUMom1I", "-k", 3) == want
    assert ids("search", "similar", "-abc", "-k3") == want_abc  # an attached value
    code, out, err = cli(capsys, "search", "similar", "-k", 3, "-q", "--format", "json", *opts, "--", "-abc")
    assert (code, err, [r["photo_id"] for r in json.loads(out)]) == (0, "", want_abc)  # `-- ID` as before
    assert ids("search", "similar", "-qk3", "-abc") == want_abc  # a cluster of short options
    assert ids("search", "similar", "-kAbc1234567", "-k", 1) == want_k  # not -k with value 'Abc1234567'
    assert ids("search", "combined", "-people", "2:beach", "-k", 3, "--device", "cpu") == want_combined
    assert ids("search", "combined", "-people 2:beach", "-k", 3, "--device", "cpu") == want_combined
    assert ids("search", "text", "-x", "-k", 3, "--device", "cpu") == want_text
    assert len(ids("search", "crop", "--photo-id", "-abc", "--box", "0,0,1,1", "-k", 2, "--device", "cpu")) == 2
    facets = ids("search", "facets", "--photo-id", "-abc", "-k", 20, "--facet", "country")
    assert [f["photos"] for f in facets] == want_facets["photos"].tolist()


def test_an_argument_that_cannot_be_understood_says_how_to_pass_it(dash_store, capsys):
    code, out, err = cli(capsys, "search", "similar", "-k", 3, *dash_store)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("clipsql: error: the following arguments are required: photo_id")
    assert "put ids starting with '-' after --: clipsql search similar -- -abc" in err
    code, out, err = cli(capsys, "search", "facets", "--photo-id", "--facet", "country", *dash_store)
    assert code == 2 and err.count("\n") == 1 and "write a value that starts with '-' as --photo-id=-abc" in err
    code, out, err = cli(capsys, "search", "text", "beach", "--contry", "Iceland", *dash_store)
    assert code == 2 and err.count("\n") == 1 and "unrecognized arguments: --contry" in err  # still a typo


# --- empty results say why ----------------------------------------------------------------


def test_empty_results_name_the_filters_that_were_set(dash_store, capsys):
    code, out, err = cli(
        capsys, "search", "similar", "p0001", "--country", "Iceland", "--keyword", "beach", *dash_store
    )
    assert (code, err) == (0, "")
    assert out == (
        "no photos match: country='Iceland', keyword='beach'; `clipsql search facets` lists the values the store has\n"
    )
    code, out, err = cli(capsys, "search", "similar", "p0001", "--max-distance", 0.001, *dash_store)
    assert (code, out, err) == (0, "no photos match: max-distance=0.001\n", "")
    code, out, err = cli(capsys, "search", "duplicates", "--max-distance", 0.001, "--no-featured", *dash_store)
    assert (code, out, err) == (
        0,
        "no near-duplicate pairs within max-distance=0.001 among photos with no-featured\n",
        "",
    )
    code, out, _ = cli(capsys, "search", "similar", "p0001", "--country", "Atlantis", "--format", "json", *dash_store)
    assert (code, json.loads(out)) == (0, [])  # machine formats stay as they were


def test_empty_results_without_filters_say_the_store_has_no_searchable_photos(tmp_path, capsys, tiny_clip):
    root = tmp_path / "empty"
    with open_store(root, duckdb=str(root / "s.duckdb")) as db:  # vectors, but no photo to return
        db.upsert("photo_embeddings", embeddings_table(["gone"], searchdata.vectors(1), searchdata.MODEL, 1))
        _complete_model(db, str(tiny_clip))
    code, out, err = cli(capsys, "search", "similar", "gone", *duck(root))
    assert (code, err) == (0, "")
    assert out == (
        f"no results: duckdb:{root / 's.duckdb'} has no searchable photos for model 'tiny' (none loaded, "
        f"or all flagged deleted); run `clipsql refresh`\n"
    )


# --- query vectors: a norm that overflows float32 -----------------------------------------


@pytest.mark.parametrize("value", [1e38, 1e-30])
def test_a_vector_whose_float32_norm_is_not_finite_and_positive_is_refused(dash_store, value):
    vector = np.full(512, value, dtype=np.float32)
    assert np.all(np.isfinite(vector)) and np.any(vector)  # finite and non-zero: only the norm is wrong
    with open_store(dash_store[1], duckdb=dash_store[3]) as db:
        with pytest.raises(BadArgument, match="query vector has a norm that is not finite and positive"):
            search.nearest(db, vector, model=searchdata.MODEL)
        with pytest.raises(BadArgument, match="query vector"):
            search.facets(query_vec=vector, db=db)
        assert len(search.nearest(db, np.full(512, 1e17, dtype=np.float32), model=searchdata.MODEL, k=2)) == 2


# --- the refresh's new options ------------------------------------------------------------


def test_refresh_parser_has_the_delete_and_retry_after_options():
    args = build_parser().parse_args(["refresh", "--max-delete-fraction", "0.25", "--max-retry-after", "30"])
    assert (args.max_delete_fraction, args.max_retry_after) == (0.25, 30.0)
    args = build_parser().parse_args(["refresh"])
    assert (args.max_delete_fraction, args.max_retry_after) == (None, None)
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["refresh"].format_help().split())
    assert "--max-retry-after SECONDS" in text and "(default 0.1)" in text and "(default 60)" in text


def test_a_duckdb_file_held_by_another_process_is_busy(tmp_path):
    """DuckDB lets one process write a file: another process holding it makes every command
    exit 75 naming the holder (its pid read from the kernel's lock table, not the message)."""
    target = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        cli_command()[:1]
        + [
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()",
            str(target),
        ],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run(
            cli_command("status", "--store", str(tmp_path / "s"), "--duckdb", str(target), "--wait", "0"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 75, done.stderr
        assert done.stderr.count("\n") == 1 and f"is busy: held by pid {holder.pid}" in done.stderr
    finally:
        holder.kill()
        holder.wait(timeout=30)
