-- Governance: private channels and direct messages, bans, mutes and invitations,
-- and at most one owner per channel.

-- A channel is public (listed, anyone joins), private (hidden from non-members,
-- joined by invitation) or a direct message (private, exactly its two users,
-- no one joins or is invited). With a constant default, ADD COLUMN rewrites
-- nothing: every existing channel stays public.
ALTER TABLE channels ADD COLUMN kind TEXT NOT NULL DEFAULT 'public'
    CHECK (kind IN ('public', 'private', 'dm'));

-- Direct messages have no name of their own (clients show the other user), so
-- they are outside the name's uniqueness.
DROP INDEX channels_name_key;
CREATE UNIQUE INDEX channels_name_key ON channels (lower(name)) WHERE kind <> 'dm';

-- Exactly one owner: ownership moves in one transaction (demote, then promote),
-- and this index refuses a second owner whatever the code does. Imported
-- channels whose Go data had no admin keep having none.
CREATE UNIQUE INDEX memberships_one_owner ON memberships (channel_id) WHERE role = 'owner';

-- The direct message of a pair of users: one per unordered pair (the lower id
-- first), so asking twice, or concurrently, finds the same channel. No self-DM.
CREATE TABLE direct_channels (
    user_low      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_high     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id    BIGINT NOT NULL UNIQUE REFERENCES channels (id) ON DELETE CASCADE,
    PRIMARY KEY (user_low, user_high),
    CHECK (user_low < user_high)
);
CREATE INDEX direct_channels_high_idx ON direct_channels (user_high);

-- Bans and mutes are rows of their own, not columns of memberships: a ban
-- outlives the membership it ended, and a mute must survive leave and rejoin.
-- `until` NULL: a ban without end. An ended ban or mute is ignored by every
-- check (`until > now()`) and replaced by the next one.
CREATE TABLE channel_bans (
    channel_id    BIGINT      NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    banned_by     BIGINT      REFERENCES users (id) ON DELETE SET NULL,
    until         TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);

CREATE TABLE channel_mutes (
    channel_id    BIGINT      NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    muted_by      BIGINT      REFERENCES users (id) ON DELETE SET NULL,
    until         TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);

-- Pending invitations into private channels: one per (channel, user); accepting
-- or declining deletes it.
CREATE TABLE channel_invitations (
    channel_id    BIGINT      NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    invited_by    BIGINT      REFERENCES users (id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_invitations_user_idx ON channel_invitations (user_id);
