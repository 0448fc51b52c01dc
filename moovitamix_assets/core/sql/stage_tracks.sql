-- The day's accepted tracks, in core.tracks's columns, in staging: audited before publish_tracks.sql copies them.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE TABLE core_staging.tracks AS
SELECT record_key AS track_id, name, artist, songwriter, duration, duration_seconds, genre, album,
       created_at, updated_at, getvariable('snapshot_date')::DATE AS snapshot_date
FROM core_staging.deduped
WHERE final_reason IS NULL
ORDER BY record_key;
