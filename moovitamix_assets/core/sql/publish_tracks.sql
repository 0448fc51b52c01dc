CREATE SCHEMA IF NOT EXISTS core;
CREATE OR REPLACE TABLE core.tracks (
    track_id         BIGINT    PRIMARY KEY,
    name             VARCHAR   NOT NULL,
    artist           VARCHAR   NOT NULL,
    songwriter       VARCHAR   NOT NULL,  -- `songwriters` upstream: one name
    duration         VARCHAR   NOT NULL,  -- "MM:SS" as received
    duration_seconds INTEGER   NOT NULL,
    genre            VARCHAR   NOT NULL,  -- `genres` upstream: one word
    album            VARCHAR   NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    snapshot_date    DATE      NOT NULL
);
INSERT INTO core.tracks SELECT * FROM core_staging.tracks;

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE core.tracks IS 'Tracks of the latest raw snapshot, typed and deduplicated: one row per track_id. Rebuilt whole from each new snapshot.';
COMMENT ON COLUMN core.tracks.track_id IS '`id` upstream; positive. Unique: the record with the latest updated_at is kept, then the one served last.';
COMMENT ON COLUMN core.tracks.name IS 'As received.';
COMMENT ON COLUMN core.tracks.artist IS 'As received.';
COMMENT ON COLUMN core.tracks.songwriter IS '`songwriters` upstream: one name.';
COMMENT ON COLUMN core.tracks.duration IS '"MM:SS" as received.';
COMMENT ON COLUMN core.tracks.duration_seconds IS 'duration in seconds; a record whose duration is not MM:SS is rejected.';
COMMENT ON COLUMN core.tracks.genre IS '`genres` upstream: one word.';
COMMENT ON COLUMN core.tracks.album IS 'As received; changes over time upstream.';
COMMENT ON COLUMN core.tracks.created_at IS 'Parsed from the upstream ISO text (UTC, no zone).';
COMMENT ON COLUMN core.tracks.updated_at IS 'Parsed from the upstream ISO text; decides which of duplicate records is kept.';
COMMENT ON COLUMN core.tracks.snapshot_date IS 'The raw snapshot this table was built from.';
