"""Job files and the schedules in etl/: what can be checked without cron, systemd or Airflow."""

import ast
import configparser
import importlib.util
import re
import shlex

import pytest

from clipsql.cli import main
from clipsql.db import open_store
from clipsql.errors import BadArgument
from clipsql.jobs import JOB_KEYS, job_settings, load_job, refresh_arguments
from etl_support import REPO, EtlServer, write_release

ETL = REPO / "etl"
JOB = "etl/unsplash_lite.toml"


def test_the_shipped_job_file_sets_every_documented_key_and_resolves_paths():
    settings = load_job(ETL / "unsplash_lite.toml")
    assert settings["source"] == "https://unsplash.com/data/lite/latest"
    assert settings["model"] == "openai/clip-vit-base-patch32"
    assert settings["store"] == str(REPO / "clipsql-store")  # relative to etl/
    assert settings["chunk_size"] == 1024 and settings["retry_backoff"] == 3600.0
    assert settings["purge"] is False and settings["retry_failed"] is False
    text = (ETL / "unsplash_lite.toml").read_text()
    for table, key in JOB_KEYS:  # each key is set, or shown commented out, in its table
        section = text.split(f"[{table}]")[1].split("\n[")[0]
        assert re.search(rf"^#? ?{key} = ", section, re.MULTILINE), (table, key)
    arguments = refresh_arguments(job_settings(ETL / "unsplash_lite.toml", limit=10, purge=None))
    assert arguments["limit"] == 10 and arguments["purge"] is False and arguments["download"].workers == 16


