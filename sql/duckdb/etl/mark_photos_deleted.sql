-- Flag photos that the run did not see in its source (see sql/clickhouse/etl/ for the rule).
UPDATE photos SET is_deleted = 1, version = $run_version
WHERE version < $run_version AND is_deleted = 0;
