-- A claimed run is leased to the replica running it, which renews the lease while it
-- exports and sends. A run still pending after its lease lapsed (the replica died, or could
-- not hand a failed send to the retry queue) is taken over by another replica. NULL: no
-- replica holds it (finished, skipped, or owned by the retry queue).
ALTER TABLE scheduled_export_runs ADD COLUMN leased_until TIMESTAMPTZ;
CREATE INDEX scheduled_export_runs_lapsed ON scheduled_export_runs (leased_until)
    WHERE status = 'pending' AND leased_until IS NOT NULL;