def test_every_download_setting_is_reachable_from_the_job_file_and_the_command_line(tmp_path):
    import dataclasses

    from clipsql.cli import build_parser
    from clipsql.download import DownloadOptions

    fields = {f.name for f in dataclasses.fields(DownloadOptions)}
    values = {
        "workers": 7,
        "width": 320,
        "timeout_s": 11.0,
        "retries": 2,
        "max_bytes": 12345,
        "max_retry_after_s": 9.0,
        "connect_timeout_s": 3.0,
        "total_timeout_s": 33.0,
        "backoff_s": 0.25,
        "max_pixels": 4321,
    }
    assert {key for table, key in JOB_KEYS if table == "download"} == set(values)
    job = tmp_path / "job.toml"
    job.write_text("[download]\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items()), encoding="utf-8")
    options = refresh_arguments(job_settings(job))["download"]
    got = dataclasses.asdict(options)
    assert set(got) == fields
    assert got == {("read_timeout_s" if k == "timeout_s" else k): v for k, v in values.items()}
    # The same settings on the command line: every setting of the tree is an option of
    # `clipsql refresh`, under the name, dest and type the tree declares.
    from clipsql.jobs import SETTINGS
    from clipsql.settings import LEAVES

    assert SETTINGS == tuple(leaf.dest for leaf in LEAVES)
    assert set(JOB_KEYS) == {(leaf.table, leaf.key) for leaf in LEAVES}
    refresh_parser = build_parser()._subparsers._group_actions[0].choices["refresh"]
    actions = {action.dest: action for action in refresh_parser._actions}
    for leaf in LEAVES:
        action = actions[leaf.dest]
        assert leaf.option in action.option_strings and action.default is None, leaf
        assert action.type is (None if leaf.kind in (str, bool) else leaf.kind), leaf


@pytest.mark.parametrize(
    "text, message",
    [
        ("[sorce]\nlocation = 'x'\n", r"unknown table \[sorce\]"),
        ("[source]\nlimt = 3\n", "unknown key 'limt' in \\[source\\]"),
        ("[source]\nlimit = '3'\n", r"\[source\] limit must be int"),
        ("[refresh]\npurge = 1\n", r"\[refresh\] purge must be bool"),
        ("[store]\nclickhouse_url = 'http://h:8123/db'\nduckdb = 'x.duckdb'\n", "choose one backend"),
        ("[source\n", "job file"),
    ],
)
def test_bad_job_files_are_refused_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(BadArgument, match=message) as info:
        load_job(path)
    assert str(path) in str(info.value)
    with pytest.raises(BadArgument, match="does not exist"):
        load_job(tmp_path / "missing.toml")


def test_command_line_options_override_the_job_file(tmp_path, tiny_clip, capsys):
    server = EtlServer()
    try:
        write_release(tmp_path / "jobs" / "release", server.url, range(5), keywords=False)
        job = tmp_path / "jobs" / "nightly.toml"
        job.write_text(
            f"[source]\nlocation = 'release'\nlimit = 4\n[model]\nname = '{tiny_clip}'\n"
            f"[store]\npath = '../store'\n[download]\nretries = 0\n[refresh]\nchunk_size = 2\n"
        )
        assert main(["refresh", str(job), "--limit", "3", "-q"]) == 0
    finally:
        server.stop()
    assert "source            3" in capsys.readouterr().out
    with open_store(tmp_path / "store") as db:  # the store of the job file, relative to it
        assert db.count("photos") == 3 and db.count("photo_embeddings") == 3
    assert main(["status", str(job)]) == 0
    assert "last runs:" in capsys.readouterr().out


def refresh_command_of(line: str) -> list[str]:
    words = shlex.split(line)
    start = next(i for i, w in enumerate(words) if w.endswith("clipsql") and words[i + 1] == "refresh")
    return words[start : start + 3]


def test_crontab_line_runs_the_job_every_night():
    lines = [
        line
        for line in (ETL / "crontab").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(lines) == 1
    minute, hour, dom, month, dow, command = lines[0].split(None, 5)
    assert 0 <= int(minute) <= 59 and 0 <= int(hour) <= 23 and (dom, month, dow) == ("*", "*", "*")
    assert refresh_command_of(command)[1:] == ["refresh", JOB]
    assert (REPO / JOB).is_file()


def read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(ETL / "systemd" / name)
    return unit


def test_systemd_service_and_timer_pair():
    service, timer = read_unit("clipsql-refresh.service"), read_unit("clipsql-refresh.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert refresh_command_of(service["Service"]["ExecStart"])[1:] == ["refresh", JOB]
    assert service["Service"]["ExecStart"].startswith("/")  # systemd wants an absolute path
    assert "75" in service["Service"]["SuccessExitStatus"].split()
    assert timer["Timer"]["Unit"] == "clipsql-refresh.service"
    assert re.fullmatch(r"\*-\*-\* \d\d:\d\d:\d\d", timer["Timer"]["OnCalendar"])
    assert timer["Timer"]["Persistent"] == "true" and timer["Install"]["WantedBy"] == "timers.target"


DAG_FILE = ETL / "airflow" / "clipsql_refresh_dag.py"


def test_airflow_dag_fans_out_over_shards_then_finishes():
    tree = ast.parse(DAG_FILE.read_text())
    values = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
    assert ast.literal_eval(values["JOB_FILE"]) == JOB
    assert "clipsql refresh {JOB_FILE}" in ast.unparse(values["REFRESH"])
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    # The shards: one BashOperator mapped over them (dynamic task mapping), task i running
    # `--shard i/SHARDS`.
    [expand] = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "expand"]
    partial = expand.func.value
    assert isinstance(partial, ast.Call) and ast.unparse(partial.func) == "BashOperator.partial"
    mapped = ast.unparse({k.arg: k.value for k in expand.keywords}["bash_command"])
    assert "{REFRESH} --shard {i}/{SHARDS}" in mapped and "for i in range(SHARDS)" in mapped
    # The final step, once, after every shard.
    [finish] = [c for c in calls if getattr(c.func, "id", "") == "BashOperator"]
    assert ast.unparse({k.arg: k.value for k in finish.keywords}["bash_command"]) == "f'{REFRESH} --finish'"
    edges = [n.value for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.BinOp)]
    assert [ast.unparse(e) for e in edges] == ["shards >> finish"]
    # A refresh that finds the store locked (exit 75) skips the task instead of failing it
    # (and a skipped shard skips the finish), and nights never overlap.
    for operator in (partial, finish):
        assert ast.literal_eval({k.arg: k.value for k in operator.keywords}["skip_on_exit_code"]) == 75
    dag = next(c for c in calls if getattr(c.func, "id", "") == "DAG")
    assert ast.literal_eval({k.arg: k.value for k in dag.keywords}["max_active_runs"]) == 1


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow is not installed")
def test_airflow_loads_the_dag(tmp_path, monkeypatch):  # pragma: no cover - needs Airflow
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE), include_examples=False)
    assert bag.import_errors == {}
    dag = bag.get_dag("clipsql_refresh")
    assert sorted(task.task_id for task in dag.tasks) == ["finish", "refresh_shard"]
    assert dag.get_task("refresh_shard").downstream_task_ids == {"finish"}
    assert f"clipsql refresh {JOB} --quiet --finish" in dag.get_task("finish").bash_command
