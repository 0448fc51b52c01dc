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
COMMENT ON TABLE core.tracks IS 'Tracks of the newest complete day that passed every gate, typed and deduplicated: one row per track_id. Published whole from core_staging, in one transaction with users and listens.';
COMMENT ON COLUMN core.tracks.track_id IS '`id` upstream; positive. Unique: the record with the latest updated_at is kept, then the one served last.';
COMMENT ON COLUMN core.tracks.name IS 'As received.';
COMMENT ON COLUMN core.tracks.artist IS 'As received.';
COMMENT ON COLUMN core.tracks.songwriter IS '`songwriters` upstream: one name.';
COMMENT ON COLUMN core.tracks.duration IS '"MM:SS" as received.';
COMMENT ON COLUMN core.tracks.duration_seconds IS 'duration in seconds; a record whose duration is not MM:SS is rejected.';
COMMENT ON COLUMN core.tracks.genre IS '`genres` upstream: one word.';
COMMENT ON COLUMN core.tracks.album IS 'As received; changes over time upstream.';
COMMENT ON COLUMN core.tracks.created_at IS 'UTC: an upstream offset (+02:00, Z) is converted, a text without one is taken as UTC.';
COMMENT ON COLUMN core.tracks.updated_at IS 'UTC, parsed as created_at is; decides which of duplicate records is kept.';
COMMENT ON COLUMN core.tracks.snapshot_date IS 'The complete day this table was published from.';
