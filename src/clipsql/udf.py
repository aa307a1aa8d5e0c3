"""`clip_text_embedding(text) -> Array(Float32)`: the CLIP text embedding as a SQL function.

With it an analyst searches in plain SQL, ``ORDER BY cosineDistance(embedding,
clip_text_embedding('surfing'))`` (queries/search_text_sql.sql is the named query that does
it). It returns the vector :func:`clipsql.search.text` searches with, for the same checkpoint:
(d,) float32, L2-normalized (d = 512 for ViT-B/32), the text cut to the 77 tokens CLIP reads.
NULL and blank text (empty or only whitespace) give an empty array, on every engine: there is
no text to embed, and a distance between a stored vector and [] is an error, not a ranking.

Where the function comes from (the model runs once per process, loaded on the first call):

| engine | how | the model runs in |
| --- | --- | --- |
| ClickHouse server | executable_pool UDF: sql/clickhouse/udf/ XML + :func:`main` | the script, kept by the server |
| chdb | the same XML (`<command>` replaced), by :func:`register_text_embedding` | the script, a child process |
| DuckDB | ``create_function`` (Arrow, a chunk per call), by :func:`register_text_embedding` | this process |

(:func:`main` is the console script `clipsql-text-embedding-udf`; in DuckDB the model is the
one :mod:`clipsql.search` uses in this process: both take it from
:func:`clipsql.embed.query_text_encoder`: on the CPU the checkpoint's ONNX text tower, checked
against the model and run without torch, so the script starts in about a second.)

Why chdb does not use its in-process Python UDFs (``chdb.create_function``, chdb 4): their
result is always Nullable and ClickHouse has no Nullable(Array), so they cannot return
Array(Float32) (chdb: "Nested type Array(Float32) cannot be inside Nullable type"); and they
run once per row even for a constant argument (measured: 25,002 calls for one ORDER BY over
25,000 rows), where the executable function with `deterministic` gets a one-row block. An
executable function needs the engine started with a user_scripts folder (chdb's `udf_path`
option); :func:`clipsql.db.open_store` starts chdb with :func:`chdb_scripts_dir`
(:mod:`clipsql.resources`, where both find it).

The script protocol (JSONEachRow, send_chunk_header): for each block ClickHouse writes a line
with the row count n, then n lines ``{"text": "..."}`` (or null); :func:`serve` answers n lines
``{"embedding": [...]}`` in the same order and flushes. It embeds each distinct non-blank text
of a block once, in batches of `--batch-size`, keeps the vectors of recent texts
(:class:`CachedEmbed`), and exits when stdin closes. Its stdout is the protocol, so its
logging goes to stderr.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .constants import DEFAULT_MODEL
from .embed import check_device_name, check_dual_encoder, model_label, query_text_encoder
from .errors import BadArgument, ClipsqlError, ModelError, StoreError
from .resources import chdb_scripts_dir, sql_dir

log = logging.getLogger(__name__)

FUNCTION_NAME = "clip_text_embedding"
#: The console script that runs :func:`main` (pyproject.toml [project.scripts]).
CONSOLE_SCRIPT = "clipsql-text-embedding-udf"
#: The model when the script is given no --model: a hub name or a checkpoint directory.
MODEL_ENV = "CLIPSQL_MODEL"
#: The device when the script is given no --device.
DEVICE_ENV = "CLIPSQL_DEVICE"
#: Texts per forward pass in the script and in DuckDB.
DEFAULT_BATCH_SIZE = 64
#: torch CPU threads of the script. One text is a small job: on 2 idle cores a ViT-B/32 query
#: text took 20.7 ms with 1 thread and 19.1 ms with 2, but on 2 busy cores (a server runs
#: queries meanwhile) 16-30 ms with 1 thread and 100-900 ms with 2, threads spinning against
#: the engine's.
DEFAULT_THREADS = 1
_EMPTY_ANSWER = b'{"embedding":[]}\n'


class UdfProtocolError(ClipsqlError):
    """The script's stdin does not follow the executable-function protocol (see the module docstring)."""


# --- embedding rows ----------------------------------------------------------------------


def is_blank(text: str | None) -> bool:
    """True for NULL (None) and for text with nothing but whitespace: no embedding, []."""
    return text is None or not text.strip()


