-- Which of the given alert keys the ledger already holds: those were taken care of by an
-- earlier tick (whose cursor may have been lost) and are not alerted again.
SELECT DISTINCT alert_key
FROM monitoring.alert_deliveries
WHERE list_contains(getvariable('alert_keys'), alert_key);
