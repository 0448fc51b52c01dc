-- One raw partition read back from its Parquet copy in the lake, in raw.<entity>'s columns
-- as stage_core_tables reads them: snapshot_date comes from the hive directory
-- (snapshot_date=YYYY-MM-DD), record goes back from text to JSON.
CREATE OR REPLACE TEMP VIEW {view} AS
SELECT snapshot_date::DATE AS snapshot_date, page, position_in_page, record::JSON AS record
FROM read_parquet({parquet_file}, hive_partitioning = true);
