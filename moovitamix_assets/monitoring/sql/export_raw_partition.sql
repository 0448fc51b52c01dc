-- One day of one raw table as Parquet. snapshot_date is left out: the hive directory
-- `snapshot_date=YYYY-MM-DD` carries it. `record` goes as plain text because not every
-- Parquet reader (Spark among them) knows the JSON logical type.
COPY (
    SELECT page, position_in_page, record::VARCHAR AS record, ingested_at, run_id
    FROM {table}
    WHERE snapshot_date = getvariable('snapshot_date')
    ORDER BY page, position_in_page
) TO {path} (FORMAT parquet, COMPRESSION zstd);
