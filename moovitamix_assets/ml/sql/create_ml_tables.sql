CREATE SCHEMA IF NOT EXISTS ml;

-- Every trained model, whatever became of it. At most one row has status 'champion'.
CREATE TABLE IF NOT EXISTS ml.model_registry (
    version          VARCHAR   PRIMARY KEY,
    trained_at       TIMESTAMP NOT NULL,
    algorithm        VARCHAR   NOT NULL,
    snapshot_date    DATE      NOT NULL,  -- the core snapshot it was trained on
    params           JSON      NOT NULL,
    metrics          JSON      NOT NULL,  -- on the test side of the training set it was judged on
    baseline_metrics JSON      NOT NULL,  -- popularity, genre_popularity and the champion it faced
    status           VARCHAR   NOT NULL,  -- champion, retired, rejected
    reason           VARCHAR   NOT NULL,  -- why it was promoted, rejected or retired
    artefact_path    VARCHAR   NOT NULL,
    train_seconds    DOUBLE    NOT NULL,
    data_listens     BIGINT    NOT NULL,  -- the training set it came from (both sides),
    data_users       BIGINT    NOT NULL,  -- which the drift sensor compares today's data to
    data_tracks      BIGINT    NOT NULL
);

-- Every promotion and rollback, oldest first.
CREATE TABLE IF NOT EXISTS ml.champion_history (
    promoted_at TIMESTAMP NOT NULL,
    version     VARCHAR   NOT NULL,
    previous    VARCHAR,
    reason      VARCHAR   NOT NULL
);

-- The tracks each model can recommend (those in its training interactions).
CREATE TABLE IF NOT EXISTS ml.model_catalogue (
    version  VARCHAR NOT NULL,
    track_id BIGINT  NOT NULL
);
