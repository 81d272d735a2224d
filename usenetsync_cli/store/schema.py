"""Schemas of catalog.db and of the 16 shard databases, as migration lists.

Owns: table layouts. Entry ``i`` of each list migrates version ``i`` to
``i + 1`` (see ``db.migrate``); released entries are never edited, only
appended.

Layout decisions (DESIGN.md §4):
- A file and its segments live in one shard; rows carry integer keys only.
- No index on random-looking text (Message-IDs are derived, recomputed).
- ``files`` is unique on (folder_id, dir_id, name): the indexer merges one
  directory at a time against it, and the upload planner streams a folder.

Layout generations (shard v5). A file's bytes are described by a *layout*:
its segments (large files) or its member row in a pack (small files). Each
(re)plan of a file draws a new generation ``files.gen``; segment and member
rows carry the generation they belong to. ``files.done_gen`` names the last
generation that was posted, STAT-verified and read consistently (one stat
tuple, size/mtime_ns/ctime_ns/inode, before and after every read), with its
``done_size``, ``done_mtime_ns`` and BLAKE3 ``content_hash``
(core/hashing.py). A share version publishes, per file, the current
generation once it is done, else (for a file that kept changing) the done
one: never a mix. Rows of an older generation stay live until a newer one
is done (pipeline/settle.py supersedes them then).

Hashes: ``segments.hash`` is BLAKE3 (32 bytes) of the plaintext sealed (a
pack: core.hashing.pack_hash); ``pack_members.hash`` the member's piece
hash. A 16-byte value is a legacy xxh3_128 from a state made before v5: it
is still compared but never licenses reusing a stored nonce; publishing
replaces it with BLAKE3 of the article's plaintext (settle.backfill).
"""

from __future__ import annotations

from usenetsync_cli.store.db import Migration

