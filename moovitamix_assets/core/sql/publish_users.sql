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
INSERT INTO core.users
SELECT record_key, first_name, last_name, email, gender, favorite_genre, created_at, updated_at,
       getvariable('snapshot_date')
FROM staged
WHERE final_reason IS NULL
ORDER BY record_key;
