-- The day's accepted users, in core.users's columns, in staging: audited before publish_users.sql copies them.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE TABLE core_staging.users AS
SELECT record_key AS user_id, first_name, last_name, email, gender, favorite_genre, created_at, updated_at,
       getvariable('snapshot_date')::DATE AS snapshot_date
FROM core_staging.deduped
WHERE final_reason IS NULL
ORDER BY record_key;
