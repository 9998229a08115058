//! Red team s90: the spill file of folded groups' filters (commit b962c39c). A child of
//! `runs`, so that its private fields are visible.

use super::tests::{conn, store, value};
use super::*;

const GROUP_ROWS: u64 = (GROUP_EPOCHS * EPOCH_ROWS) as u64;

fn file_conn(dir: &std::path::Path) -> Connection {
    let conn = Connection::open(dir.join("keys.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS data_keys
             (seq INTEGER PRIMARY KEY, tx BLOB, key_id BLOB, patient BLOB);",
    )
    .unwrap();
    conn.execute_batch(TABLES).unwrap();
    conn
}

/// Group 0 folded (spilled) and `extra` rows after it.
fn folded(conn: &Connection, extra: u64) -> Runs {
    let mut runs = Runs::read(conn).unwrap();
    for i in 0..GROUP_ROWS + extra {
        store(conn, &mut runs, i);
    }
    assert!(runs.filters[0].folded && runs.spill.is_some());
    runs
}

/// Cuts the spill file to nothing: every read of it fails.
fn cut_spill_file(runs: &Runs) {
    let spill = runs.spill.as_ref().unwrap();
    spill.file.as_ref().unwrap().set_len(0).unwrap();
}

fn found(conn: &Connection, runs: &Runs, i: u64) -> bool {
    runs.candidates(conn, Tag::Tx, &value(i, 1))
        .unwrap()
        .contains(&(i as i64 + 1))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A failed pread (spill file cut short) is an error from every lookup, never a panic; a
/// re-read of the tables recovers.
#[test]
fn s90_a_failed_pread_is_an_error_not_a_panic() {
    let conn = conn();
    let mut runs = folded(&conn, 3);
    cut_spill_file(&runs);
    assert!(runs.has_entry(&conn, 5, Tag::Tx, &value(4, 1)).is_err());
    assert!(runs.candidates(&conn, Tag::Tx, &value(4, 1)).is_err());
    assert!(runs.amend(&conn, 5, Tag::Patient, b"x").is_err());
    let runs = Runs::read(&conn).unwrap();
    assert!((0..GROUP_ROWS + 3).all(|i| found(&conn, &runs, i)));
}

/// Forged `key_groups` blobs: each refused as corrupt at read, none panics.
#[test]
fn s90_forged_group_blobs_are_refused() {
    for forged in ["'text'", "x''", "zeroblob(65)", "NULL", "42"] {
        let conn = conn();
        drop(folded(&conn, 3));
        conn.execute_batch(&format!(
            "ALTER TABLE key_groups RENAME TO old;
             CREATE TABLE key_groups (grp INTEGER PRIMARY KEY, bits);
             INSERT INTO key_groups SELECT grp, {forged} FROM old;"
        ))
        .unwrap();
        let err = Runs::read(&conn).unwrap_err().to_string();
        assert!(err.contains("malformed"), "{forged}: {err}");
    }
}

/// Ends the transaction as the key store does: flushed and committed, or rolled back.
fn finish(conn: &Connection, runs: &mut Runs, commit: bool) {
    if commit {
        runs.flush(conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        runs.commit();
    } else {
        conn.execute_batch("ROLLBACK").unwrap();
        runs.rollback(conn).unwrap();
    }
}

/// Amend + rollback, amend + commit + re-read, a fold in a rolled-back transaction: no row is
/// missed, and the amended value is found only once committed.
#[test]
fn s90_amend_and_fold_across_rollback_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let conn = file_conn(dir.path());
    let mut runs = folded(&conn, 3);
    let amended = b"amended patient!";
    for commit in [false, true] {
        conn.execute_batch("BEGIN").unwrap();
        runs.begin();
        runs.amend(&conn, 5, Tag::Patient, amended).unwrap();
        finish(&conn, &mut runs, commit);
        for r in [&runs, &Runs::read(&conn).unwrap()] {
            assert_eq!(
                r.has_entry(&conn, 5, Tag::Patient, amended).unwrap(),
                commit
            );
            assert!((0..GROUP_ROWS + 3).all(|i| found(&conn, r, i)));
        }
    }
    // A fold of group 1 in a transaction rolled back, then committed.
    for i in GROUP_ROWS + 3..2 * GROUP_ROWS - 1 {
        store(&conn, &mut runs, i);
    }
    for commit in [false, true] {
        conn.execute_batch("BEGIN").unwrap();
        runs.begin();
        store(&conn, &mut runs, 2 * GROUP_ROWS - 1);
        assert_eq!(runs.filter_counts().0, 2);
        finish(&conn, &mut runs, commit);
        assert_eq!(runs.filter_counts().0, 1 + usize::from(commit));
        let rows = 2 * GROUP_ROWS - 1 + u64::from(commit);
        assert!((0..rows).all(|i| found(&conn, &runs, i)));
    }
}

/// Repeated rollbacks of cut transactions (each a new spill file) leak no descriptor.
#[test]
fn s90_cut_rollbacks_leak_no_fd() {
    let dir = tempfile::tempdir().unwrap();
    let conn = file_conn(dir.path());
    let mut runs = folded(&conn, 3);
    let before = open_fds();
    for i in 0..200u64 {
        conn.execute_batch("BEGIN").unwrap();
        runs.begin();
        runs.amend(&conn, 5, Tag::Patient, &i.to_le_bytes())
            .unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        runs.rollback(&conn).unwrap();
    }
    assert_eq!(open_fds(), before);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        3,
        "keys.db, -wal, -shm only"
    );
}

/// Fixed (red team s90 F1): the read of the index again after a rolled-back transaction needs
/// a spill file (a descriptor, disk space); when it failed, `rollback` erred, `KeyStore`
/// only warned, and memory kept the rolled-back run (rows of the open epoch found by nothing, a
/// seq skipped, a store that no longer opened). Now a filter the spill file does not take is
/// held in memory, as before there was one: here a file that takes no write.
#[test]
fn s90_a_filter_the_spill_file_does_not_take_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let conn = file_conn(dir.path());
    let runs = folded(&conn, 3);
    let bytes = runs.bytes(&runs.filters[0]).unwrap();
    let read_only = dir.path().join("read-only");
    std::fs::write(&read_only, b"").unwrap();
    let mut spilled = Some(Spill {
        file: Some(std::fs::File::open(&read_only).unwrap()),
        end: 0,
        warned: false,
    });
    let Some(Bits::Held(filter)) = spill_filter(&mut spilled, &conn, &bytes) else {
        panic!("not held in memory");
    };
    assert_eq!(filter.to_bytes(), bytes);
    assert!(
        spill_filter(&mut spilled, &conn, &bytes[1..]).is_none(),
        "no filter"
    );
}

