-- Digest outcome of each analysed event, and the summary that folded it in.
-- An event is either alerted at once or waits, with others of its home, for a summary.

ALTER TABLE events
    ADD COLUMN digest     text CHECK (digest IN ('alert', 'summary')),
    ADD COLUMN summary_id bigint;

-- One summary notification row per device; summary_key ties the rows of one summary.
ALTER TABLE notifications
    ADD COLUMN summary_key text;

ALTER TABLE events
    ADD CONSTRAINT events_summary_pending_check CHECK (summary_id IS NULL OR digest = 'summary');

-- The summary sweep looks only at events still waiting for one.
CREATE INDEX events_summary_pending_idx ON events (home_id, analyzed_at)
    WHERE digest = 'summary' AND summary_id IS NULL;

-- Effectively once for summaries too: one row per (summary, device), device or none.
CREATE UNIQUE INDEX notifications_summary_device_key
    ON notifications (summary_key, coalesce(device_id, 0)) WHERE summary_key IS NOT NULL;

-- Alerts without a device (a home with no phone yet) are still recorded once per event.
CREATE UNIQUE INDEX notifications_event_kind_no_device_key
    ON notifications (event_id, kind) WHERE device_id IS NULL AND event_id IS NOT NULL;
