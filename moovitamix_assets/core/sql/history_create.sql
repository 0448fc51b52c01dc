-- The history tables. {history} is `core` (and {quality} `quality`) for the tables the daily
-- publish keeps; the rebuild_history job builds a whole new set in a schema of its own and
-- swaps it in at the end, so readers never see a history half rebuilt.
-- Keys are stated and checked (history_checks.py), not enforced: the merges below delete,
-- reopen and insert rows of one key in one transaction, and an index would only slow them.
CREATE SCHEMA IF NOT EXISTS {history};
CREATE SCHEMA IF NOT EXISTS {quality};

CREATE TABLE IF NOT EXISTS {history}.users_history (
    user_id        BIGINT    NOT NULL,
    first_name     VARCHAR   NOT NULL,
    last_name      VARCHAR   NOT NULL,
    email          VARCHAR   NOT NULL,
    gender         VARCHAR   NOT NULL,
    favorite_genre VARCHAR   NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL,
    valid_from     DATE      NOT NULL,  -- the snapshot that first served this version
    valid_to       DATE,                -- the snapshot that first served another one or none; NULL while current
    record_hash    VARCHAR   NOT NULL   -- md5 of the version's fields as JSON
);

CREATE TABLE IF NOT EXISTS {history}.tracks_history (
    track_id         BIGINT    NOT NULL,
    name             VARCHAR   NOT NULL,
    artist           VARCHAR   NOT NULL,
    songwriter       VARCHAR   NOT NULL,
    duration         VARCHAR   NOT NULL,
    duration_seconds INTEGER   NOT NULL,
    genre            VARCHAR   NOT NULL,
    album            VARCHAR   NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    valid_from       DATE      NOT NULL,
    valid_to         DATE,
    record_hash      VARCHAR   NOT NULL
);

CREATE TABLE IF NOT EXISTS {history}.listen_events (
    user_id         BIGINT  NOT NULL,
    position        INTEGER NOT NULL,  -- 1-based, as in the user's list
    track_id        BIGINT  NOT NULL,
    first_seen_date DATE    NOT NULL
);

