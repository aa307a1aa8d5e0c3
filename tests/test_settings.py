"""The settings tree (clipsql.settings): every setting reachable from a job file and from the
command line under the names the tree declares, defaults read from the modules that own
them, and bad job files refused naming the file and the key. Real TOML files and the real
argument parser; no mocks."""

from __future__ import annotations

import dataclasses
import inspect
import os

import pytest

from clipsql.cli import build_parser
from clipsql.constants import DEFAULT_MODEL
from clipsql.download import DownloadOptions
from clipsql.errors import BadArgument
from clipsql.refresh import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_DELETE_FRACTION, DEFAULT_RETRY_BACKOFF_S, refresh
from clipsql.settings import (
    LEAVES,
    TABLES,
    DownloadSettings,
    ModelSettings,
    RefreshSettings,
    Settings,
    SourceSettings,
    StoreSettings,
    leaves,
    read_job_file,
    setting,
)
from clipsql.sources import DEFAULT_SOURCE


def other_value(leaf):
    """A value of `leaf`'s type that is not its default (for paths: a relative one)."""
    if leaf.kind is bool:
        return not leaf.default
    if leaf.kind is int:
        return (leaf.default or 0) + 7
    if leaf.kind is float:
        return (leaf.default or 0.0) + 0.25
    return {"location": "photos.tsv000", "name": "../models/clip", "path": "store", "duckdb": "data/x.duckdb"}.get(
        leaf.key, f"{leaf.key}-value"
    )


