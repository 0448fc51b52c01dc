-- One row per listen: a user's history exploded, position 1 being the oldest listen
-- (the API's lists run from oldest, left, to newest).
CREATE SCHEMA IF NOT EXISTS core;
CREATE OR REPLACE TABLE core.listen_history (
    user_id            BIGINT    NOT NULL,
    position           INTEGER   NOT NULL,  -- 1-based order in the user's list
    track_id           BIGINT    NOT NULL,
    history_created_at TIMESTAMP NOT NULL,
    history_updated_at TIMESTAMP NOT NULL,
    snapshot_date      DATE      NOT NULL,
    PRIMARY KEY (user_id, position)
);
INSERT INTO core.listen_history
SELECT staged.record_key, listen.position, listen.track_id, staged.created_at,
       staged.updated_at, getvariable('snapshot_date')
FROM staged, unnest(staged.items) WITH ORDINALITY AS listen(track_id, position)
WHERE staged.final_reason IS NULL
ORDER BY staged.record_key, listen.position;
