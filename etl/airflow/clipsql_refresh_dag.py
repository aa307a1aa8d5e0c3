"""Airflow DAG: the nightly clipsql refresh, one BashOperator running the job file.

Copy (or symlink) this file into the DAGs folder and set `CLIPSQL_HOME` in the
environment of the scheduler and workers to the checkout (default /opt/clipsql). The
refresh is idempotent and crash-safe, so Airflow's retries simply run it again;
`max_active_runs=1` and the store's own lock keep runs from overlapping (a refresh that
finds the store locked exits with status 75, and the task is then skipped).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

CLIPSQL_HOME = os.environ.get("CLIPSQL_HOME", "/opt/clipsql")
JOB_FILE = "etl/unsplash_lite.toml"

with DAG(
    dag_id="clipsql_refresh",
    description="Download, embed and load new Unsplash photos (clipsql refresh)",
    schedule="17 3 * * *",
    start_date=dt.datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=30)},
    tags=["clipsql", "etl"],
) as dag:
    BashOperator(
        task_id="refresh",
        bash_command=f"cd {CLIPSQL_HOME} && .venv/bin/clipsql refresh {JOB_FILE} --quiet",
        skip_on_exit_code=75,
        execution_timeout=dt.timedelta(hours=6),
    )
