-- Token revocation: every token carries the generation it was issued under
-- (claim `gen`); log-out and a password change bump the user's generation, so
-- every earlier token stops being accepted on every gateway at once.
-- A per-user counter instead of a "valid after" timestamp: it needs no clock,
-- so a token issued in the same millisecond as a revocation, or by a gateway
-- whose clock lags, is still unambiguous. Tokens issued before this migration
-- have no `gen` claim and count as generation 0, which stays valid until the
-- user's first revocation.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
