//! What a clean stop vouches for in `keys.db`: how far the check of rows after a start had got
//! (`Service::check_rows`, docs/SECURITY.md §12.1 item 8), sealed with the file's length and
//! SHA-256 digest under a key derived from the key-store key, in `keys.db.checked` beside it.
//!
//! A start whose `keys.db` is byte for byte the file a stop of this validator vouched for
//! checks only the rows that stop had not (none, once a check had ended): the rows before were
//! checked, or written by this validator with the operator key, since the start before, and
//! nothing changed them since. Whoever writes the stopped validator's files without the
//! operator key changes the digest (a row, a page of the WAL folded in at open, the record
//! itself: its tag fails), and the start checks every row, as every start did before. An
//! older file put back with its own record is an older state of this validator's own store,
//! which a restored backup is too (§5.6). The digest is read at each clean stop and each
//! start, its WAL emptied (about a second a gigabyte), where the check of rows it spares took
//! about 3 µs a row at 10 % of a core, tens of seconds to minutes after every start.

use std::io::Read;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::error::NodeError;

/// The record's first bytes, and the domain of its tag.
const MAGIC: &[u8] = b"medchain/keys-checked/v1";
/// What the record's key is derived with from the key-store key, with the genesis hash.
pub(super) const KEY_LABEL: &[u8] = b"medchain/keystore/checked/v1";
/// The record: magic, the file's length (u64 LE), its SHA-256, the row checked through (i64
/// LE; [`EVERY_ROW`] when every row is), and the HMAC-SHA256 of all of that.
const RECORD_BYTES: usize = MAGIC.len() + 8 + 32 + 8 + 32;
/// `checked through` when every row is checked (no row has this `seq`: they run from 1).
const EVERY_ROW: i64 = -1;

/// Where the check of rows starts after an open: after this `seq` (`Some(0)`: every row), or
/// `None` when no row needs one.
pub(crate) type SweepFrom = Option<i64>;

/// The record beside the database `db`.
fn record_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".checked");
    PathBuf::from(name)
}

/// `db`'s length and SHA-256, read whole.
fn digest_of(db: &Path) -> Result<(u64, [u8; 32]), NodeError> {
    let mut file = std::fs::File::open(db)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
    Ok((length, hasher.finalize().into()))
}

fn body(length: u64, digest: &[u8; 32], sweep_from: SweepFrom) -> Vec<u8> {
    let mut body = Vec::with_capacity(RECORD_BYTES);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(digest);
    body.extend_from_slice(&sweep_from.unwrap_or(EVERY_ROW).to_le_bytes());
    body
}

/// The record at `path`: a regular file of the record's size, read without following a link
/// (a FIFO, a device or a link planted in its place would stall or mislead the open; red team
/// s46).
fn read_record(path: &Path) -> std::io::Result<Vec<u8>> {
    let (file, len) = ledger::files::open_regular(path)?;
    if len != RECORD_BYTES as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a record: not of its size",
        ));
    }
    let mut record = Vec::with_capacity(RECORD_BYTES);
    file.take(RECORD_BYTES as u64 + 1)
        .read_to_end(&mut record)?;
    Ok(record)
}

/// Writes the record of `db` as it is now, its rows checked as `sweep_from` says, under `mac`.
/// The caller has emptied the WAL and writes nothing more before it closes the file.
pub(super) fn write(db: &Path, mac: &Hmac<Sha256>, sweep_from: SweepFrom) -> Result<(), NodeError> {
    let (length, digest) = digest_of(db)?;
    let mut record = body(length, &digest, sweep_from);
    let tag = mac.clone().chain_update(&record).finalize().into_bytes();
    record.extend_from_slice(&tag);
    ledger::files::write_private_file(&record_path(db), &record)?;
    Ok(())
}

