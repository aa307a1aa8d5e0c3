"""docs/console.md, the SQL console page: one clickhouse-client command per file of queries/,
generated from the query headers (clipsql.queries.console_commands), so it cannot go stale;
and every generated command runs, its values given as text the way clickhouse-client sends
them, on a real chdb store (chdb standing in for the server)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

import searchdata
from clipsql.db import open_store, split_statements
from clipsql.queries import CONSOLE_VARIABLES, console_command, console_commands, load_queries, parse_query_file
from clipsql.udf import chdb_scripts_dir, register_text_embedding

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_DOCS = ROOT / "docs" / "console.md"
QUERY_FILES = sorted((Path(__file__).resolve().parents[1] / "queries").glob("*.sql"))
REGENERATE = (
    "regenerate the 'Every named query' block of docs/console.md with clipsql.queries.console_commands() "
    "(`clipsql sql --console`)"
)


@pytest.mark.parametrize("path", QUERY_FILES, ids=[p.stem for p in QUERY_FILES])
def test_console_docs_have_a_clickhouse_client_command_for_every_query_file(path):
    text = CONSOLE_DOCS.read_text(encoding="utf-8")
    commands = [c for c in re.split(r"\n(?=clickhouse-client)", text) if c.startswith("clickhouse-client")]
    runs = re.compile(r"--queries-file (\S+ )*queries/" + re.escape(path.name) + r"$", re.MULTILINE)
    assert any(runs.search(c.split("\n\n")[0]) for c in commands), (
        f"docs/console.md has no clickhouse-client command for queries/{path.name}: {REGENERATE}"
    )


def test_console_docs_hold_the_generated_commands_verbatim():
    assert console_commands() in CONSOLE_DOCS.read_text(encoding="utf-8"), f"docs/console.md is stale: {REGENERATE}"


def test_a_command_names_every_parameter_with_an_example_value(tmp_path):
    path = tmp_path / "by_country.sql"
    path.write_text(
        "-- name: by_country\n-- Photos from a country. More text.\n-- Parameters:\n"
        "--   country  Nullable(String)  only this country\n--   k  UInt32  how many\n"
        "--   model  String  label\n"
        "SELECT photo_id FROM photos WHERE {country:Nullable(String)} IS NULL AND {k:UInt32} > 0 "
        "AND {model:String} != ''\n",
        encoding="utf-8",
    )
    query = parse_query_file(path)
    assert console_command(query) == (
        "clickhouse-client \\\n    --param_country='\\N' \\\n    --param_k=10 \\\n"
        '    --param_model="$MODEL" \\\n    --queries-file queries/by_country.sql'
    )
    short = dataclasses.replace(query, parameters={"k": query.parameters["k"]})
    assert console_command(short) == "clickhouse-client --param_k=10 --queries-file queries/by_country.sql"
    text = console_commands({"by_country": query})
    assert "# by_country: Photos from a country.\n" + console_command(query) + "\n" in text
    assert text.startswith("MODEL=")


def _as_clickhouse_client_runs_it(command: str, variables: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """([files, in the order clickhouse-client runs them], {name: value text}) of a generated
    command, its shell variables expanded."""
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    assert "$" not in command, f"an unknown shell variable in {command!r}"
    words = shlex.split(command.replace("\\\n", " "))
    at = words.index("--queries-file")
    assert words[0] == "clickhouse-client" and at > 0
    params = dict(w[len("--param_") :].split("=", 1) for w in words[1:at])
    return words[at + 1 :], params


def test_every_console_command_runs_on_chdb_as_clickhouse_client_sends_it(tmp_path, tiny_clip):
    from chdb import session

    queries = load_queries()
    with open_store(tmp_path) as db:
        vectors = searchdata.load(db, 300, model_source=str(tiny_clip))
        register_text_embedding(db, device="cpu")  # search_text_sql calls it (QUERY_VEC is given here)
        db.after_load()  # photo_embeddings_ann_512, which search_photos_ann reads
        variables = {name: "" for name, _, _ in CONSOLE_VARIABLES}
        variables.update(
            MODEL=searchdata.MODEL, PHOTO_ID=searchdata.photo_id(7), QUERY_VEC=json.dumps(vectors[7].tolist())
        )
        # Parameters only the analyst knows (EVAL_SET...) become shell variables named after them.
        for query in queries.values():
            for name in query.parameters:
                variables.setdefault(name.upper(), "x")
        path = (tmp_path / "chdb").resolve()
        chdb_session = session.Session(f"{path}?udf_path={chdb_scripts_dir(path)}")  # the store's engine
        try:
            for name, query in sorted(queries.items()):
                files, params = _as_clickhouse_client_runs_it(console_command(query), variables)
                assert Path(files[-1]).name == query.path.name
                assert files[:-1] == list(query.runs_after)
                assert set(params) == set(query.parameters), name
                try:
                    for script in files[:-1]:  # the same session, as clickhouse-client runs them
                        for statement in split_statements((ROOT / script).read_text(encoding="utf-8")):
                            chdb_session.query(statement, "CSV", params=params)
                    chdb_session.query(query.sql, "CSV", params=params)
                except Exception as exc:  # noqa: BLE001 - name the command that failed
                    pytest.fail(f"{name}: {console_command(query)}\nfailed on chdb: {str(exc)[:500]}")
            out = str(
                chdb_session.query(
                    queries["search_text_sql"].sql,
                    "CSV",
                    params={"query": "surfing", "model": searchdata.MODEL, "k": "3"},
                )
            )
            assert len(out.strip().splitlines()) == 3
        finally:
            chdb_session.close()
