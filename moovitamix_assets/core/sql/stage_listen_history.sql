-- One row per listen of the day's accepted histories, in core.listen_history's columns, in
-- staging: audited before publish_listen_history.sql copies them. Position 1 is the oldest
-- listen (the API's lists run from oldest, left, to newest); (user_id, position) is unique
-- by construction (one history per user after dedupe.sql, one subscript per item). A
-- select-list unnest: DuckDB 2.0 runs the lateral `WITH ORDINALITY` form out of memory.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE TABLE core_staging.listen_history AS
SELECT record_key AS user_id, generate_subscripts(items, 1)::INTEGER AS position, unnest(items) AS track_id,
       created_at AS history_created_at, updated_at AS history_updated_at,
       getvariable('snapshot_date')::DATE AS snapshot_date
FROM core_staging.deduped
WHERE final_reason IS NULL;

-- The descriptions the catalogue carries (docs/schema.md is generated from them); the
-- CREATE OR REPLACE above drops them, so they follow it.
COMMENT ON TABLE core_staging.listen_history IS 'The listens, one row per listen, of the day being audited (the newest complete snapshot), in the columns of core.listen_history: the checks run on this table, and publish copies it into core.listen_history only when every gate passed.';
COMMENT ON COLUMN core_staging.listen_history.user_id IS 'As core.listen_history.user_id.';
COMMENT ON COLUMN core_staging.listen_history.position IS 'As core.listen_history.position.';
COMMENT ON COLUMN core_staging.listen_history.track_id IS 'As core.listen_history.track_id.';
COMMENT ON COLUMN core_staging.listen_history.history_created_at IS 'As core.listen_history.history_created_at.';
COMMENT ON COLUMN core_staging.listen_history.history_updated_at IS 'As core.listen_history.history_updated_at.';
COMMENT ON COLUMN core_staging.listen_history.snapshot_date IS 'As core.listen_history.snapshot_date.';