/// Reads and removes the record beside `db` (opened, its WAL emptied): where the check of rows
/// starts. Every row (`Some(0)`) unless the record's tag holds under `mac` and `db` is the file
/// it was written for. Never an error for a record that is missing, damaged or forged: the
/// check of every row is what a start did without one.
pub(super) fn take(db: &Path, mac: &Hmac<Sha256>) -> Result<SweepFrom, NodeError> {
    let path = record_path(db);
    let record = match read_record(&path) {
        Ok(record) => record,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Some(0)),
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot read; every row of keys.db is checked");
            if let Err(error) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), %error, "cannot remove it");
            }
            return Ok(Some(0));
        }
    };
    // Once read it vouches for nothing more: the store changes from here.
    if let Err(error) = std::fs::remove_file(&path) {
        warn!(path = %path.display(), %error, "cannot remove the record of the last check");
    }
    let every_row = |why: &str| {
        warn!(path = %db.display(), "{why}: every row is checked against its tag");
        Ok(Some(0))
    };
    if record.len() != RECORD_BYTES || !record.starts_with(MAGIC) {
        return every_row("the record of the last check is not one");
    }
    let (body_bytes, tag) = record.split_at(RECORD_BYTES - 32);
    if mac
        .clone()
        .chain_update(body_bytes)
        .verify_slice(tag)
        .is_err()
    {
        return every_row(
            "the record of the last check fails its tag (written without the operator key, or damaged)",
        );
    }
    let (length, digest) = digest_of(db)?;
    let at = MAGIC.len() + 8 + 32;
    let mut through = [0u8; 8];
    through.copy_from_slice(&body_bytes[at..at + 8]);
    let through = i64::from_le_bytes(through);
    let sweep_from = (through != EVERY_ROW).then_some(through);
    if body(length, &digest, sweep_from) != body_bytes {
        return every_row("keys.db changed since the stop that vouched for it");
    }
    info!(
        path = %db.display(),
        checked_through = through,
        "keys.db is as the last stop left it: its checked rows are not checked again"
    );
    Ok(sweep_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(key: u8) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&[key; 32]).unwrap()
    }

    fn file(dir: &Path, bytes: &[u8]) -> PathBuf {
        let db = dir.join("keys.db");
        std::fs::write(&db, bytes).unwrap();
        db
    }

    #[test]
    fn a_record_vouches_once_for_the_file_it_was_written_for() {
        let dir = tempfile::tempdir().unwrap();
        let db = file(dir.path(), &[7; 5000]);
        for sweep_from in [None, Some(0), Some(42)] {
            write(&db, &mac(1), sweep_from).unwrap();
            assert_eq!(take(&db, &mac(1)).unwrap(), sweep_from);
            assert!(!record_path(&db).exists(), "taken, it is removed");
            assert_eq!(take(&db, &mac(1)).unwrap(), Some(0), "and vouches no more");
        }
    }

    #[test]
    fn a_changed_file_or_record_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = file(dir.path(), &[7; 5000]);
        // A byte of the file, its length, another key.
        write(&db, &mac(1), None).unwrap();
        file(dir.path(), &[[7; 4999].as_slice(), &[8]].concat());
        assert_eq!(take(&db, &mac(1)).unwrap(), Some(0));
        write(&db, &mac(1), None).unwrap();
        file(dir.path(), &[7; 5001]);
        assert_eq!(take(&db, &mac(1)).unwrap(), Some(0));
        write(&db, &mac(1), None).unwrap();
        assert_eq!(take(&db, &mac(2)).unwrap(), Some(0));
        // Each byte of the record (its sweep point moved back to "every row checked", its
        // digest made the new file's, its tag), and a record cut short.
        write(&db, &mac(1), Some(42)).unwrap();
        let record = std::fs::read(record_path(&db)).unwrap();
        for at in 0..record.len() {
            let mut edited = record.clone();
            edited[at] ^= 1;
            std::fs::write(record_path(&db), &edited).unwrap();
            assert_eq!(take(&db, &mac(1)).unwrap(), Some(0), "byte {at}");
        }
        std::fs::write(record_path(&db), &record[..record.len() - 1]).unwrap();
        assert_eq!(take(&db, &mac(1)).unwrap(), Some(0));
        std::fs::write(record_path(&db), &record).unwrap();
        assert_eq!(
            take(&db, &mac(1)).unwrap(),
            Some(42),
            "the record as written"
        );
    }

    /// A link planted where the record goes is not followed, even to a record that would
    /// vouch (a FIFO, a folder and a link planted as the temporary file: `KeyStore`'s
    /// `red_team_s46` tests).
    #[test]
    fn red_team_s46_a_link_to_a_valid_record_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = file(dir.path(), &[7; 5000]);
        let record = record_path(&db);
        write(&db, &mac(1), None).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(&record, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &record).unwrap();
        assert_eq!(take(&db, &mac(1)).unwrap(), Some(0));
        assert!(
            std::fs::symlink_metadata(&record).is_err(),
            "the link is removed"
        );
        std::fs::rename(&elsewhere, &record).unwrap();
        assert_eq!(
            take(&db, &mac(1)).unwrap(),
            None,
            "the record itself vouches"
        );
    }
}
