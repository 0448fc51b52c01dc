-- Loads one endpoint's staged pull (ingestion/pull.py) as the day's rows of {table}, inside
-- the day's load transaction. Each staged Parquet row is one page: its items as one JSON
-- array and their ids. When two passes were merged, the rows of the winning (later) pass
-- are kept, and of the earlier pass only the records whose id the later one did not serve.
DELETE FROM {table} WHERE snapshot_date = getvariable('snapshot_date');

INSERT INTO {table}
SELECT
    getvariable('snapshot_date'),
    staged.page,
    item.position_in_page,
    item.record,
    getvariable('ingested_at'),
    getvariable('run_id')
FROM read_parquet(getvariable('staged_files')) AS staged,
     unnest(CAST(staged.items_json AS JSON[])) WITH ORDINALITY AS item(record, position_in_page)
WHERE staged.pass = getvariable('winning_pass')
   OR staged.keys[item.position_in_page] NOT IN (
        SELECT key
        FROM (
            SELECT unnest(keys) AS key
            FROM read_parquet(getvariable('staged_files'))
            WHERE pass = getvariable('winning_pass')
        )
        WHERE key IS NOT NULL
   );