CREATE TABLE IF NOT EXISTS {history}.history_days (
    snapshot_date         DATE      NOT NULL,
    users_versions_added  BIGINT    NOT NULL,
    users_versions_closed BIGINT    NOT NULL,
    tracks_versions_added  BIGINT   NOT NULL,
    tracks_versions_closed BIGINT   NOT NULL,
    listen_events_added   BIGINT    NOT NULL,
    history_rewrites      BIGINT    NOT NULL,
    run_id                VARCHAR   NOT NULL,
    applied_at            TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS {quality}.history_rewrites (
    user_id            BIGINT    NOT NULL,
    snapshot_date      DATE      NOT NULL,
    kind               VARCHAR   NOT NULL,  -- changed or shortened
    first_difference   INTEGER   NOT NULL,  -- the first position that differs
    previous_track_ids BIGINT[]  NOT NULL,  -- the list before this day
    new_track_ids      BIGINT[]  NOT NULL,  -- the list served this day
    run_id             VARCHAR   NOT NULL,
    recorded_at        TIMESTAMP NOT NULL
);

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE {history}.users_history IS 'Every version of every user ever served (type-2 history): one row per (user_id, valid_from). A version is current while valid_to is NULL; core.users holds exactly the current versions. Read a past day with core.users_as_of(day).';
COMMENT ON COLUMN {history}.users_history.user_id IS 'As in core.users. One current version per user_id, validity intervals never overlap (checked).';
COMMENT ON COLUMN {history}.users_history.first_name IS 'As in core.users on the days this version was served.';
COMMENT ON COLUMN {history}.users_history.last_name IS 'As in core.users on the days this version was served.';
COMMENT ON COLUMN {history}.users_history.email IS 'As in core.users on the days this version was served; the field that changes most upstream.';
COMMENT ON COLUMN {history}.users_history.gender IS 'As in core.users on the days this version was served.';
COMMENT ON COLUMN {history}.users_history.favorite_genre IS 'As in core.users on the days this version was served.';
COMMENT ON COLUMN {history}.users_history.created_at IS 'As in core.users on the days this version was served.';
COMMENT ON COLUMN {history}.users_history.updated_at IS 'As in core.users on the days this version was served.';
COMMENT ON COLUMN {history}.users_history.valid_from IS 'The first snapshot date that served this version.';
COMMENT ON COLUMN {history}.users_history.valid_to IS 'The first snapshot date that served another version of the user, or no longer served it (then no newer row until it comes back); NULL while current. The version held on the days valid_from <= day < valid_to.';
COMMENT ON COLUMN {history}.users_history.record_hash IS 'md5 of the version''s fields (user_id to updated_at) as JSON: a version differs from another by its hash.';

COMMENT ON TABLE {history}.tracks_history IS 'Every version of every track ever served (type-2 history): one row per (track_id, valid_from). A version is current while valid_to is NULL; core.tracks holds exactly the current versions. Read a past day with core.tracks_as_of(day).';
COMMENT ON COLUMN {history}.tracks_history.track_id IS 'As in core.tracks. One current version per track_id, validity intervals never overlap (checked).';
COMMENT ON COLUMN {history}.tracks_history.name IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.artist IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.songwriter IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.duration IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.duration_seconds IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.genre IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.album IS 'As in core.tracks on the days this version was served; the field that changes most upstream.';
COMMENT ON COLUMN {history}.tracks_history.created_at IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.updated_at IS 'As in core.tracks on the days this version was served.';
COMMENT ON COLUMN {history}.tracks_history.valid_from IS 'The first snapshot date that served this version.';
COMMENT ON COLUMN {history}.tracks_history.valid_to IS 'The first snapshot date that served another version of the track, or no longer served it; NULL while current. The version held on the days valid_from <= day < valid_to.';
COMMENT ON COLUMN {history}.tracks_history.record_hash IS 'md5 of the version''s fields (track_id to updated_at) as JSON: a version differs from another by its hash.';

COMMENT ON TABLE {history}.listen_events IS 'Every listen ever observed, once: (user_id, position) is unique (checked, not enforced). Upstream lists only grow at the end, so each day adds the positions past the previous list; a history rewritten instead adds nothing that day and is recorded in quality.history_rewrites, its earlier events kept.';
COMMENT ON COLUMN {history}.listen_events.user_id IS 'The listener, as in core.listen_history.';
COMMENT ON COLUMN {history}.listen_events.position IS '1-based position in the user''s list, 1 the oldest listen.';
COMMENT ON COLUMN {history}.listen_events.track_id IS 'The track at that position when the position was first served.';
COMMENT ON COLUMN {history}.listen_events.first_seen_date IS 'The snapshot in which the position first appeared: the listens new since a day are those first seen after it.';

COMMENT ON TABLE {history}.history_days IS 'One row per snapshot applied to the history, with what it changed. History is built in date order: a day older than the newest here is refused; the newest may be applied again (a re-run) and gives the same rows.';
COMMENT ON COLUMN {history}.history_days.snapshot_date IS 'The snapshot applied.';
COMMENT ON COLUMN {history}.history_days.users_versions_added IS 'Rows of users_history with valid_from = this day: new, changed and returning users.';
COMMENT ON COLUMN {history}.history_days.users_versions_closed IS 'Rows of users_history given valid_to = this day: changed and vanished users.';
COMMENT ON COLUMN {history}.history_days.tracks_versions_added IS 'Rows of tracks_history with valid_from = this day.';
COMMENT ON COLUMN {history}.history_days.tracks_versions_closed IS 'Rows of tracks_history given valid_to = this day.';
COMMENT ON COLUMN {history}.history_days.listen_events_added IS 'Rows of listen_events first seen this day.';
COMMENT ON COLUMN {history}.history_days.history_rewrites IS 'Histories found rewritten this day (rows of quality.history_rewrites).';
COMMENT ON COLUMN {history}.history_days.run_id IS 'The Dagster run that applied it (the daily publish or rebuild_history).';
COMMENT ON COLUMN {history}.history_days.applied_at IS 'When it was applied (UTC).';

COMMENT ON TABLE {quality}.history_rewrites IS 'Listen histories that did not only grow at the end: a position now holding another track, or a shorter list. Nothing is merged: the events already kept stay, the user gets no event that day, and the list served becomes the one later days are compared with.';
COMMENT ON COLUMN {quality}.history_rewrites.user_id IS 'The user whose history was rewritten.';
COMMENT ON COLUMN {quality}.history_rewrites.snapshot_date IS 'The snapshot that served the rewritten list.';
COMMENT ON COLUMN {quality}.history_rewrites.kind IS 'changed: a position holds another track than before (or than the event kept for it); shortened: the list is shorter, and what remains is unchanged.';
COMMENT ON COLUMN {quality}.history_rewrites.first_difference IS 'The first position at which the new list differs from the previous one (for shortened, the first position dropped).';
COMMENT ON COLUMN {quality}.history_rewrites.previous_track_ids IS 'The list as served before this day (the list a growth would have extended).';
COMMENT ON COLUMN {quality}.history_rewrites.new_track_ids IS 'The list served this day.';
COMMENT ON COLUMN {quality}.history_rewrites.run_id IS 'The Dagster run that found it.';
COMMENT ON COLUMN {quality}.history_rewrites.recorded_at IS 'When it was found (UTC).';
