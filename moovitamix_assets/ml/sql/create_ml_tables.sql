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

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE ml.model_registry IS 'Every trained model, whatever became of it; at most one row has status champion. Artefacts are pickles in MOOVITAMIX_MODEL_DIR.';
COMMENT ON COLUMN ml.model_registry.version IS '<UTC training time>-<algorithm>.';
COMMENT ON COLUMN ml.model_registry.trained_at IS 'When it was trained (UTC).';
COMMENT ON COLUMN ml.model_registry.algorithm IS 'ease, als, popularity or genre_popularity.';
COMMENT ON COLUMN ml.model_registry.snapshot_date IS 'The core snapshot it was trained on.';
COMMENT ON COLUMN ml.model_registry.params IS 'Hyper-parameters and seed.';
COMMENT ON COLUMN ml.model_registry.metrics IS 'precision@k, recall@k, NDCG@k, catalogue coverage on the test side of the training set it was judged on.';
COMMENT ON COLUMN ml.model_registry.baseline_metrics IS 'The same metrics for popularity, genre_popularity and the champion it faced.';
COMMENT ON COLUMN ml.model_registry.status IS 'champion, retired or rejected.';
COMMENT ON COLUMN ml.model_registry.reason IS 'Why it was promoted, rejected, retired or rolled back to.';
COMMENT ON COLUMN ml.model_registry.artefact_path IS 'The pickled model.';
COMMENT ON COLUMN ml.model_registry.train_seconds IS 'Training time (0 for a baseline serving as champion).';
COMMENT ON COLUMN ml.model_registry.data_listens IS 'Listens in its training set (both sides); the drift sensor compares today''s to it.';
COMMENT ON COLUMN ml.model_registry.data_users IS 'Users in its training set; the drift sensor compares today''s to it.';
COMMENT ON COLUMN ml.model_registry.data_tracks IS 'Tracks in its training set; the drift sensor compares today''s to it.';
COMMENT ON TABLE ml.champion_history IS 'Every promotion and rollback, oldest first.';
COMMENT ON COLUMN ml.champion_history.promoted_at IS 'When it became champion (UTC).';
COMMENT ON COLUMN ml.champion_history.version IS 'The new champion.';
COMMENT ON COLUMN ml.champion_history.previous IS 'The champion it replaced; NULL for the first.';
COMMENT ON COLUMN ml.champion_history.reason IS 'The promotion decision, or rollback: <reason>.';
COMMENT ON TABLE ml.model_catalogue IS 'The tracks each model can recommend (those in its training interactions).';
COMMENT ON COLUMN ml.model_catalogue.version IS 'A version of ml.model_registry.';
COMMENT ON COLUMN ml.model_catalogue.track_id IS 'A track the model knows.';
