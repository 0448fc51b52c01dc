-- Loads one endpoint's staged pull (ingestion/pull.py), one verified pass, as the day's
-- rows of {table}, inside the day's load transaction. Each staged Parquet row is one
-- page: its items as one JSON array and their ids. Every record is kept as served,
-- duplicates included: a clean pass's duplicates are the upstream's (core rejects them).
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
     unnest(CAST(staged.items_json AS JSON[])) WITH ORDINALITY AS item(record, position_in_page);
