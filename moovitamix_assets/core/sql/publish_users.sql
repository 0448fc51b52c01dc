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
COMMENT ON TABLE core.users IS 'Users of the newest complete day that passed every gate, typed and deduplicated: one row per user_id. Published whole from core_staging, in one transaction with tracks and listens.';
COMMENT ON COLUMN core.users.user_id IS '`id` upstream; positive. Unique: the record with the latest updated_at is kept, then the one served last.';
COMMENT ON COLUMN core.users.first_name IS 'As received.';
COMMENT ON COLUMN core.users.last_name IS 'As received.';
COMMENT ON COLUMN core.users.email IS 'As received; changes over time upstream.';
COMMENT ON COLUMN core.users.gender IS 'As received.';
COMMENT ON COLUMN core.users.favorite_genre IS '`favorite_genres` upstream: one genre.';
COMMENT ON COLUMN core.users.created_at IS 'UTC: an upstream offset (+02:00, Z) is converted, a text without one is taken as UTC.';
COMMENT ON COLUMN core.users.updated_at IS 'UTC, parsed as created_at is; decides which of duplicate records is kept.';
COMMENT ON COLUMN core.users.snapshot_date IS 'The complete day this table was published from.';
