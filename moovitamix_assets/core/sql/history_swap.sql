-- The end of rebuild_history: the history built in {rebuilt} replaces the published one in
-- one transaction (readers see the old history or the new one, whole), then {rebuilt} goes.
DELETE FROM core.users_history;
INSERT INTO core.users_history SELECT * FROM {rebuilt}.users_history ORDER BY user_id, valid_from;
DELETE FROM core.tracks_history;
INSERT INTO core.tracks_history SELECT * FROM {rebuilt}.tracks_history ORDER BY track_id, valid_from;
DELETE FROM core.listen_events;
INSERT INTO core.listen_events SELECT * FROM {rebuilt}.listen_events ORDER BY user_id, position;
DELETE FROM core.history_days;
INSERT INTO core.history_days SELECT * FROM {rebuilt}.history_days ORDER BY snapshot_date;
DELETE FROM quality.history_rewrites;
INSERT INTO quality.history_rewrites SELECT * FROM {rebuilt}.history_rewrites ORDER BY snapshot_date, user_id;
DROP SCHEMA {rebuilt} CASCADE;
