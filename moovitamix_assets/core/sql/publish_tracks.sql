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
INSERT INTO core.tracks
SELECT record_key, name, artist, songwriter, duration, duration_seconds, genre, album,
       created_at, updated_at, getvariable('snapshot_date')
FROM staged
WHERE final_reason IS NULL
ORDER BY record_key;
