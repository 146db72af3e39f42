-- The DOT store index. Applied by db::migrate; PRAGMA user_version tracks
-- which of the numbered steps below have run. Append steps, never edit one.

-- step 1
CREATE TABLE objects (
    oid         BLOB PRIMARY KEY NOT NULL,  -- 32-byte SHA-256
    size        INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    complete    INTEGER NOT NULL DEFAULT 0, -- 1 once the whole-object hash was checked
    backing     TEXT,                       -- referenced file; NULL: bytes live in the store
    b_dev       INTEGER,
    b_ino       INTEGER,
    b_size      INTEGER,
    b_mtime_ns  INTEGER,
    last_use    INTEGER NOT NULL            -- unix seconds, for LRU eviction
) WITHOUT ROWID;

CREATE TABLE chunks (
    oid     BLOB NOT NULL,
    idx     INTEGER NOT NULL,
    hash    BLOB NOT NULL,                  -- 32-byte BLAKE3
    offset  INTEGER NOT NULL,
    len     INTEGER NOT NULL,
    present INTEGER NOT NULL DEFAULT 0,     -- 1 only after verified bytes were written
    PRIMARY KEY (oid, idx)
) WITHOUT ROWID;

-- The chunk location index: where a chunk with a given hash is held.
CREATE INDEX chunks_present_by_hash ON chunks (hash) WHERE present = 1;

-- The OID cache of referenced files: an unchanged file is never hashed twice.
CREATE TABLE files (
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    oid      BLOB NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;

-- step 2
-- The access token a peer must present to learn the object's descriptors.
ALTER TABLE objects ADD COLUMN token BLOB;

-- step 3
-- Generations: every open of the store starts a new one. `generation` is
-- the current (or last) session's; `clean` the last one whose writes are
-- known to be on disk (closed cleanly, durable, or re-verified and flushed
-- after an unclean stop). After an unclean stop, the owned objects written
-- in a generation after `clean` are re-verified: no wall clock involved.
CREATE TABLE generations (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    clean      INTEGER NOT NULL
);
INSERT INTO generations (id, generation, clean) VALUES (1, 0, 0);
-- The generation in which an object's bytes or chunk marks last changed
-- (put, fill started, chunks written, completed, damage marked).
ALTER TABLE objects ADD COLUMN written INTEGER NOT NULL DEFAULT 0;