CATALOG_MIGRATIONS: list[Migration] = [
    # v1: folders, their directory tree, and command runs.
    """
    CREATE TABLE folders(
        folder_id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,        -- absolute path, os.fsencode'd
        uid BLOB NOT NULL,                -- 16 random bytes: stable identity in hashes/AAD
        folder_key BLOB NOT NULL,         -- 32 random bytes (secret)
        created_ns INTEGER NOT NULL,
        last_index_run INTEGER,
        files INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        dirs INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE dirs(
        dir_id INTEGER PRIMARY KEY,
        folder_id INTEGER NOT NULL,
        relpath BLOB NOT NULL,            -- b'' for the folder root, b'a/b' below
        mode INTEGER NOT NULL DEFAULT 0,
        mtime_ns INTEGER NOT NULL DEFAULT 0,
        shard_mask INTEGER NOT NULL DEFAULT 0,  -- bit s set: shard s may hold files of this dir
        present INTEGER NOT NULL DEFAULT 1,
        seen_run INTEGER NOT NULL DEFAULT 0,
        UNIQUE(folder_id, relpath)
    );
    CREATE TABLE runs(
        run_id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        folder_id INTEGER,
        pid INTEGER NOT NULL,
        started_ns INTEGER NOT NULL,
        finished_ns INTEGER,
        status TEXT NOT NULL DEFAULT 'running',   -- running | ok | failed | interrupted
        summary TEXT                               -- JSON
    );
    """,
    # v2: per-folder segment size (fixed at the first upload) and upload jobs.
    """
    ALTER TABLE folders ADD COLUMN segment_size INTEGER;
    CREATE TABLE jobs(
        job_id INTEGER PRIMARY KEY,
        folder_id INTEGER NOT NULL,
        kind TEXT NOT NULL,                        -- upload
        state TEXT NOT NULL,                       -- running | incomplete | done
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL,
        summary TEXT                               -- JSON of the last run
    );
    CREATE INDEX jobs_folder ON jobs(folder_id, kind);
    -- Highest seg_id per shard that an upload may have handed to a connection.
    -- Written (committed) before the segments below it are fed, so after a
    -- crash the planned segments at or below it are STATed before re-posting.
    CREATE TABLE upload_marks(
        folder_id INTEGER NOT NULL,
        shard INTEGER NOT NULL,
        seg_id INTEGER NOT NULL,
        PRIMARY KEY(folder_id, shard)
    ) WITHOUT ROWID;
    """,
    # v3: shares of a folder and their published versions.
    """
    CREATE TABLE shares(
        share_pk INTEGER PRIMARY KEY,
        folder_id INTEGER NOT NULL,
        name TEXT NOT NULL UNIQUE,        -- local label (defaults to the folder's name)
        kind TEXT NOT NULL,               -- public | password | private
        share_id TEXT NOT NULL UNIQUE,    -- us1…; for public shares it carries the key (secret)
        share_key BLOB NOT NULL,          -- 32 bytes (secret)
        key_wrap BLOB NOT NULL DEFAULT x'', -- password shares: the key wrapped by the password
        recipients TEXT NOT NULL DEFAULT '[]', -- private shares: JSON list of uspk1… public keys
        version INTEGER NOT NULL DEFAULT 0,    -- last published version (0: never)
        created_ns INTEGER NOT NULL,
        published_ns INTEGER,
        files INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        index_parts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX shares_folder ON shares(folder_id);
    """,
    # v4: what the publisher proved about the version it published (records, files, bytes, that
    # every layout resolved), so `verify` reports it without reading the state again.
    """
    ALTER TABLE shares ADD COLUMN layout_check TEXT;
    """,
    # v5: the folder's choice to carry extended attributes (`index --xattrs`), kept for later runs.
    """
    ALTER TABLE folders ADD COLUMN xattrs INTEGER NOT NULL DEFAULT 0;
    """,
    # v6: key epochs (core/epochs.py). Epoch 0 is the folder key itself (folders.folder_key), so
    # states made before keep their keys, AAD and Message-IDs; later epochs have a random key each.
    """
    ALTER TABLE folders ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE epochs(
        folder_id INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        key BLOB NOT NULL,                -- 32 random bytes (secret)
        created_ns INTEGER NOT NULL,
        reason TEXT NOT NULL,             -- created | revoke | requested (text, not checked)
        PRIMARY KEY(folder_id, epoch)
    ) WITHOUT ROWID;
    """,
    # v7: where each chunk of a share's current index is (core/index_chunks.py), so the next version
    # posts only new chunks; emptied whenever the share key changes (its chunks are sealed under it).
    """
    CREATE TABLE share_chunks(
        share_pk INTEGER NOT NULL,
        chunk_id BLOB NOT NULL,           -- SHA-256 of the plain chunk
        pack_nonce BLOB NOT NULL,         -- the pack article it is in
        offset INTEGER NOT NULL,
        sealed_len INTEGER NOT NULL,
        plain_len INTEGER NOT NULL,
        PRIMARY KEY(share_pk, chunk_id)
    ) WITHOUT ROWID;
    CREATE TABLE share_packs(
        share_pk INTEGER NOT NULL,
        pack_nonce BLOB NOT NULL,
        size INTEGER NOT NULL,            -- sealed bytes in the pack (live and dead)
        PRIMARY KEY(share_pk, pack_nonce)
    ) WITHOUT ROWID;
    """,
    # v8: backups (pipeline/backup.py). A folder's backup is a share row with backup=1 (a private share to
    # its owner, keyed from the recovery phrase); ``digest`` is SHA-256 of the records a share's last
    # version published (an unchanged folder posts nothing). ``backup_versions`` are the versions this
    # machine published (the catalog on the server is the union over machines); ``backup_sync`` the
    # digest of the local part of the catalog as last merged into the server's (equal: nothing to post).
    # ``backup_covered_ns``: when the folder's state was last known to equal its newest backup version;
    # ``adopting``: set while `adopt` rebuilds the folder's rows (a rerun finishes them).
    """
    ALTER TABLE shares ADD COLUMN backup INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE shares ADD COLUMN digest BLOB;
    ALTER TABLE folders ADD COLUMN backup_covered_ns INTEGER;
    ALTER TABLE folders ADD COLUMN label TEXT;
    ALTER TABLE folders ADD COLUMN adopting INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE backup_versions(
        folder_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        created_ns INTEGER NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY(folder_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE backup_sync(
        id INTEGER PRIMARY KEY CHECK(id=1),
        local_digest BLOB NOT NULL,
        version INTEGER NOT NULL,
        synced_ns INTEGER NOT NULL
    );
    """,
    # v9: the key epoch every never-posted segment of the folder is known to be in, so planning re-epochs
    # them (a walk over every planned segment) only after the epoch changed, not at every resume.
    """
    ALTER TABLE folders ADD COLUMN planned_epoch INTEGER;
    """,
    # v10: what `index` leaves out of the folder (`--exclude`, `--exclude-caches`, `--one-file-system`), kept
    # for later runs: JSON of core.excludes.Selection, NULL for nothing (every folder made before).
    """
    ALTER TABLE folders ADD COLUMN selection TEXT;
    """,
]

