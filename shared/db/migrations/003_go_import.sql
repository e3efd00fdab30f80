-- Bookkeeping of `chat-group import-go`, which moves a Go "Chat Group Server"
-- database into this one: where an import stands (so an interrupted one resumes),
-- which Go row became which row here, what the import changed and why, and the
-- report of every run. A target takes one Go database, once.

CREATE TABLE go_import (
    id              SMALLINT    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    fingerprint     TEXT        NOT NULL,  -- identifies the Go database's data, not its address
    source          TEXT        NOT NULL,  -- host, port and database name; never credentials
    schema_version  SMALLINT    NOT NULL CHECK (schema_version IN (1, 2)),
    -- The cut-off, from the Redis clock when the import began: later Go timestamps
    -- are clamped to it, and it fills the ones that are missing.
    started_at      TIMESTAMPTZ NOT NULL,
    frontier        JSONB       NOT NULL,  -- the highest Go id of each table when it began
    phase           TEXT        NOT NULL CHECK (phase IN ('messages', 'recent', 'done')),
    -- Where the message copy stands: the last (created_at, Go id) written and the
    -- id generator's state per partition. Updated in the transaction of each batch.
    position        JSONB       NOT NULL,
    messages_done   BIGINT      NOT NULL DEFAULT 0,
    finished_at     TIMESTAMPTZ
);

-- Go id -> id here. Users and channels keep their Go id unless the target already
-- used it; memberships and messages always get new keys.
CREATE TABLE go_import_users (
    go_id         BIGINT PRIMARY KEY,
    user_id       BIGINT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE go_import_channels (
    go_id         BIGINT PRIMARY KEY,
    channel_id    BIGINT NOT NULL UNIQUE REFERENCES channels (id) ON DELETE CASCADE,
    -- Its messages get seq 1..message_count; live ones continue after it.
    message_count BIGINT NOT NULL
);

CREATE TABLE go_import_memberships (
    go_id         BIGINT PRIMARY KEY,
    channel_id    BIGINT NOT NULL,
    user_id       BIGINT NOT NULL,
    FOREIGN KEY (channel_id, user_id) REFERENCES memberships (channel_id, user_id)
        ON DELETE CASCADE
);

-- One row per batch of copied messages, written in the batch's transaction: two
-- arrays instead of a row and an index entry per message cost a fraction of the
-- write. Read them as rows through the view.
CREATE TABLE go_import_message_batches (
    batch         BIGSERIAL PRIMARY KEY,
    go_ids        BIGINT[] NOT NULL,
    message_ids   BIGINT[] NOT NULL,
    CHECK (cardinality(go_ids) = cardinality(message_ids))
);
-- Out of line but not compressed: pglz took longer than copying the messages.
ALTER TABLE go_import_message_batches
    ALTER go_ids SET STORAGE EXTERNAL, ALTER message_ids SET STORAGE EXTERNAL;
CREATE VIEW go_import_messages AS
    SELECT m.go_id, m.message_id
    FROM go_import_message_batches b, unnest(b.go_ids, b.message_ids) AS m (go_id, message_id);

-- One row per change the import made to a Go row, with the policy that made it
-- (see the README, "Moving from the Go server"). Never holds password material.
CREATE TABLE go_import_changes (
    id            BIGSERIAL PRIMARY KEY,
    go_table      TEXT   NOT NULL,
    go_id         BIGINT,
    kind          TEXT   NOT NULL,
    detail        TEXT   NOT NULL
);
CREATE INDEX go_import_changes_row_idx ON go_import_changes (go_table, go_id);

CREATE TABLE go_import_runs (
    id            BIGSERIAL   PRIMARY KEY,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome       TEXT        NOT NULL,
    report        TEXT        NOT NULL
);
