-- Publishes the audited staging copy: one row per listen, position 1 being the oldest listen
-- (the API's lists run from oldest, left, to newest). (user_id, position) is unique by
-- construction (one history per user after dedupe.sql, WITH ORDINALITY) and checked by
-- no_duplicate_ids; an enforced key would make this build about 2.5 times slower at 20M rows.
CREATE SCHEMA IF NOT EXISTS core;
CREATE OR REPLACE TABLE core.listen_history (
    user_id            BIGINT    NOT NULL,
    position           INTEGER   NOT NULL,  -- 1-based order in the user's list
    track_id           BIGINT    NOT NULL,
    history_created_at TIMESTAMP NOT NULL,
    history_updated_at TIMESTAMP NOT NULL,
    snapshot_date      DATE      NOT NULL
);
INSERT INTO core.listen_history SELECT * FROM core_staging.listen_history;

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE core.listen_history IS 'Listens of the newest complete day that passed every gate (published from core_staging in one transaction with users and tracks), one row per listen: each user''s history exploded. (user_id, position) is unique by construction and checked by no_duplicate_ids, not enforced.';
COMMENT ON COLUMN core.listen_history.user_id IS 'The listener; checked against core.users by no_orphan_user_ids, not a foreign key.';
COMMENT ON COLUMN core.listen_history.position IS '1-based order in the user''s list, 1 the oldest listen.';
COMMENT ON COLUMN core.listen_history.track_id IS 'The track played; checked against core.tracks by no_orphan_track_ids, not a foreign key.';
COMMENT ON COLUMN core.listen_history.history_created_at IS 'created_at of the user''s history record.';
COMMENT ON COLUMN core.listen_history.history_updated_at IS 'updated_at of the user''s history record (moves when listens are appended).';
COMMENT ON COLUMN core.listen_history.snapshot_date IS 'The complete day this table was published from.';
