-- 0009 the sweep for settled events the digest never decided reads only those.
CREATE INDEX events_undigested_idx ON events (updated_at)
    WHERE digest IS NULL AND status IN ('analyzed', 'failed', 'skipped');
