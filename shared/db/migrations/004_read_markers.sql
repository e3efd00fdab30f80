-- Read markers: how far each member has read each channel they are in.
-- A column of memberships rather than a table of its own: a marker exists
-- exactly while the membership does (leaving drops it, no orphan rows to
-- clean up), "only members can set it" is the UPDATE finding the row, and the
-- caller's channel list reads it from the row it already scans. With a
-- constant default, ADD COLUMN rewrites nothing (PostgreSQL 11+).
-- The marker only moves forward: every write is `... WHERE last_read_seq < $new`.
ALTER TABLE memberships ADD COLUMN last_read_seq BIGINT NOT NULL DEFAULT 0
    CHECK (last_read_seq >= 0);
-- When the marker last moved (NULL: never marked).
ALTER TABLE memberships ADD COLUMN read_at TIMESTAMPTZ;
