"""Airflow DAG: the nightly clipsql refresh, fanned out over shards, then one final step.

    refresh_shard[0] ... refresh_shard[SHARDS-1]  >>  finish

`refresh_shard` is one BashOperator mapped over the shards (dynamic task mapping): task i
runs `clipsql refresh etl/unsplash_lite.toml --shard i/SHARDS`, which downloads and embeds
only the photos with cityHash64(photo_id) % SHARDS = i. Once every shard has succeeded,
`finish` runs `clipsql refresh etl/unsplash_lite.toml --finish`: the optional files, the
photos gone from the release (a shard never flags one), the model's completion and the
vector index. A shard that fails (after its retries) or is skipped leaves `finish` undone
(trigger rule all_success), so nothing is flagged deleted or completed on a partial night.

Copy (or symlink) this file into the DAGs folder and set in the environment of the scheduler
and workers `CLIPSQL_HOME` (the checkout, default /opt/clipsql), `CLIPSQL_SHARDS` (default 4)
and `CLIPSQL_PARALLEL_SHARDS` (shards running at once, default 1). Shards that share a store
directory run one after another (the store's refresh lock, and chdb, admit one refresh at a
time): keep 1 for a chdb store. With a ClickHouse server (`[store] clickhouse_url`) and a
store directory per worker (`--store` is then the image cache), set it to SHARDS.

The refresh is idempotent and crash-safe, so Airflow's retries simply run a task again;
`max_active_runs=1` and the store's own lock keep nights from overlapping (a refresh that
finds the store locked exits with status 75, and the task is then skipped).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2 (>= 2.3: dynamic task mapping)
    from airflow.operators.bash import BashOperator

CLIPSQL_HOME = os.environ.get("CLIPSQL_HOME", "/opt/clipsql")
JOB_FILE = "etl/unsplash_lite.toml"
SHARDS = int(os.environ.get("CLIPSQL_SHARDS", "4"))
PARALLEL_SHARDS = int(os.environ.get("CLIPSQL_PARALLEL_SHARDS", "1"))
REFRESH = f"cd {CLIPSQL_HOME} && .venv/bin/clipsql refresh {JOB_FILE} --quiet"

with DAG(
    dag_id="clipsql_refresh",
    description="Download, embed and load new Unsplash photos (clipsql refresh), in shards",
    schedule="17 3 * * *",
    start_date=dt.datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=30)},
    tags=["clipsql", "etl"],
) as dag:
    shards = BashOperator.partial(
        task_id="refresh_shard",
        skip_on_exit_code=75,
        execution_timeout=dt.timedelta(hours=6),
        max_active_tis_per_dagrun=PARALLEL_SHARDS,
    ).expand(bash_command=[f"{REFRESH} --shard {i}/{SHARDS}" for i in range(SHARDS)])
    finish = BashOperator(
        task_id="finish",
        bash_command=f"{REFRESH} --finish",
        skip_on_exit_code=75,
        execution_timeout=dt.timedelta(hours=2),
    )
    shards >> finish
