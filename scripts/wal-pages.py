#!/usr/bin/env python3
"""Where a SQLite store's written bytes go, per table and index, from its write-ahead log.

Every commit appends each page it dirtied to the WAL once (a frame: 24 bytes of header and the
page); a checkpoint later copies each distinct page of the frames since the last one into the
database file. So the frames of a run, mapped to the B-tree each page belongs to (SQLite's
dbstat table), say which table or index each written byte was for.

Usage, on a store whose writer is about to run (BENCHMARKS.md, "Issue 11: where the bytes go"):

    wal-pages.py hold DB &     # a read transaction that keeps every frame of the run in the WAL
    ... run the writer, let it stop ...
    kill -9 %1                 # killed, not closed: a clean close would checkpoint the WAL away
    wal-pages.py report DB [--checkpoint-frames 4096] [--transactions N] [--wal DB-wal] [--skip-commits K]

`report` reads the WAL's raw frames (before opening the database, which would checkpoint it at
close), then the page-to-B-tree map from dbstat. Holding the read transaction stops checkpoints
from recycling the WAL, so the writer's own checkpoints do not run during the run: `report`
models them instead (every `--checkpoint-frames` frames, as `PRAGMA wal_autocheckpoint`), and
counts each distinct page of each window once. `--skip-commits K` leaves out the first K
commits (a migration run when the writer opened the store, say); `--transactions` should then
count the rows of the commits kept.
"""
import collections
import sqlite3
import struct
import sys
import time

WAL_HEADER = 32
FRAME_HEADER = 24


def checksum(data, s0, s1, big_endian):
    fmt = ">" if big_endian else "<"
    words = struct.unpack(fmt + "%dI" % (len(data) // 4), data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def commits(wal_path):
    """The committed transactions of the WAL, each a list of page numbers, in order."""
    with open(wal_path, "rb") as f:
        wal = f.read()
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", wal[:WAL_HEADER])
    big_endian = magic & 1
    s0, s1 = checksum(wal[:24], 0, 0, big_endian)
    if (s0, s1) != (c0, c1):
        sys.exit("%s: bad WAL header checksum" % wal_path)
    out, pending = [], []
    offset = WAL_HEADER
    frame = FRAME_HEADER + page_size
    while offset + frame <= len(wal):
        page, size_after, fs1, fs2, fc0, fc1 = struct.unpack(
            ">6I", wal[offset : offset + FRAME_HEADER]
        )
        if (fs1, fs2) != (salt1, salt2):
            break
        s0, s1 = checksum(wal[offset : offset + 8], s0, s1, big_endian)
        s0, s1 = checksum(wal[offset + FRAME_HEADER : offset + frame], s0, s1, big_endian)
        if (s0, s1) != (fc0, fc1):
            break
        pending.append(page)
        if size_after:
            out.append(pending)
            pending = []
        offset += frame
    return page_size, out


def page_owners(db_path):
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    owners = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    conn.close()
    return owners


def hold(db_path):
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
    print("holding a read transaction on %s" % db_path, flush=True)
    while True:
        time.sleep(3600)


def report(db_path, checkpoint_frames, transactions, wal_path, skip):
    page_size, found = commits(wal_path or db_path + "-wal")
    found = found[skip:]
    owners = page_owners(db_path)
    if not found:
        sys.exit("no committed frame in the WAL")
    frames = collections.Counter()
    checkpointed = collections.Counter()
    window, window_frames = set(), 0
    for commit in found:
        for page in commit:
            frames[owners.get(page, "(free or new)")] += 1
        window.update(commit)
        window_frames += len(commit)
        if window_frames >= checkpoint_frames:
            for page in window:
                checkpointed[owners.get(page, "(free or new)")] += 1
            window, window_frames = set(), 0
    for page in window:
        checkpointed[owners.get(page, "(free or new)")] += 1
    per = transactions or len(found)
    unit = "per transaction" if transactions else "per commit"
    wal_frame = FRAME_HEADER + page_size
    print(
        "%d commits, %d frames; page %d bytes; checkpoint every %d frames; bytes %s"
        % (len(found), sum(frames.values()), page_size, checkpoint_frames, unit)
    )
    print("%-34s %12s %12s %12s %7s" % ("b-tree", "WAL", "checkpoint", "total", "share"))
    total_all = sum(frames[n] * wal_frame + checkpointed[n] * page_size for n in frames)
    for name, _ in sorted(
        frames.items(), key=lambda kv: -(kv[1] * wal_frame + checkpointed[kv[0]] * page_size)
    ):
        wal_bytes = frames[name] * wal_frame / per
        ckpt_bytes = checkpointed[name] * page_size / per
        print(
            "%-34s %12.0f %12.0f %12.0f %6.1f%%"
            % (name, wal_bytes, ckpt_bytes, wal_bytes + ckpt_bytes,
               100.0 * (wal_bytes + ckpt_bytes) * per / total_all)
        )
    print("%-34s %12s %12s %12.0f" % ("all", "", "", total_all / per))


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("hold", "report"):
        sys.exit(__doc__)
    db_path = sys.argv[2]
    if sys.argv[1] == "hold":
        hold(db_path)
    args = sys.argv[3:]
    options = dict(zip(args[::2], args[1::2]))
    report(
        db_path,
        int(options.get("--checkpoint-frames", 4096)),
        int(options.get("--transactions", 0)),
        options.get("--wal"),
        int(options.get("--skip-commits", 0)),
    )


if __name__ == "__main__":
    main()
