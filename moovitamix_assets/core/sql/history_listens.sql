-- One day of core_staging.listen_history into {history}.listen_events. Upstream lists only
-- grow at the end: each user's list is compared with the list last served before this day,
-- the positions past it become events first seen today, and a list that changed otherwise
-- is recorded in {quality}.history_rewrites, never merged.

-- The list last served before this day, per user. Without a rewrite it is the user's events
-- (each day added exactly its growth). After one it is the list the latest rewrite recorded,
-- then the events first seen after it.
CREATE OR REPLACE TEMP VIEW previous_listens AS
WITH latest_rewrite AS (
    SELECT user_id, snapshot_date, new_track_ids
    FROM {quality}.history_rewrites
    WHERE snapshot_date < getvariable('snapshot_date')
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY snapshot_date DESC) = 1
)
SELECT event.user_id, event.position, event.track_id
FROM {history}.listen_events AS event
WHERE NOT EXISTS (SELECT 1 FROM latest_rewrite WHERE latest_rewrite.user_id = event.user_id)
UNION ALL
SELECT latest_rewrite.user_id, listen.position::INTEGER, listen.track_id
FROM latest_rewrite, unnest(latest_rewrite.new_track_ids) WITH ORDINALITY AS listen(track_id, position)
UNION ALL
SELECT event.user_id, event.position, event.track_id
FROM {history}.listen_events AS event
JOIN latest_rewrite USING (user_id)
WHERE event.position > len(latest_rewrite.new_track_ids)
  AND event.first_seen_date > latest_rewrite.snapshot_date;

-- Only the positions where the day's list and the previous one differ: the growth (nothing
-- before), and for a rewritten list the changed or dropped positions. Users absent from the
-- day's listens (gone, or an empty list, which exploded has no row) are left as they were.
CREATE OR REPLACE TEMP TABLE listen_differences AS
WITH served AS (
    SELECT user_id, position, track_id FROM core_staging.listen_history
),
previous AS (
    SELECT * FROM previous_listens WHERE user_id IN (SELECT user_id FROM served)
)
SELECT coalesce(served.user_id, previous.user_id) AS user_id,
       coalesce(served.position, previous.position) AS position,
       served.track_id AS served_track_id,
       previous.track_id AS previous_track_id
FROM served
FULL JOIN previous ON served.user_id = previous.user_id AND served.position = previous.position
WHERE served.track_id IS DISTINCT FROM previous.track_id;

-- The users whose list did not only grow. A growth onto a position that already holds an
-- event with another track (a list shortened, then grown differently) is a change too: the
-- kept event is not overwritten.
CREATE OR REPLACE TEMP TABLE day_rewrites AS
SELECT difference.user_id,
       CASE WHEN bool_or(difference.served_track_id IS NOT NULL) THEN 'changed' ELSE 'shortened' END AS kind,
       min(difference.position)::INTEGER AS first_difference
FROM listen_differences AS difference
LEFT JOIN {history}.listen_events AS kept
    ON difference.previous_track_id IS NULL
   AND kept.user_id = difference.user_id
   AND kept.position = difference.position
WHERE difference.previous_track_id IS NOT NULL
   OR (kept.track_id IS NOT NULL AND kept.track_id <> difference.served_track_id)
GROUP BY difference.user_id;

-- Both versions of each rewritten list, before the events change.
INSERT INTO {quality}.history_rewrites
SELECT rewrite.user_id, getvariable('snapshot_date'), rewrite.kind, rewrite.first_difference,
       coalesce(previous.track_ids, []), coalesce(served.track_ids, []),
       getvariable('run_id'), getvariable('recorded_at')
FROM day_rewrites AS rewrite
LEFT JOIN (
    SELECT user_id, list(track_id ORDER BY position) AS track_ids
    FROM previous_listens WHERE user_id IN (SELECT user_id FROM day_rewrites) GROUP BY user_id
) AS previous USING (user_id)
LEFT JOIN (
    SELECT user_id, list(track_id ORDER BY position) AS track_ids
    FROM core_staging.listen_history WHERE user_id IN (SELECT user_id FROM day_rewrites) GROUP BY user_id
) AS served USING (user_id)
ORDER BY rewrite.user_id;

-- The growth of every list that only grew: positions no event holds yet.
INSERT INTO {history}.listen_events
SELECT difference.user_id, difference.position, difference.served_track_id, getvariable('snapshot_date')
FROM listen_differences AS difference
WHERE difference.previous_track_id IS NULL
  AND difference.user_id NOT IN (SELECT user_id FROM day_rewrites)
  AND NOT EXISTS (
      SELECT 1 FROM {history}.listen_events AS kept
      WHERE kept.user_id = difference.user_id AND kept.position = difference.position
  )
ORDER BY difference.user_id, difference.position;
