-- Runs still 'running' when a new run holds the store's lock were killed (see sql/clickhouse/etl/).
UPDATE etl_runs SET status = 'interrupted', version = $run_version
WHERE status = 'running' AND version < $run_version;
