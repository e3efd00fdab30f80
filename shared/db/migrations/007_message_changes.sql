-- Edits, deletes, reactions and replies.
--
-- Every seq of a channel is one row of `messages`: a chat message (kind
-- 'message') or an event that changed one ('message_edited',
-- 'message_deleted', 'reaction'). So a resume from PostgreSQL replays the
-- events in the channel's order exactly like messages, and the seq stays
-- gap-free in the table too. An event's `body` is its payload and never has
-- a top-level `content` (an edit's new body is under `body`), so what
-- searches `body->>'content'` finds chat messages only.
--
-- Constant defaults and NULL columns: ADD COLUMN rewrites nothing
-- (PostgreSQL 11+); the CHECKs scan the table once and the index is built
-- under this migration's ACCESS EXCLUSIVE lock (seconds per million messages;
-- the worker's writes wait, the messages stay in the stream). As in 006, give
-- up rather than queue every reader behind a long query holding the table.
SET LOCAL lock_timeout = '10s';

ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'
    CHECK (kind IN ('message', 'message_edited', 'message_deleted', 'reaction'));
-- A message's parent when it is a reply (same channel); the message an event
-- changes. No foreign key: several workers share a partition, so an event can
-- be committed before the message it changes (the worker applies it then).
ALTER TABLE messages ADD COLUMN target_id BIGINT;
ALTER TABLE messages ADD CONSTRAINT messages_event_has_target
    CHECK (kind = 'message' OR target_id IS NOT NULL);
-- The latest edit's time; the body is then the latest version.
ALTER TABLE messages ADD COLUMN edited_at TIMESTAMPTZ;
-- The body before the first edit (the later versions are the edit events' bodies).
ALTER TABLE messages ADD COLUMN original_body JSONB;
-- Set with the tombstone: `body` is then '{}' and no version keeps the content.
ALTER TABLE messages ADD COLUMN deleted_at TIMESTAMPTZ;
-- A message's events (the worker applies them) and a message's replies, by seq.
CREATE INDEX messages_target_idx ON messages (target_id, seq) WHERE target_id IS NOT NULL;

-- Who reacted with what. One row per (message, user, emoji), written by the
-- worker from `reaction` events: last writer wins by `seq`, so an add and a
-- remove of the same pair end right whatever order their batches commit in.
-- No foreign key to messages for the same reason as target_id.
CREATE TABLE message_reactions (
    message_id  BIGINT  NOT NULL,
    channel_id  BIGINT  NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id     BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji       TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,  -- of the event that set `present`
    present     BOOLEAN NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);