/// Fixed (red team s90 F2): the check of rows after a start held its epoch's run in memory, yet
/// each `has_entry` of a folded group's row read the spill file first: three reads a row, 28
/// million at 10 million held keys. Now the check reads its group's filter whole once: the
/// spill file cut short, the check still answers, and an amend sets the bit in both.
#[test]
fn s90_the_check_of_rows_reads_its_groups_filter_once() {
    let conn = conn();
    let mut runs = folded(&conn, 3);
    runs.scrub(&conn, 5).unwrap();
    assert!(runs.scrubbed_entries().is_some());
    assert!(runs.has_entry(&conn, 5, Tag::Tx, &value(4, 1)).unwrap());
    let spilled = runs.bytes(&runs.filters[0]).unwrap();
    let amended = b"amended patient!";
    conn.execute_batch("BEGIN").unwrap();
    runs.begin();
    runs.amend(&conn, 5, Tag::Patient, amended).unwrap();
    let now = runs
        .spill
        .as_ref()
        .unwrap()
        .bytes(0, spilled.len() / BLOCK_BYTES)
        .unwrap();
    assert_ne!(now, spilled, "the amend reached the spill file");
    finish(&conn, &mut runs, true);
    cut_spill_file(&runs);
    for i in 0..(EPOCH_ROWS as u64) {
        let seq = i as i64 + 1;
        runs.scrub(&conn, seq).unwrap();
        assert!(
            runs.has_entry(&conn, seq, Tag::Tx, &value(i, 1)).unwrap(),
            "row {seq}"
        );
    }
    assert!(
        runs.has_entry(&conn, 5, Tag::Patient, amended).unwrap(),
        "in the copy"
    );
    runs.scrub(&conn, EPOCH_ROWS + 1).unwrap();
    assert!(
        runs.has_entry(&conn, EPOCH_ROWS + 1, Tag::Tx, &value(EPOCH_ROWS as u64, 1))
            .unwrap(),
        "the next epoch of the group, from the same copy"
    );
    runs.end_scrub();
    assert!(
        runs.has_entry(&conn, 5, Tag::Tx, &value(4, 1)).is_err(),
        "the file again"
    );
    let read = Runs::read(&conn).unwrap();
    assert!(
        read.has_entry(&conn, 5, Tag::Patient, amended).unwrap(),
        "committed"
    );
}