def toml(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def job_text(values: dict) -> str:
    """A job file setting {leaf: value}."""
    text = ""
    for table in TABLES:
        lines = [f"{leaf.key} = {toml(value)}\n" for leaf, value in values.items() if leaf.table == table]
        text += f"[{table}]\n" + "".join(lines) if lines else ""
    return text


def refresh_parser():
    return build_parser()._subparsers._group_actions[0].choices["refresh"]


def test_the_tree_mirrors_the_job_file_tables():
    assert TABLES == ("source", "model", "store", "download", "refresh")
    assert {table: [leaf.key for leaf in leaves(table)] for table in TABLES} == {
        "source": ["location", "limit"],
        "model": ["name", "label", "device", "batch_size", "precision"],
        "store": ["path", "clickhouse_url", "duckdb", "wait_s"],
        "download": [
            "workers",
            "width",
            "timeout_s",
            "retries",
            "max_bytes",
            "max_retry_after_s",
            "connect_timeout_s",
            "total_timeout_s",
            "backoff_s",
            "max_pixels",
        ],
        "refresh": [
            "chunk_size",
            "retry_failed",
            "retry_backoff_s",
            "purge",
            "max_delete_fraction",
            "shard",
            "finish",
            "executor",
        ],
    }
    assert [leaf.option for leaf in LEAVES] == [
        "--source",
        "--limit",
        "--model",
        "--model-name",
        "--device",
        "--batch-size",
        "--precision",
        "--store",
        "--clickhouse-url",
        "--duckdb",
        "--wait",
        "--workers",
        "--width",
        "--timeout",
        "--retries",
        "--max-bytes",
        "--max-retry-after",
        "--connect-timeout",
        "--total-timeout",
        "--backoff",
        "--max-pixels",
        "--chunk-size",
        "--retry-failed",
        "--retry-backoff",
        "--purge",
        "--max-delete-fraction",
        "--shard",
        "--finish",
        "--executor",
    ]
    tree = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tree.download.workers = 3  # type: ignore[misc]


def test_defaults_come_from_the_modules_that_own_them():
    d = DownloadOptions()
    assert DownloadSettings().timeout_s == d.read_timeout_s
    assert Settings().download_options() == d
    assert ModelSettings().batch_size is None and ModelSettings().name == DEFAULT_MODEL
    assert SourceSettings().location == DEFAULT_SOURCE
    assert RefreshSettings() == RefreshSettings(
        chunk_size=DEFAULT_CHUNK_SIZE,
        retry_backoff_s=DEFAULT_RETRY_BACKOFF_S,
        max_delete_fraction=DEFAULT_MAX_DELETE_FRACTION,
    )
    assert StoreSettings() == StoreSettings(path=None, clickhouse_url=None, duckdb=None)
    # The default tree is refresh()'s own defaults, keyword by keyword: one name, one default.
    parameters = inspect.signature(refresh).parameters
    arguments = Settings().refresh_arguments()
    assert set(arguments) == set(parameters) - {"progress"}
    assert arguments == {name: parameters[name].default for name in arguments}


def test_every_download_option_is_one_download_setting():
    targets = [leaf.to for leaf in leaves("download")]
    assert sorted(targets) == sorted(f.name for f in dataclasses.fields(DownloadOptions))
    assert setting("download.timeout_s").to == "read_timeout_s" and setting("timeout").key == "timeout_s"
    tree = Settings().override(timeout=7.0, backoff=0.125)
    assert tree.download.timeout_s == 7.0
    options = tree.download_options()
    assert (options.read_timeout_s, options.backoff_s) == (7.0, 0.125)


def test_every_setting_is_reachable_from_a_job_file(tmp_path):
    values = {leaf: other_value(leaf) for leaf in LEAVES if leaf.key != "clickhouse_url"}  # one backend
    job = tmp_path / "jobs" / "nightly.toml"
    job.parent.mkdir()
    job.write_text(job_text(values), encoding="utf-8")
    tree = Settings.from_toml(job)
    base = job.resolve().parent  # relative paths are relative to the job file's folder
    resolved = {
        "location": str(base / "photos.tsv000"),
        "name": str(base.parent / "models" / "clip"),
        "path": str(base / "store"),
        "duckdb": str(base / "data" / "x.duckdb"),
    }
    for leaf, value in values.items():
        assert tree.value(leaf) == resolved.get(leaf.key, value), leaf.name
        assert type(tree.value(leaf)) is leaf.kind, leaf.name
    assert read_job_file(job)[("download", "timeout_s")] == values[setting("timeout")]
    # The other backend, alone, and an int given for a float.
    job.write_text("[store]\nclickhouse_url = 'http://h:8123/db'\n[download]\ntimeout_s = 9\n", encoding="utf-8")
    tree = Settings.from_toml(job)
    assert tree.store.clickhouse_url == "http://h:8123/db" and tree.download.timeout_s == 9.0
    assert isinstance(tree.download.timeout_s, float)


def test_every_setting_is_reachable_from_the_command_line():
    for backend in ("clickhouse_url", "duckdb"):  # one backend per command line
        values = {leaf: other_value(leaf) for leaf in LEAVES if not (leaf.backend and leaf.key != backend)}
        argv = ["refresh"]
        for leaf, value in values.items():
            if leaf.kind is bool:
                argv.append(leaf.option if value else "--no-" + leaf.option.removeprefix("--"))
            else:
                argv += [leaf.option, str(value)]
        args = build_parser().parse_args(argv)
        tree = Settings().override(**{leaf.dest: getattr(args, leaf.dest) for leaf in LEAVES})
        for leaf, value in values.items():
            assert tree.value(leaf) == value, leaf.name
            assert type(tree.value(leaf)) is leaf.kind, leaf.name
    args = build_parser().parse_args(["refresh", "--no-purge", "--retry-failed"])
    assert (args.purge, args.retry_failed) == (False, True)
    with pytest.raises(Exception, match="not allowed with"):
        build_parser().parse_args(["refresh", "--duckdb", "x", "--clickhouse-url", "http://h"])


def test_options_not_given_leave_the_job_file_and_the_defaults():
    args = build_parser().parse_args(["refresh"])
    assert all(getattr(args, leaf.dest) is None for leaf in LEAVES)
    assert Settings().override(**{leaf.dest: getattr(args, leaf.dest) for leaf in LEAVES}) == Settings()


def test_the_help_shows_every_setting_with_its_default():
    text = " ".join(refresh_parser().format_help().split())
    for leaf in LEAVES:
        assert leaf.option in text, leaf.option
        if leaf.default is not None or leaf.default_text is not None:
            assert " ".join(leaf.help_text().replace("%%", "%").split()) in text, leaf.option
    assert "--timeout TIMEOUT read timeout per request, seconds (default 30)" in text
    assert "--purge, --no-purge" in text and "(default 0.1)" in text
    assert "(default $CLIPSQL_STORE or ./clipsql-store)" in text


def test_defaults_then_the_job_file_then_the_command_line(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[source]\nlimit = 5\n[download]\nworkers = 4\nretries = 1\n[store]\nduckdb = 'x.duckdb'\n")
    tree = Settings.load(job, limit=2, retries=None, clickhouse_url="http://h:8123/db")
    assert tree.source.limit == 2  # the command line wins
    assert (tree.download.workers, tree.download.retries) == (4, 1)  # the file's; None is "not given"
    assert tree.download.width == DownloadOptions().width  # the default
    # a backend on the command line replaces the file's
    assert (tree.store.clickhouse_url, tree.store.duckdb) == ("http://h:8123/db", None)
    assert Settings.load(job).store.duckdb == os.path.normpath(tmp_path / "x.duckdb")
    with pytest.raises(BadArgument, match="unknown refresh setting.*timeout_s"):
        Settings.load(job, timeout_s=3.0)  # the flat name is `timeout`, the job-file key `timeout_s`
    assert Settings.from_flat(tree.flat()) == tree


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: f"{leaf.table}.{leaf.key}")
def test_a_value_of_the_wrong_type_names_the_file_and_the_key(tmp_path, leaf):
    wrong = 5 if leaf.kind is str else ("yes" if leaf.kind is bool else "5")
    path = tmp_path / "job.toml"
    path.write_text(f"[{leaf.table}]\n{leaf.key} = {toml(wrong)}\n", encoding="utf-8")
    with pytest.raises(BadArgument) as info:
        Settings.from_toml(path)
    message = str(info.value)
    assert str(path) in message and f"[{leaf.table}] {leaf.key} must be {leaf.kind.__name__}" in message


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[download]\ntimeout = 5.0\n",
            r"unknown key 'timeout' in \[download\]; expected one of workers, width, timeout_s",
        ),
        ("[downloads]\nworkers = 3\n", r"unknown table \[downloads\]; expected one of \[download\]"),
        ("limit = 3\n", r"unknown table \[limit\]"),
        (
            "[store]\nclickhouse_url = 'http://h:8123/db'\nduckdb = 'x.duckdb'\n",
            r"\[store\] sets both clickhouse_url and duckdb; choose one backend",
        ),
    ],
)
def test_unknown_tables_and_keys_and_two_backends_are_refused(tmp_path, text, message):
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadArgument, match=message) as info:
        Settings.from_toml(path)
    assert str(path) in str(info.value)
