-- The serving snapshot's tables, coded as its files hold them (moovitamix_serving/files.py).
-- Temporary: they live as long as the connection that publishes them.

-- Every track of core.tracks, its index in the files' track table counted from 0.
CREATE OR REPLACE TEMP TABLE serving_tracks AS
SELECT (row_number() OVER (ORDER BY track_id) - 1)::INTEGER AS track_index, track_id, name, artist, genre
FROM core.tracks;

-- The reasons a list can give: 0 none (the model's own ranking), 1 global popularity, then
-- one per genre for the genre fallback's in-genre tracks.
CREATE OR REPLACE TEMP TABLE serving_reasons AS
SELECT 0 AS reason_index, NULL::VARCHAR AS genre, NULL::VARCHAR AS reason
UNION ALL
SELECT 1, NULL, getvariable('popular_reason')
UNION ALL
SELECT (1 + row_number() OVER (ORDER BY genre))::INTEGER, genre, getvariable('genre_reason_prefix') || genre
FROM (SELECT DISTINCT genre FROM core.tracks WHERE genre IS NOT NULL);

-- One row per recommendation, by user then rank. A fallback track in the user's favourite
-- genre says so; any other fallback track is there for its global popularity.
CREATE OR REPLACE TEMP TABLE serving_rows AS
SELECT
    r.user_id,
    (list_position(getvariable('sources'), r.source) - 1)::UTINYINT AS source_index,
    t.track_index,
    r.score::FLOAT AS score,
    (CASE
        WHEN r.source = 'model' THEN 0
        WHEN r.source = 'genre_fallback' AND t.genre = u.favorite_genre THEN g.reason_index
        ELSE 1
    END)::INTEGER AS reason_index
FROM ml.user_recommendations AS r
JOIN serving_tracks AS t USING (track_id)
LEFT JOIN core.users AS u USING (user_id)
LEFT JOIN serving_reasons AS g ON g.genre = t.genre
ORDER BY r.user_id, r.rank;
