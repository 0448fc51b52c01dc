-- `raw_batch` holds one row per page: (page, items_json), items_json being the page's
-- items as one JSON array; each item becomes one row.
INSERT INTO {table}
SELECT
    getvariable('snapshot_date'),
    page,
    position_in_page,
    record,
    getvariable('ingested_at'),
    getvariable('run_id')
FROM (
    SELECT page, CAST(items_json AS JSON[]) AS items FROM raw_batch
), unnest(items) WITH ORDINALITY AS item(record, position_in_page);
