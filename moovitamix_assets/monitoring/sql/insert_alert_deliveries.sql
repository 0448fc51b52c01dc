-- One attempt's row; the key makes a second write of the same attempt a no-op (a tick whose
-- cursor was not saved writes its rows again on the next one).
INSERT OR IGNORE INTO monitoring.alert_deliveries
    (recorded_at, alert_key, kind, run_id, status, attempts, error, next_attempt_at, text)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);
