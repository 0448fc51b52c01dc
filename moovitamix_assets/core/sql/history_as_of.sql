-- As-of reads: the users and tracks as a given day's snapshot served them, e.g.
--   SELECT * FROM core.users_as_of(DATE '2026-11-15') WHERE favorite_genre = 'Jazz';
-- A day between two snapshots reads the versions of the latest snapshot on or before it.
CREATE SCHEMA IF NOT EXISTS core;
CREATE OR REPLACE MACRO core.users_as_of(day) AS TABLE
    SELECT * EXCLUDE (record_hash) FROM core.users_history
    WHERE valid_from <= day AND (valid_to IS NULL OR valid_to > day);
CREATE OR REPLACE MACRO core.tracks_as_of(day) AS TABLE
    SELECT * EXCLUDE (record_hash) FROM core.tracks_history
    WHERE valid_from <= day AND (valid_to IS NULL OR valid_to > day);

COMMENT ON MACRO TABLE core.users_as_of IS 'The users as served on a day (the versions valid on it), with valid_from and valid_to: SELECT * FROM core.users_as_of(DATE ''2026-11-15'').';
COMMENT ON MACRO TABLE core.tracks_as_of IS 'The tracks as served on a day (the versions valid on it), with valid_from and valid_to: SELECT * FROM core.tracks_as_of(DATE ''2026-11-15'').';
