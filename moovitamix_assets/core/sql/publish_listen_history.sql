-- One row per listen: a user's history exploded, position 1 being the oldest listen
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
INSERT INTO core.listen_history
SELECT staged.record_key, listen.position, listen.track_id, staged.created_at,
       staged.updated_at, getvariable('snapshot_date')
FROM staged, unnest(staged.items) WITH ORDINALITY AS listen(track_id, position)
WHERE staged.final_reason IS NULL
ORDER BY staged.record_key, listen.position;