SHARD_MIGRATIONS: list[Migration] = [
    # v1: indexed files (and symlinks).
    """
    CREATE TABLE files(
        file_id INTEGER PRIMARY KEY,
        folder_id INTEGER NOT NULL,
        dir_id INTEGER NOT NULL,
        name BLOB NOT NULL,
        kind INTEGER NOT NULL,            -- 0 regular file, 1 symlink
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        mode INTEGER NOT NULL,
        target BLOB,                      -- symlink target
        present INTEGER NOT NULL DEFAULT 1,
        changed_run INTEGER NOT NULL DEFAULT 0,
        UNIQUE(folder_id, dir_id, name)
    );
    """,
    # v2: the segment layout and its posting state.
    #   segments.state: 0 planned, 1 posted (answered 240), 2 verified (STAT 223
    #   after posting), 3 failed (this run gave up; retried on resume),
    #   4 superseded (its file changed; no longer part of the layout).
    #   AUTOINCREMENT: a seg_id is never reused, because (shard, seg_id, attempt)
    #   derives the Message-ID and the encryption AAD.
    """
    ALTER TABLE files ADD COLUMN plan_size INTEGER;
    ALTER TABLE files ADD COLUMN plan_mtime_ns INTEGER;
    ALTER TABLE files ADD COLUMN plan_inode INTEGER;
    CREATE TABLE segments(
        seg_id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder_id INTEGER NOT NULL,
        file_id INTEGER,                  -- NULL for a pack (see pack_members)
        idx INTEGER NOT NULL,             -- segment number within its file
        offset INTEGER NOT NULL,          -- file offset of the payload
        length INTEGER NOT NULL,          -- payload bytes
        state INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,
        wire_bytes INTEGER,
        hash BLOB,                        -- xxh3_128 of the plaintext payload
        posted_ns INTEGER,
        checked_ns INTEGER,
        server_msgid TEXT,                -- only when 240 named another ID than ours
        error TEXT
    );
    CREATE INDEX segments_work ON segments(folder_id, state, seg_id);
    CREATE INDEX segments_file ON segments(file_id, idx) WHERE file_id IS NOT NULL;
    CREATE TABLE pack_members(
        seg_id INTEGER NOT NULL,
        file_id INTEGER NOT NULL,
        pack_offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        hash BLOB,
        PRIMARY KEY(seg_id, file_id)
    ) WITHOUT ROWID;
    CREATE INDEX pack_members_file ON pack_members(file_id);
    """,
    # v3: results of verify sweeps, least recently checked first.
    #   check_result: 1 present (STAT 223), 0 missing (430 family), 2 damaged
    #   (BODY failed its CRC, GCM tag or hash). checked_ns: when, by post-check
    #   or verify.
    """
    ALTER TABLE segments ADD COLUMN check_result INTEGER;
    CREATE INDEX segments_check ON segments(folder_id, checked_ns, seg_id);
    """,
    # v4: the AES-GCM nonce a segment was first sealed with. A re-post (or a
    # rebuild for recovery data) seals the same plaintext (checked by hash)
    # with the same nonce, so the bytes on the server are reproducible; a
    # different plaintext is never sealed under a stored nonce.
    """
    ALTER TABLE segments ADD COLUMN nonce BLOB;
    """,
    # v5: cryptographic content hashes and layout generations (see the module docstring).
    #   Existing rows become generation 0; a plan made before v5 is trusted as of its stat
    #   (plan_ctime_ns = the indexed ctime), so nothing is uploaded again; their xxh3 hashes are
    #   replaced by BLAKE3 from the server before the folder is next published.
    """
    ALTER TABLE files ADD COLUMN plan_ctime_ns INTEGER;
    ALTER TABLE files ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN done_gen INTEGER;
    ALTER TABLE files ADD COLUMN done_size INTEGER;
    ALTER TABLE files ADD COLUMN done_mtime_ns INTEGER;
    ALTER TABLE files ADD COLUMN content_hash BLOB;
    ALTER TABLE files ADD COLUMN unstable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE segments ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pack_members ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
    UPDATE files SET plan_ctime_ns=ctime_ns WHERE plan_size IS NOT NULL;
    -- Files whose current generation is not yet settled (done or abandoned): the settle
    -- step pages through this, never through every file.
    CREATE INDEX files_unsettled ON files(folder_id, file_id)
        WHERE present=1 AND kind=0 AND plan_size IS NOT NULL AND done_gen IS NOT gen;
    """,
    # v6: link counts, so hard links of a folder are published as links (one copy of the data),
    #   and user.* extended attributes for folders indexed with --xattrs.
    #   Rows indexed before read 1 (no link) until the next index sees them.
    """
    ALTER TABLE files ADD COLUMN nlink INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE files ADD COLUMN xattrs BLOB;     -- user.* extended attributes (scan.xattr_blob), if carried
    CREATE INDEX files_linked ON files(folder_id, inode) WHERE nlink>1 AND present=1 AND kind=0;
    """,
    # v7: the key epoch a segment is sealed and named in (0 for every segment made before).
    """
    ALTER TABLE segments ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    """,
    # v8: segments last found missing or damaged, so the end of a verify sweep (damaged_files) reads
    #   those few rows instead of scanning every segment.
    """
    CREATE INDEX segments_bad ON segments(folder_id, seg_id) WHERE check_result IN (0,2);
    """,
    # v9: counters and narrower indexes, so no per-command query walks every row (issue 12; the hot
    #   queries and the index each one uses are listed in store/counters.py).
    #   segment_counts: live (n, bytes) per (folder, state, check_result), -1 for never checked, and the
    #   newest checked_ns seen in that group; file_counts: (n, bytes) per (folder, present, kind). Both are
    #   kept by triggers, so they change in the same transaction as the rows they count, whatever
    #   statement changes the rows, and a crash can never leave them disagreeing.
    #   files_unplanned: the planner's work list (its WHERE is repeated verbatim by plan._NEEDS_PLAN).
    #   segments_due replaces segments_check: verify pages by checked_ns through live segments only, so
    #   superseded or never-posted rows never sit in front of the sweep. segments_nohash: verified segments
    #   whose BLAKE3 is not known yet (settle.backfill's work list, read at the end of every upload).
    """
    CREATE TABLE segment_counts(
        folder_id INTEGER NOT NULL,
        state INTEGER NOT NULL,
        chk INTEGER NOT NULL,             -- check_result, -1 never checked
        n INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        last_checked_ns INTEGER NOT NULL, -- max checked_ns seen in this group (never lowered)
        PRIMARY KEY(folder_id, state, chk)
    ) WITHOUT ROWID;
    CREATE TABLE file_counts(
        folder_id INTEGER NOT NULL,
        present INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        n INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY(folder_id, present, kind)
    ) WITHOUT ROWID;
    INSERT INTO segment_counts SELECT folder_id, state, coalesce(check_result, -1), count(*), sum(length),
        coalesce(max(checked_ns), 0) FROM segments GROUP BY 1, 2, 3;
    INSERT INTO file_counts SELECT folder_id, present, kind, count(*), sum(size) FROM files GROUP BY 1, 2, 3;
    CREATE TRIGGER segments_count_insert AFTER INSERT ON segments BEGIN
        INSERT INTO segment_counts VALUES(NEW.folder_id, NEW.state, coalesce(NEW.check_result, -1), 1, NEW.length,
            coalesce(NEW.checked_ns, 0))
        ON CONFLICT(folder_id, state, chk) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes,
            last_checked_ns=max(last_checked_ns, excluded.last_checked_ns);
    END;
    CREATE TRIGGER segments_count_delete AFTER DELETE ON segments BEGIN
        UPDATE segment_counts SET n=n-1, bytes=bytes-OLD.length
        WHERE folder_id=OLD.folder_id AND state=OLD.state AND chk=coalesce(OLD.check_result, -1);
    END;
    CREATE TRIGGER segments_count_update AFTER UPDATE OF folder_id, state, check_result, length, checked_ns ON segments
    WHEN OLD.folder_id<>NEW.folder_id OR OLD.state<>NEW.state OR OLD.check_result IS NOT NEW.check_result
        OR OLD.length<>NEW.length OR OLD.checked_ns IS NOT NEW.checked_ns
    BEGIN
        UPDATE segment_counts SET n=n-1, bytes=bytes-OLD.length
        WHERE folder_id=OLD.folder_id AND state=OLD.state AND chk=coalesce(OLD.check_result, -1);
        INSERT INTO segment_counts VALUES(NEW.folder_id, NEW.state, coalesce(NEW.check_result, -1), 1, NEW.length,
            coalesce(NEW.checked_ns, 0))
        ON CONFLICT(folder_id, state, chk) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes,
            last_checked_ns=max(last_checked_ns, excluded.last_checked_ns);
    END;
    CREATE TRIGGER files_count_insert AFTER INSERT ON files BEGIN
        INSERT INTO file_counts VALUES(NEW.folder_id, NEW.present, NEW.kind, 1, NEW.size)
        ON CONFLICT(folder_id, present, kind) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
    END;
    CREATE TRIGGER files_count_delete AFTER DELETE ON files BEGIN
        UPDATE file_counts SET n=n-1, bytes=bytes-OLD.size
        WHERE folder_id=OLD.folder_id AND present=OLD.present AND kind=OLD.kind;
    END;
    CREATE TRIGGER files_count_update AFTER UPDATE OF folder_id, present, kind, size ON files
    WHEN OLD.folder_id<>NEW.folder_id OR OLD.present<>NEW.present OR OLD.kind<>NEW.kind OR OLD.size<>NEW.size
    BEGIN
        UPDATE file_counts SET n=n-1, bytes=bytes-OLD.size
        WHERE folder_id=OLD.folder_id AND present=OLD.present AND kind=OLD.kind;
        INSERT INTO file_counts VALUES(NEW.folder_id, NEW.present, NEW.kind, 1, NEW.size)
        ON CONFLICT(folder_id, present, kind) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
    END;
    CREATE INDEX files_unplanned ON files(folder_id, file_id)
        WHERE present=1 AND kind=0 AND (plan_size IS NULL OR plan_size<>size OR plan_mtime_ns<>mtime_ns
            OR plan_inode<>inode OR plan_ctime_ns IS NOT ctime_ns);
    DROP INDEX segments_check;
    CREATE INDEX segments_due ON segments(folder_id, checked_ns, seg_id) WHERE state IN (1,2);
    CREATE INDEX segments_nohash ON segments(folder_id, seg_id) WHERE state=2 AND (hash IS NULL OR length(hash)<>32);
    """,
]
