-- 0015 events and their detections, range-partitioned by month (docs/storage.md,
-- "Partitioning"), so that retention can drop a month whole once every plan has let go of
-- it, instead of deleting its rows one by one.
--
-- No event is copied: each table as it stands becomes its own first partition, covering
-- every time up to the start of the month after its newest row (an empty table: before
-- the last four months, which cover the longest plan's 90 days, so a new install starts
-- with monthly partitions). `python -m store.migrate`
-- then creates the monthly partitions up to a few months ahead (store/partitions.py), and
-- the maintenance beat keeps them ahead.
--
-- What changes in the keys:
-- * A partitioned table's unique keys must include its partition key: events' primary key
--   becomes (id, created_at), detections' (id, event_created_at). An id is still unique on
--   its own (one identity sequence hands them out), and every lookup by id still works.
-- * Idempotency moves out of events: UNIQUE (device_id, idempotency_key) could only be
--   enforced within a month, so a retry landing in the next month would make a second
--   event. event_requests holds (device_id, idempotency_key) as its primary key, with the
--   event it made; it goes with its event.
-- * Rows that point at an event carry its created_at: detections.event_created_at (the
--   partition key of detections, so a month of detections drops with its month of
--   events), notifications.event_created_at (filled by a trigger from the event) and
--   event_requests.event_created_at. Their foreign keys are (event_id, event_created_at).
-- * Home scoping is unchanged: events still reference homes (id) and devices (id, home_id).

-- Nothing writes these tables meanwhile: an event inserted with a key between the copy of
-- the keys below and the swap would be left without its claim. (The code before this
-- migration cannot run after it, nor the code after it before it: stop ingest and the
-- workers while it runs; docs/operations.md.)
LOCK TABLE events, detections, notifications IN ACCESS EXCLUSIVE MODE;

-- 1. Idempotency keys, one per device and key, whichever month their event is in.
CREATE TABLE event_requests (
    device_id        bigint      NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    idempotency_key  text        NOT NULL
                     CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    event_id         bigint      NOT NULL,
    event_created_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, idempotency_key)
);
INSERT INTO event_requests (device_id, idempotency_key, event_id, event_created_at)
SELECT device_id, idempotency_key, id, created_at FROM events
WHERE device_id IS NOT NULL AND idempotency_key IS NOT NULL;
-- The foreign key's cascade, and dropping a month's keys before the month itself.
CREATE INDEX event_requests_event_idx ON event_requests (event_created_at, event_id);

-- 2. The rows pointing at events learn their event's created_at.
ALTER TABLE detections DROP CONSTRAINT detections_event_id_fkey;
ALTER TABLE notifications DROP CONSTRAINT notifications_event_id_fkey;
ALTER TABLE detections ADD COLUMN event_created_at timestamptz;
UPDATE detections d SET event_created_at = e.created_at FROM events e WHERE e.id = d.event_id;
ALTER TABLE detections ALTER COLUMN event_created_at SET NOT NULL;
ALTER TABLE notifications ADD COLUMN event_created_at timestamptz;
UPDATE notifications n SET event_created_at = e.created_at FROM events e WHERE e.id = n.event_id;
CREATE INDEX notifications_event_created_at_idx ON notifications (event_created_at)
    WHERE event_id IS NOT NULL;

-- An alert names its event by id; the event's created_at is the database's to fill.
CREATE FUNCTION fill_event_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_id IS NOT NULL AND NEW.event_created_at IS NULL THEN
        SELECT created_at INTO NEW.event_created_at FROM events WHERE id = NEW.event_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER notifications_fill_event_created_at
    BEFORE INSERT OR UPDATE OF event_id ON notifications
    FOR EACH ROW EXECUTE FUNCTION fill_event_created_at();

-- 3. The partitioned tables, each with its table as it stands as the first partition.
DO $migration$
DECLARE
    newest    timestamptz := (SELECT max(created_at) FROM events);
    boundary  timestamptz;
    suffix    text;
    next_id   bigint;
    index_row record;
