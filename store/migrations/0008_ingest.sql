-- 0008 an Idempotency-Key stands for one request: a retry with the same key and a different
-- body is refused instead of silently answered with the first event.

-- sha256 (hex) of the validated fields and the uploaded image's bytes; NULL for events
-- stored before it was kept (their replays are answered as before).
ALTER TABLE events ADD COLUMN request_hash text;
