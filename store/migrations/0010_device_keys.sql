-- 0010 device keys: a camera or phone posts its own events with a long-lived key of its own.
--
-- A key is "vk_<id>_<secret>": the id (16 hex digits) is public and names the row; the
-- secret is 256 random bits. Only SHA-256 of the whole key is stored: a random key needs no
-- slow hash, and a copy of this table lets nobody post events. The key itself is shown once,
-- in the answer that issues it (webapp/device_keys.py, docs/auth.md).

CREATE TABLE device_keys (
    id          text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    -- Deleting the device deletes its keys: a deleted device's key stops at once.
    device_id   bigint      NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    secret_hash bytea       NOT NULL CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by a revocation, or by a rotation (then replaced_by names the new key). A revoked
    -- key is kept as a trail; it never works again.
    revoked_at  timestamptz,
    replaced_by text        REFERENCES device_keys (id) ON DELETE SET NULL,
    CONSTRAINT device_keys_replaced_when_revoked
        CHECK (replaced_by IS NULL OR revoked_at IS NOT NULL)
);
-- One live key per device: issuing a new one revokes the old in the same transaction.
CREATE UNIQUE INDEX device_keys_live_device_key ON device_keys (device_id)
    WHERE revoked_at IS NULL;
