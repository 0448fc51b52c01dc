-- Takes the newest applied day back out of the history, so that applying it again (a re-run,
-- or the day staged again from a corrected pull) gives the rows a first application gives.
-- Every change a day makes carries its date: versions it opened have valid_from = the day,
-- versions it closed valid_to = the day, events first_seen_date = the day.
DELETE FROM {history}.users_history WHERE valid_from = getvariable('snapshot_date');
UPDATE {history}.users_history SET valid_to = NULL WHERE valid_to = getvariable('snapshot_date');
DELETE FROM {history}.tracks_history WHERE valid_from = getvariable('snapshot_date');
UPDATE {history}.tracks_history SET valid_to = NULL WHERE valid_to = getvariable('snapshot_date');
DELETE FROM {history}.listen_events WHERE first_seen_date = getvariable('snapshot_date');
DELETE FROM {quality}.history_rewrites WHERE snapshot_date = getvariable('snapshot_date');
DELETE FROM {history}.history_days WHERE snapshot_date = getvariable('snapshot_date');
