-- The day's accepted users, in core.users's columns, in staging: audited before publish_users.sql copies them.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE TABLE core_staging.users AS
SELECT record_key AS user_id, first_name, last_name, email, gender, favorite_genre, created_at, updated_at,
       getvariable('snapshot_date')::DATE AS snapshot_date
FROM core_staging.deduped
WHERE final_reason IS NULL
ORDER BY record_key;

-- The descriptions the catalogue carries (docs/schema.md is generated from them); the
-- CREATE OR REPLACE above drops them, so they follow it.
COMMENT ON TABLE core_staging.users IS 'The users of the day being audited (the newest complete snapshot), in the columns of core.users: the checks run on this table, and publish copies it into core.users only when every gate passed.';
COMMENT ON COLUMN core_staging.users.user_id IS 'As core.users.user_id.';
COMMENT ON COLUMN core_staging.users.first_name IS 'As core.users.first_name.';
COMMENT ON COLUMN core_staging.users.last_name IS 'As core.users.last_name.';
COMMENT ON COLUMN core_staging.users.email IS 'As core.users.email.';
COMMENT ON COLUMN core_staging.users.gender IS 'As core.users.gender.';
COMMENT ON COLUMN core_staging.users.favorite_genre IS 'As core.users.favorite_genre.';
COMMENT ON COLUMN core_staging.users.created_at IS 'As core.users.created_at.';
COMMENT ON COLUMN core_staging.users.updated_at IS 'As core.users.updated_at.';
COMMENT ON COLUMN core_staging.users.snapshot_date IS 'As core.users.snapshot_date.';
