-- Loads the union of two passes of an upstream that moved during both (ingestion/pull.py)
-- as the day's rows of {table}: one row per id, the later pass's version winning (then the
-- one served last), and the records without a usable id from the winning pass only. While
-- the upstream moves, a duplicate cannot be told from a record shifted across a page
-- boundary, so every id is kept once.
DELETE FROM {table} WHERE snapshot_date = getvariable('snapshot_date');

INSERT INTO {table}
WITH served AS (
    SELECT pass, page, generate_subscripts(items, 1) AS position_in_page, unnest(items) AS record,
           unnest(keys) AS key
    FROM (
        SELECT pass, page, json_extract(page_json, '$.items[*]') AS items, keys FROM read_parquet(getvariable('staged_files'))
    )
)
SELECT
    getvariable('snapshot_date'),
    page,
    position_in_page,
    record,
    getvariable('ingested_at'),
    getvariable('run_id')
FROM served
WHERE key IS NOT NULL OR pass = getvariable('winning_pass')
QUALIFY key IS NULL
     OR row_number() OVER (PARTITION BY key ORDER BY pass DESC, page DESC, position_in_page DESC) = 1;
