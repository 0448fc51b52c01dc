-- The latest tracks snapshot, typed, each record with its reasons for rejection (or NULL).
CREATE SCHEMA IF NOT EXISTS core_staging;
-- A table, not a TEMP one: DuckDB spills tables to disk under its memory_limit, temp tables less so.
CREATE OR REPLACE TABLE core_staging.typed AS
SELECT
    pages.served_before + served.position_in_page AS served_position,
    record,
    TRY_CAST(json_extract_string(record, 'id') AS BIGINT) AS record_key,
    json_extract_string(record, 'name') AS name,
    json_extract_string(record, 'artist') AS artist,
    json_extract_string(record, 'songwriters') AS songwriter,
    json_extract_string(record, 'duration') AS duration,
    duration_seconds(json_extract_string(record, 'duration')) AS duration_seconds,
    json_extract_string(record, 'genres') AS genre,
    json_extract_string(record, 'album') AS album,
    as_timestamp(record, 'created_at') AS created_at,
    as_timestamp(record, 'updated_at') AS updated_at,
    reasons([
        id_problem(record, 'id'),
        text_problem(record, 'name'),
        text_problem(record, 'artist'),
        text_problem(record, 'songwriters'),
        duration_problem(record, 'duration'),
        text_problem(record, 'genres'),
        text_problem(record, 'album'),
        timestamp_problem(record, 'created_at'),
        timestamp_problem(record, 'updated_at')
    ]) AS reject_reason
FROM (SELECT * FROM {source} WHERE snapshot_date = getvariable('snapshot_date')) AS served
JOIN (
    -- Records served on the pages before each page: a window over pages, not over records,
    -- which DuckDB 2.0 runs out of memory under its memory_limit on a day of histories.
    SELECT page, sum(count(*)) OVER (ORDER BY page) - count(*) AS served_before
    FROM {source}
    WHERE snapshot_date = getvariable('snapshot_date')
    GROUP BY page
) AS pages USING (page);