/// Fixed (red team s91 F1; a writer of the file without the operator key): a group's filter of
/// any length was read and copied to the spill file, and the check of rows then held it whole
/// (64 MiB, where a fold writes at most 8 MiB). Now one longer than [`MAX_GROUP_BLOCKS`] is
/// malformed at open, as one of no whole block is; one of the most blocks still opens.
#[test]
fn s91_a_group_filter_longer_than_a_fold_writes_is_malformed() {
    for (blocks, opens) in [(MAX_GROUP_BLOCKS, true), (MAX_GROUP_BLOCKS + 1, false)] {
        let conn = conn();
        drop(folded(&conn, 3));
        conn.execute(
            "UPDATE key_groups SET bits = ?1 WHERE grp = 0",
            [vec![0xffu8; blocks * BLOCK_BYTES]],
        )
        .unwrap();
        match Runs::read(&conn) {
            Ok(mut runs) => {
                assert!(opens, "{blocks} blocks opened");
                runs.scrub(&conn, 5).unwrap();
                let held = runs.scrubbed.as_ref().unwrap().group.as_ref().unwrap();
                assert_eq!(held.1.blocks.len(), blocks);
            }
            Err(error) => {
                assert!(!opens, "{blocks} blocks: {error}");
                assert!(error.to_string().contains("malformed"), "{error}");
            }
        }
    }
}

/// A spilled group's summary is its filter folded four blocks into one (read back from the
/// file), rules out most keys held nowhere without a read of the file (here cut, so that a
/// read fails), never a key the filter holds, and takes an amend's bits.
#[test]
fn s91_a_groups_summary_answers_most_misses_without_the_file() {
    let conn = conn();
    let mut runs = folded(&conn, 3);
    let Bits::Spilled { blocks, .. } = runs.filters[0].bits else {
        panic!("spilled");
    };
    let bytes = runs.bytes(&runs.filters[0]).unwrap();
    let summary = |runs: &Runs| match &runs.filters[0].bits {
        Bits::Spilled { summary, .. } => summary.blocks.clone(),
        Bits::Held(_) => panic!("spilled"),
    };
    assert_eq!(summary(&runs), Summary::of(&bytes).blocks);
    assert_eq!(summary(&runs).len(), blocks.div_ceil(SUMMARY_FOLD));
    let amended = b"amended patient!";
    runs.amend(&conn, 5, Tag::Patient, amended).unwrap();
    let bytes = runs.bytes(&runs.filters[0]).unwrap();
    assert_eq!(
        summary(&runs),
        Summary::of(&bytes).blocks,
        "the amend's bits"
    );
    cut_spill_file(&runs);
    let (mut ruled_out, mut read) = (0, 0);
    for i in 0..1_000u64 {
        match runs.has_entry(&conn, 5, Tag::Tx, &value(i + 1_000_000, 1)) {
            Ok(found) => {
                assert!(!found);
                ruled_out += 1;
            }
            Err(_) => read += 1,
        }
    }
    assert!(ruled_out > 500, "{ruled_out} ruled out, {read} read");
    for i in 0..GROUP_ROWS {
        let seq = i as i64 + 1;
        assert!(
            runs.has_entry(&conn, seq, Tag::Tx, &value(i, 1)).is_err(),
            "row {seq}: held keys pass the summary to the file"
        );
    }
}
