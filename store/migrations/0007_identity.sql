-- 0007 identity: login sessions kept in PostgreSQL, and accounts an operator can disable.
--
-- Every access and refresh token names its session (the `sid` claim). A token is accepted
-- only while its session row exists, is neither revoked nor expired, and its user exists
-- and is not disabled; Redis merely caches that answer (webapp/tokens.py, docs/auth.md).
-- So a Redis wipe never brings a revoked token back.

-- Set by `flask users disable`: the user can no longer log in, and every session of theirs
-- is revoked at the same time, so enabling them again revives no old token.
ALTER TABLE users ADD COLUMN disabled_at timestamptz;


CREATE TABLE sessions (
    id             uuid        PRIMARY KEY,
    -- Deleting a user deletes their sessions, which ends every token they hold.
    user_id        bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The jti of the one refresh token currently valid. A refresh swaps it atomically;
    -- presenting any other refresh token of this session is reuse and revokes it.
    refresh_jti    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    refreshed_at   timestamptz,
    -- Moves forward with each refresh (the new refresh token's expiry).
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text        CHECK (revoked_reason IN ('logout', 'refresh_reused', 'user_disabled')),
    CONSTRAINT sessions_revoked_with_reason CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
-- Ending every session of a user (disable, delete).
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- `flask db prune-sessions` deletes long-expired rows.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
