-- One row per listen of the day's accepted histories, in core.listen_history's columns, in
-- staging: audited before publish_listen_history.sql copies them. Position 1 is the oldest
-- listen (the API's lists run from oldest, left, to newest); (user_id, position) is unique
-- by construction (one history per user after dedupe.sql, WITH ORDINALITY).
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE TABLE core_staging.listen_history AS
SELECT staged.record_key AS user_id, listen.position::INTEGER AS position, listen.track_id,
       staged.created_at AS history_created_at, staged.updated_at AS history_updated_at,
       getvariable('snapshot_date')::DATE AS snapshot_date
FROM staged, unnest(staged.items) WITH ORDINALITY AS listen(track_id, position)
WHERE staged.final_reason IS NULL
ORDER BY staged.record_key, listen.position;
