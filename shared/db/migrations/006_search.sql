-- Full-text search over message texts (`GET /api/v1/search`).
--
-- A stored generated column with a GIN index on it, rather than a GIN index on
-- the expression alone. Both keep themselves right when an edit replaces `body`
-- (PostgreSQL recomputes the column on UPDATE) and both leave out a body without
-- `content` (a file, a deleted message's tombstone: the column is NULL). Measured
-- on 1,000,000 messages (loadtests/RESULTS.md, "Search"): the expression index
-- builds in 11 s and the column costs a table rewrite (29 s) plus 8 s of index,
-- but newest-first search walks the primary key and tests each row against the
-- query, and recomputing `to_tsvector` per row there made mid-frequency words
-- take 0.4-2.6 s for a member of a 500,000-message channel, against 3-20 ms
-- reading the stored vector.
--
-- `simple`: every language is searched alike, words are neither stemmed nor
-- dropped as stop-words. `english` would stem ("running" finding "run") but only
-- for English, mangle other languages' words, and make a search for "the who"
-- match nothing. The text is lowercased first with the builtin `pg_c_utf8`
-- collation (Unicode case mapping, whatever the database's locale): `simple`
-- lowercases by the database's LC_CTYPE, which under the C locale is ASCII only,
-- so "ΚΑΛΗΜΕΡΑ" would not be found by "καλημερα". The search lowercases the
-- query the same way.
--
-- Only the first 50,000 characters are indexed: a tsvector holds at most 1 MB of
-- lexemes, which 1,000,000 characters of distinct words exceed, and the error
-- would fail the worker's insert of a message already acknowledged
-- (WS_MAX_BODY_BYTES has no upper bound). 50,000 characters are at most 200 KB.
--
-- The rewrite holds an ACCESS EXCLUSIVE lock on `messages` for its duration
-- (about 30 s per million messages): the persistence worker's writes wait (the
-- messages stay in the Redis stream, sends are still acknowledged and delivered
-- live), history and resume reads from PostgreSQL wait too. The lock timeout
-- makes the migration give up instead of queueing every reader behind it while
-- a long query holds the table. CREATE INDEX CONCURRENTLY would not shorten the
-- lock (the rewrite takes it anyway), and the runner applies each file in one
-- transaction, where CONCURRENTLY cannot run.
SET LOCAL lock_timeout = '10s';

ALTER TABLE messages ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, lower(left(body ->> 'content', 50000) COLLATE pg_c_utf8))
    ) STORED;
CREATE INDEX messages_search_idx ON messages USING gin (search_vector);
-- The planner picks between the index and a newest-first walk of the primary
-- key from the column's statistics: have them now, not at the next autovacuum.
ANALYZE messages;
