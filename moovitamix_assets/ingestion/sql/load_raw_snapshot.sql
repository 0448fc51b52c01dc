-- Loads one endpoint's staged pull (ingestion/pull.py), one verified pass, as the day's
-- rows of {table}, inside the day's load transaction. Each staged Parquet row is one
-- page: its body as received and its items' ids. Every record is kept as served,
-- duplicates included: a clean pass's duplicates are the upstream's (core rejects them).
DELETE FROM {table} WHERE snapshot_date = getvariable('snapshot_date');

-- (Select-list unnest, not a lateral `unnest(...) WITH ORDINALITY`: DuckDB 2.0 runs the
-- lateral form out of memory under a memory_limit, even on small inputs.)
INSERT INTO {table}
SELECT
    getvariable('snapshot_date'),
    page,
    generate_subscripts(items, 1) AS position_in_page,
    unnest(items) AS record,
    getvariable('ingested_at'),
    getvariable('run_id')
FROM (
    SELECT page, json_extract(page_json, '$.items[*]') AS items FROM read_parquet(getvariable('staged_files'))
);
