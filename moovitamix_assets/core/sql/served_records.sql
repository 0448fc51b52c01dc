-- The day's records of one endpoint as served, each with its 1-based position in the pull
-- (by page, then position in page), read by type_<entity>.sql. A view: the records are
-- read once, by the typing. The positions come from a window over pages, not over
-- records: DuckDB 2.0 runs a window over a day of histories out of its memory_limit.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE VIEW core_staging.served AS
SELECT pages.served_before + served.position_in_page AS served_position, served.record
FROM (SELECT * FROM {source} WHERE snapshot_date = getvariable('snapshot_date')) AS served
JOIN (
    SELECT page, sum(count(*)) OVER (ORDER BY page) - count(*) AS served_before
    FROM {source}
    WHERE snapshot_date = getvariable('snapshot_date')
    GROUP BY page
) AS pages USING (page);