def embed_rows(
    embed: Callable[[list[str]], np.ndarray], texts: Sequence[str | None], batch_size: int = DEFAULT_BATCH_SIZE
) -> list[np.ndarray | None]:
    """The embedding of each text, in order; None for a blank one (see :func:`is_blank`).

    Args:
        embed: texts -> (n, d) float32, L2-normalized (e.g. :meth:`clipsql.embed.ClipEmbedder.embed_texts`).
        texts: the rows, duplicates allowed: each distinct text is embedded once.
        batch_size: texts per call of `embed`.

    Returns:
        One (d,) float32 vector or None per text.

    Raises:
        ModelError: `embed` returned a number of rows other than the texts it was given.
    """
    distinct = list(dict.fromkeys(t for t in texts if t is not None and not is_blank(t)))
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(distinct), batch_size):
        batch = distinct[start : start + batch_size]
        out = np.asarray(embed(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ModelError(f"the text model returned shape {out.shape} for {len(batch)} texts")
        vectors.update(zip(batch, out))
    return [None if t is None or is_blank(t) else vectors[t] for t in texts]


class CachedEmbed:
    """`embed` remembering the vectors of the `size` texts used last (least recently used out).

    ClickHouse evaluates a constant argument once when it plans a query and once more when it
    runs it (observed: two one-row blocks for queries/search_text_sql.sql), and an analyst
    repeats queries: the script answers those from here instead of running the model again.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], size: int = 1024):
        self._embed = embed
        self._size = size
        self._vectors: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.hits = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        """texts -> (n, d) float32, the model run only on the texts not remembered."""
        found = {t: self._vectors[t] for t in texts if t in self._vectors}
        self.hits += len(found)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            found.update(zip(missing, np.asarray(self._embed(missing), dtype=np.float32)))
        for text in texts:
            self._vectors[text] = found[text]
            self._vectors.move_to_end(text)
        while len(self._vectors) > self._size:
            self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])


# --- the executable function's script ----------------------------------------------------


def _row_count(header: bytes, block: int) -> int:
    try:
        count = int(header)
    except ValueError:
        count = -1
    if count < 0:
        raise UdfProtocolError(f"block {block}: expected a row count line (send_chunk_header = 1), got {header[:80]!r}")
    return count


def _read_text(stdin: BinaryIO, block: int, row: int, count: int) -> str | None:
    line = stdin.readline()
    if not line:
        raise UdfProtocolError(f"block {block}: stdin ended after {row} of {count} rows")
    try:
        record = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        record = None
    if not isinstance(record, dict) or len(record) != 1:
        raise UdfProtocolError(
            f"block {block} row {row + 1}: expected a JSONEachRow object with one "
            f"field, the text (format JSONEachRow), got {line[:80]!r}"
        )
    text = next(iter(record.values()))
    if text is not None and not isinstance(text, str):
        raise UdfProtocolError(f"block {block} row {row + 1}: the text must be a string or null, got {text!r:.80}")
    return text


def serve(
    stdin: BinaryIO, stdout: BinaryIO, embed: Callable[[list[str]], np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> int:
    """Answer blocks of rows until stdin closes (the protocol of the module docstring).

    Args:
        stdin, stdout: binary streams, ClickHouse's pipes.
        embed: texts -> (n, d) float32, L2-normalized.
        batch_size: texts per call of `embed`.

    Returns:
        The number of blocks answered.

    Raises:
        UdfProtocolError: a malformed row count or row, or stdin closed inside a block.
    """
    blocks = 0
    while True:
        header = stdin.readline()
        if not header:
            return blocks
        block = blocks + 1
        count = _row_count(header, block)
        started = time.perf_counter()
        texts = [_read_text(stdin, block, row, count) for row in range(count)]
        read_s = time.perf_counter() - started
        vectors = embed_rows(embed, texts, batch_size)
        answers: dict[int, bytes] = {}  # rows of the same text share one vector: encode it once
        for vector in vectors:
            if vector is not None and id(vector) not in answers:
                answers[id(vector)] = (json.dumps({"embedding": vector.tolist()}) + "\n").encode()
        stdout.write(b"".join(_EMPTY_ANSWER if v is None else answers[id(v)] for v in vectors))
        stdout.flush()
        blocks = block
        log.debug(
            "block %d: %d rows, %d distinct texts; read %.1f ms, embedded and written %.1f ms",
            block,
            count,
            len(answers),
            1000 * read_s,
            1000 * (time.perf_counter() - started - read_s),
        )


def _load_text_model(model: str, device: str):
    """The (embedder, embed) pair of search.text for `model` (loaded, or cached in this process)."""
    embedder = query_text_encoder(model, model_label(model), device)
    return embedder, embedder.embed_texts


def main(argv: Sequence[str] | None = None) -> int:
    """The executable function's script (a process's entry point): load the model once, then
    :func:`serve` stdin (its stdout; `print` goes to stderr from here on).

    Exit status: 0 when stdin closes, 1 when the model cannot be loaded, 2 for bad
    arguments, 3 for input that breaks the protocol. Errors are logged to stderr.
    """
    parser = argparse.ArgumentParser(
        prog=CONSOLE_SCRIPT,
        description=f"The script behind the ClickHouse function {FUNCTION_NAME}(text) -> Array(Float32): reads "
        'blocks of JSONEachRow rows {"text": ...} from stdin, each after a line with its row count, '
        'and writes one line {"embedding": [...]} per row (a CLIP text embedding, L2-normalized; '
        "[] for NULL or blank text). See sql/clickhouse/udf/clip_text_embedding_function.xml.",
    )
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_ENV) or None,
        help=f"CLIP checkpoint: hub name or local directory (default ${MODEL_ENV}, else {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get(DEVICE_ENV) or "auto",
        help=f"auto, cpu, cuda[:N] or mps (default ${DEVICE_ENV}, else auto)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per forward pass")
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}; 0 = torch's default, one per core)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="stderr logging (the server keeps the last lines in its log)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        check_device_name(args.device)
    except BadArgument as exc:
        parser.error(f"--{exc}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 or more, got {args.threads}")
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"%(asctime)s {FUNCTION_NAME}[%(process)d] %(levelname)s %(message)s",
    )
    protocol = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() from a library must not corrupt the protocol
    model = args.model or DEFAULT_MODEL
    started = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        embedder, embed = _load_text_model(model, args.device)
    except (ModelError, BadArgument) as exc:
        log.error("%s: cannot start: %s", FUNCTION_NAME, exc)
        return 1
    log.info(
        "model %s (%d-dim) on %s loaded in %.1f s", model, embedder.dim, embedder.device, time.perf_counter() - started
    )
    try:
        blocks = serve(sys.stdin.buffer, protocol, CachedEmbed(embed), batch_size=args.batch_size)
    except UdfProtocolError as exc:
        log.error("%s: %s", FUNCTION_NAME, exc)
        return 3
    except BrokenPipeError:
        log.info("stdout closed by the reader; exiting")
        return 0
    log.info("stdin closed after %d blocks; exiting", blocks)
    return 0


def function_config_path() -> Path:
    """sql/clickhouse/udf/clip_text_embedding_function.xml: the function as a server installs it."""
    return sql_dir() / "clickhouse" / "udf" / "clip_text_embedding_function.xml"


def function_config(command: str | None = None) -> str:
    """The function's XML configuration, with `<command>` replaced by `command` when given.

    Raises:
        BadArgument: `command` empty or with a double space (ClickHouse splits it on spaces).
    """
    text = function_config_path().read_text(encoding="utf-8")
    if command is None:
        return text
    if not command.strip() or "  " in command:
        raise BadArgument(f"an executable function's command must be words separated by single spaces, got {command!r}")
    root = ET.fromstring(text, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    found = root.find("./function/command")
    if found is None:
        raise StoreError(f"{function_config_path()} has no <function><command>")
    found.text = command
    return ET.tostring(root, encoding="unicode") + "\n"


# --- registration in the stores clipsql opens --------------------------------------------
# chdb_scripts_dir (imported above from clipsql.resources) is the folder the chdb engine of a
# data path runs functions from; `from clipsql.udf import chdb_scripts_dir` keeps working.


def register_text_embedding(
    db,
    model: str | None = None,
    *,
    source: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> str:
    """Make ``clip_text_embedding(text)`` callable in `db`'s SQL, embedding with `model`.

    Cheap: no model is loaded here. DuckDB loads it on the first call, in this process (shared
    with :mod:`clipsql.search`); chdb starts the script (:func:`main`) on the first call. Calling
    it again replaces the function (e.g. with another model). On a ClickHouse server the function
    is installed by the administrator (docs/console.md): this only checks that it exists.

    Args:
        db: an open :class:`clipsql.db.Store`.
        model: stored model label or source whose vectors the function must match; default the
            store's default model (:func:`clipsql.search.resolve_model`).
        source: the checkpoint to load instead of the stored model_source (the same model at
            another path, e.g. a copy on this machine).
        device: auto, cpu, cuda[:N] or mps.
        batch_size: texts per forward pass.

    Returns:
        The label of the model (models.model): the `model` to search with, e.g. as the
        {model:String} of queries/search_text_sql.sql.

    Raises:
        NotFound: no vectors for `model` (or none at all) in the store.
        BadArgument: a bad device or batch size.
        ModelError: a checkpoint directory that does not exist.
        StoreError: chdb started without clipsql's scripts folder, or a server without the function.
    """
    from .search.models import resolve_model  # not the whole search package: the UDF process loads little

    check_device_name(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadArgument(f"batch_size must be a positive integer, got {batch_size!r}")
    label, stored_source, _ = resolve_model(db, model)
    checkpoint = os.fspath(source) if source is not None else stored_source
    how = db.capabilities.text_function  # clipsql.engines.base.TEXT_FUNCTION_KINDS
    if how == "server_installed":
        _check_server_function(db, label)
        return label
    _check_checkpoint(checkpoint)
    if how == "in_process":
        # The function lives on the connection: registered again on every connect (a store
        # lets go of an idle engine, see clipsql.engines.base.Store).
        db.on_connect(
            FUNCTION_NAME,
            lambda store: _register_duckdb(store.connection, checkpoint, label, device, batch_size),  # type: ignore[attr-defined]
        )
    elif how == "engine_script":
        _register_chdb(db, checkpoint, device, batch_size)
    else:
        raise StoreError(f"{db.description}: no {FUNCTION_NAME} for engine {db.engine!r} ({how})")
    log.info("%s registered in %s: model %s from %s on %s", FUNCTION_NAME, db.description, label, checkpoint, device)
    return label


def _check_checkpoint(checkpoint: str) -> None:
    # A path that is not there fails now, with its name (as ClipEmbedder tells a path from a hub
    # name); a hub name can only fail when it is loaded.
    check_dual_encoder(
        checkpoint, f" (registering {FUNCTION_NAME}: pass source= the checkpoint's path on this machine)"
    )


def _register_duckdb(connection, checkpoint: str, label: str, device: str, batch_size: int) -> None:
    import duckdb
    import pyarrow as pa

    # No annotations: DuckDB evaluates them (as strings, in this module's globals) to infer types.
    def clip_text_embedding(texts):
        """A chunk of rows, pyarrow string array (n,) -> pyarrow list<float> array (n,)."""
        embedder = query_text_encoder(checkpoint, label, device)  # loaded on the first call, then cached
        vectors = embed_rows(embedder.embed_texts, texts.to_pylist(), batch_size)
        lengths = np.array([0 if v is None else len(v) for v in vectors], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        present = [v for v in vectors if v is not None]
        values = np.concatenate(present).astype(np.float32) if present else np.zeros(0, np.float32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))

    try:
        connection.remove_function(FUNCTION_NAME)
    except duckdb.Error:
        pass  # not registered yet
    # side_effects=False: deterministic, so DuckDB folds a constant argument into one call.
    connection.create_function(
        FUNCTION_NAME,
        clip_text_embedding,
        ["VARCHAR"],
        "FLOAT[]",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )


def _launcher(checkpoint: str, device: str, batch_size: int) -> str:
    args = ["--model", checkpoint, "--device", device, "--batch-size", str(batch_size)]
    package_parent = str(Path(__file__).resolve().parent.parent)
    return (
        f"#!{sys.executable}\n"
        f"# Written by clipsql.udf.register_text_embedding for this process's chdb engine.\n"
        f"import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        f"from clipsql.udf import main\n"
        f"sys.exit(main({args!r}))\n"
    )


def _register_chdb(db, checkpoint: str, device: str, batch_size: int) -> None:
    folder = chdb_scripts_dir((Path(db.root) / "chdb").resolve())
    engine_folder = str(db.query_df("SELECT getServerSetting('user_scripts_path') AS path")["path"].iloc[0])
    if os.path.normpath(engine_folder) != os.path.normpath(folder):
        raise StoreError(
            f"cannot register {FUNCTION_NAME} in {db.description}: this process's chdb engine was "
            f"started with user_scripts_path {engine_folder!r}, not clipsql's {str(folder)!r} "
            f"(another chdb connection opened it first; open the store with clipsql.db.open_store "
            f"before any other chdb use)"
        )
    text = _launcher(checkpoint, device, batch_size)
    # The name changes with the model, so the XML changes and the reload replaces the running process.
    name = f"{FUNCTION_NAME}_{hashlib.sha256(text.encode()).hexdigest()[:12]}.py"
    script = folder / name
    script.write_text(text, encoding="utf-8")
    script.chmod(0o755)
    config = folder / f"{FUNCTION_NAME}_function.xml"
    staging = folder / f".{FUNCTION_NAME}_function.xml.tmp"  # not *.xml: the engine reads only those
    staging.write_text(function_config(command=name), encoding="utf-8")
    os.replace(staging, config)
    db.command("SYSTEM RELOAD FUNCTIONS")


def _check_server_function(db, label: str) -> None:
    found = db.query_df("SELECT count() AS n FROM system.functions WHERE name = {name:String}", {"name": FUNCTION_NAME})
    if int(found["n"].iloc[0]) == 0:
        raise StoreError(
            f"{db.description} has no function {FUNCTION_NAME}: install "
            f"sql/clickhouse/udf/clip_text_embedding_function.xml and the {CONSOLE_SCRIPT} script "
            f"on the server (docs/console.md), with the model of {label!r}"
        )
    log.info(
        "%s has %s; it must embed with the checkpoint of model %s (the server's <command> sets it)",
        db.description,
        FUNCTION_NAME,
        label,
    )


if __name__ == "__main__":
    sys.exit(main())
