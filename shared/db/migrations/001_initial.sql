-- Users, channels, memberships and messages: the system of record.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT        NOT NULL,
    username      TEXT        NOT NULL,
    email         TEXT        NOT NULL,
    password      TEXT        NOT NULL,  -- argon2id or migrated bcrypt hash, never plain text
    avatar_url    TEXT,
    role          TEXT        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Log-in accepts either identity in any case, so uniqueness is case-insensitive.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE channels (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT        NOT NULL,
    description   TEXT        NOT NULL DEFAULT '',
    image_url     TEXT,
    created_by    BIGINT      REFERENCES users (id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX channels_name_key ON channels (lower(name));

CREATE TABLE memberships (
    channel_id    BIGINT      NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          TEXT        NOT NULL DEFAULT 'member'
                              CHECK (role IN ('owner', 'moderator', 'member')),
    joined_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);
-- "Which channels is this user in" without scanning every channel.
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE messages (
    id            BIGINT      PRIMARY KEY,  -- time-ordered id assigned in Redis at send time
    channel_id    BIGINT      NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq           BIGINT      NOT NULL,
    user_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body          JSONB       NOT NULL,
    client_id     TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    -- Also the history index: newest-first pages and catch-up by seq are range scans on it.
    CONSTRAINT messages_channel_seq_key UNIQUE (channel_id, seq)
);
CREATE INDEX messages_user_idx ON messages (user_id);