BEGIN
    boundary := CASE WHEN newest IS NULL
        THEN (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '4 months')
        ELSE (date_trunc('month', newest AT TIME ZONE 'UTC') + interval '1 month')
    END AT TIME ZONE 'UTC';
    suffix := to_char(boundary AT TIME ZONE 'UTC', 'YYYY_MM');

    -- events ------------------------------------------------------------------------
    next_id := (SELECT coalesce(max(id), 0) + 1 FROM events);
    next_id := greatest(next_id, (SELECT last_value + is_called::int FROM events_id_seq));
    ALTER TABLE events RENAME TO events_old;
    FOR index_row IN
        SELECT indexrelid::regclass::text AS name FROM pg_index
        WHERE indrelid = 'events_old'::regclass AND NOT indisprimary AND NOT indisunique
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', index_row.name,
                       left('events_before_' || suffix || substr(index_row.name, 7), 63));
    END LOOP;
    DROP TRIGGER events_set_updated_at ON events_old;
    ALTER TABLE events_old DROP CONSTRAINT events_device_id_idempotency_key_key;
    ALTER TABLE events_old DROP CONSTRAINT events_pkey;
    ALTER TABLE events_old ALTER COLUMN id DROP IDENTITY;  -- drops events_id_seq
    EXECUTE format('ALTER TABLE events_old RENAME TO %I', 'events_before_' || suffix);

    EXECUTE format($sql$
        CREATE TABLE events (
            LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
            PRIMARY KEY (id, created_at)
        ) PARTITION BY RANGE (created_at)
    $sql$, 'events_before_' || suffix);
    EXECUTE format('ALTER TABLE events ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY'
                   ' (SEQUENCE NAME events_id_seq START WITH %s)', next_id);
    -- The first partition's primary key on the new key, made before it joins: attaching
    -- adopts a primary key that matches, and builds one otherwise.
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (id, created_at)',
                   'events_before_' || suffix, 'events_before_' || suffix || '_pkey');
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                   'events_before_' || suffix, boundary);
    -- Home scoping, on every month; the first partition's own foreign keys, the same ones,
    -- are adopted as they are (already valid: no scan).
    ALTER TABLE events
        ADD CONSTRAINT events_home_id_fkey FOREIGN KEY (home_id)
            REFERENCES homes (id) ON DELETE CASCADE,
        ADD CONSTRAINT events_device_fk FOREIGN KEY (device_id, home_id)
            REFERENCES devices (id, home_id) ON DELETE SET NULL (device_id);

    -- detections --------------------------------------------------------------------
    next_id := (SELECT coalesce(max(id), 0) + 1 FROM detections);
    next_id := greatest(next_id, (SELECT last_value + is_called::int FROM detections_id_seq));
    ALTER TABLE detections RENAME TO detections_old;
    FOR index_row IN
        SELECT indexrelid::regclass::text AS name FROM pg_index
        WHERE indrelid = 'detections_old'::regclass AND NOT indisprimary AND NOT indisunique
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', index_row.name,
                       left('detections_before_' || suffix || substr(index_row.name, 11), 63));
    END LOOP;
    ALTER TABLE detections_old DROP CONSTRAINT detections_pkey;
    ALTER TABLE detections_old ALTER COLUMN id DROP IDENTITY;  -- drops detections_id_seq
    EXECUTE format('ALTER TABLE detections_old RENAME TO %I', 'detections_before_' || suffix);

    EXECUTE format($sql$
        CREATE TABLE detections (
            LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
            PRIMARY KEY (id, event_created_at)
        ) PARTITION BY RANGE (event_created_at)
    $sql$, 'detections_before_' || suffix);
    EXECUTE format('ALTER TABLE detections ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY'
                   ' (SEQUENCE NAME detections_id_seq START WITH %s)', next_id);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (id, event_created_at)',
                   'detections_before_' || suffix, 'detections_before_' || suffix || '_pkey');
    EXECUTE format('ALTER TABLE detections ATTACH PARTITION %I'
                   ' FOR VALUES FROM (MINVALUE) TO (%L)', 'detections_before_' || suffix, boundary);
END
$migration$;

-- The indexes, on every partition (the first partition's own are adopted, not rebuilt).
CREATE INDEX events_created_at_idx ON events (created_at);
CREATE INDEX events_device_id_analyzed_at_idx ON events (device_id, analyzed_at)
    WHERE analyzed_at IS NOT NULL;
CREATE INDEX events_home_digest_created_at_idx ON events (home_id, digest, created_at DESC);
CREATE INDEX events_home_id_created_at_idx ON events (home_id, created_at DESC);
CREATE INDEX events_image_key_idx ON events (image_key) WHERE image_key IS NOT NULL;
CREATE INDEX events_pending_idx ON events (status, created_at)
    WHERE status IN ('queued', 'processing');
CREATE INDEX events_snapshot_key_idx ON events (snapshot_key) WHERE snapshot_key IS NOT NULL;
CREATE INDEX events_summary_pending_idx ON events (home_id, analyzed_at)
    WHERE digest = 'summary' AND summary_id IS NULL;
CREATE INDEX events_undigested_idx ON events (updated_at)
    WHERE digest IS NULL AND status IN ('analyzed', 'failed', 'skipped');
CREATE TRIGGER events_set_updated_at BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX detections_event_id_idx ON detections (event_id);

-- 4. The foreign keys to events, now on (id, created_at). ON UPDATE CASCADE: an event whose
-- created_at is corrected moves with everything that names it.
ALTER TABLE detections ADD CONSTRAINT detections_event_fk
    FOREIGN KEY (event_id, event_created_at) REFERENCES events (id, created_at)
    ON DELETE CASCADE ON UPDATE CASCADE;
-- MATCH FULL: an alert names an event completely or not at all (a summary names none).
ALTER TABLE notifications ADD CONSTRAINT notifications_event_fk
    FOREIGN KEY (event_id, event_created_at) REFERENCES events (id, created_at)
    MATCH FULL ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE event_requests ADD CONSTRAINT event_requests_event_fk
    FOREIGN KEY (event_id, event_created_at) REFERENCES events (id, created_at)
    ON DELETE CASCADE ON UPDATE CASCADE;

-- Autovacuum analyses partitions, never the partitioned tables themselves.
ANALYZE events;
ANALYZE detections;
