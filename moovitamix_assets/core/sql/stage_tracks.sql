-- The day's accepted tracks, in core.tracks's columns, in staging: audited before publish_tracks.sql copies them.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE OR REPLACE TABLE core_staging.tracks AS
SELECT record_key AS track_id, name, artist, songwriter, duration, duration_seconds, genre, album,
       created_at, updated_at, getvariable('snapshot_date')::DATE AS snapshot_date
FROM core_staging.deduped
WHERE final_reason IS NULL
ORDER BY record_key;

-- The descriptions the catalogue carries (docs/schema.md is generated from them); the
-- CREATE OR REPLACE above drops them, so they follow it.
COMMENT ON TABLE core_staging.tracks IS 'The tracks of the day being audited (the newest complete snapshot), in the columns of core.tracks: the checks run on this table, and publish copies it into core.tracks only when every gate passed.';
COMMENT ON COLUMN core_staging.tracks.track_id IS 'As core.tracks.track_id.';
COMMENT ON COLUMN core_staging.tracks.name IS 'As core.tracks.name.';
COMMENT ON COLUMN core_staging.tracks.artist IS 'As core.tracks.artist.';
COMMENT ON COLUMN core_staging.tracks.songwriter IS 'As core.tracks.songwriter.';
COMMENT ON COLUMN core_staging.tracks.duration IS 'As core.tracks.duration.';
COMMENT ON COLUMN core_staging.tracks.duration_seconds IS 'As core.tracks.duration_seconds.';
COMMENT ON COLUMN core_staging.tracks.genre IS 'As core.tracks.genre.';
COMMENT ON COLUMN core_staging.tracks.album IS 'As core.tracks.album.';
COMMENT ON COLUMN core_staging.tracks.created_at IS 'As core.tracks.created_at.';
COMMENT ON COLUMN core_staging.tracks.updated_at IS 'As core.tracks.updated_at.';
COMMENT ON COLUMN core_staging.tracks.snapshot_date IS 'As core.tracks.snapshot_date.';
