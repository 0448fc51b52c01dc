-- Type-2 merge of one day of core_staging.{entity} into {history}.{entity}_history.
-- {key} is the entity's id column. Set-based: one comparison of the day's records with the
-- current versions by record_hash, then one UPDATE and one INSERT.

-- The day's records in the history table's own column order (BY NAME: a column that core
-- gains and the history lacks fails here rather than being dropped), with their hash.
CREATE OR REPLACE TEMP TABLE day_records AS
SELECT * EXCLUDE (valid_from, valid_to, record_hash) FROM {history}.{entity}_history LIMIT 0;
INSERT INTO day_records BY NAME SELECT * EXCLUDE (snapshot_date) FROM core_staging.{entity};
CREATE OR REPLACE TEMP TABLE day_versions AS
SELECT record.*, md5(to_json(record)::VARCHAR) AS record_hash FROM day_records AS record;

-- Current versions the day does not serve as they are (changed, or gone) end on this day.
UPDATE {history}.{entity}_history AS version
SET valid_to = getvariable('snapshot_date')
WHERE version.valid_to IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM day_versions AS served
      WHERE served.{key} = version.{key} AND served.record_hash = version.record_hash
  );

-- Every record left without a current version (new, changed, or back after a gap) opens one.
INSERT INTO {history}.{entity}_history BY NAME
SELECT served.*, getvariable('snapshot_date') AS valid_from, NULL::DATE AS valid_to
FROM day_versions AS served
WHERE NOT EXISTS (
    SELECT 1 FROM {history}.{entity}_history AS version
    WHERE version.{key} = served.{key} AND version.valid_to IS NULL
)
ORDER BY served.{key};
