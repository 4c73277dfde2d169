-- 0006 every event says why it did or did not alert; failures are named; one object,
-- one label.

-- The digest's decision for every settled event, not only the analysed ones:
--   alert      the detector saw what matters (reason life_safety or armed)
--   failsafe   the picture could not be analysed and the home is armed, or the quick
--              check saw something alarming: the household hears of it anyway
--   summary    folded into the next calm summary (cooldown, quiet_hours, budget,
--              not_armed, routine, below_threshold)
--   suppressed nothing at or above the home's threshold in a disarmed home
ALTER TABLE events DROP CONSTRAINT events_digest_check;
ALTER TABLE events ADD CONSTRAINT events_digest_check
    CHECK (digest IN ('alert', 'failsafe', 'summary', 'suppressed'));

-- The stable code of why an event failed or was skipped (fetch_timeout, expired, ...);
-- `error` keeps the human message. /metrics counts failures by this code.
ALTER TABLE events ADD COLUMN error_code text;
UPDATE events SET error_code = substring(error FROM '^([a-z_]+): ')
WHERE status = 'failed' AND error ~ '^[a-z_]+: ';
UPDATE events SET error_code = 'expired' WHERE status = 'skipped';
UPDATE events SET error_code = 'analysis_attempts_exhausted'
WHERE status = 'failed' AND error_code IS NULL;

-- The labels a detection was not given: other classes the detector scored for the same
-- object (cross-class suppression), best first, as [{"label": ..., "score": ...}].
ALTER TABLE detections ADD COLUMN alternatives jsonb NOT NULL DEFAULT '[]';

-- GET /events?decision=... lists a home's events by decision, newest first.
CREATE INDEX events_home_digest_created_at_idx ON events (home_id, digest, created_at DESC);
