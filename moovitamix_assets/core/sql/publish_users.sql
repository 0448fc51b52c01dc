CREATE SCHEMA IF NOT EXISTS core;
CREATE OR REPLACE TABLE core.users (
    user_id        BIGINT    PRIMARY KEY,
    first_name     VARCHAR   NOT NULL,
    last_name      VARCHAR   NOT NULL,
    email          VARCHAR   NOT NULL,
    gender         VARCHAR   NOT NULL,
    favorite_genre VARCHAR   NOT NULL,  -- `favorite_genres` upstream: one genre
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL,
    snapshot_date  DATE      NOT NULL
);
INSERT INTO core.users SELECT * FROM core_staging.users;

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE core.users IS 'Users of the latest raw snapshot, typed and deduplicated: one row per user_id. Rebuilt whole from each new snapshot.';
COMMENT ON COLUMN core.users.user_id IS '`id` upstream; positive. Unique: the record with the latest updated_at is kept, then the one served last.';
COMMENT ON COLUMN core.users.first_name IS 'As received.';
COMMENT ON COLUMN core.users.last_name IS 'As received.';
COMMENT ON COLUMN core.users.email IS 'As received; changes over time upstream.';
COMMENT ON COLUMN core.users.gender IS 'As received.';
COMMENT ON COLUMN core.users.favorite_genre IS '`favorite_genres` upstream: one genre.';
COMMENT ON COLUMN core.users.created_at IS 'Parsed from the upstream ISO text (UTC, no zone).';
COMMENT ON COLUMN core.users.updated_at IS 'Parsed from the upstream ISO text; decides which of duplicate records is kept.';
COMMENT ON COLUMN core.users.snapshot_date IS 'The raw snapshot this table was built from.';
