//! The acknowledged transactions a validator has not yet seen committed: an append-only
//! journal in segment files, `acknowledged/<number>.log` beside `node.db`.
//!
//! A submission is acknowledged only once it is durable here (one `fdatasync` per batch of
//! accepted submissions), and it is resubmitted after a restart until its block commits. Each
//! transaction's bytes are written once: a SQLite table held them in a random-key index and
//! wrote each row three times more (its WAL page, the checkpoint, the delete), the largest
//! share of the accepting validator's writes (BENCHMARKS.md, issue 11, twenty-third session).
//!
//! A removal of a committed transaction writes nothing: a segment file is deleted when none of
//! its transactions is pending any more, and a restart drops again what it finds already
//! committed (as `Runtime::resume_pending` always did for a removal lost in a crash). One
//! withdrawn for good is marked in its frame, so a restart does not resubmit it. A segment
//! holding a straggler (a transaction pending for long) is carried forward into the current
//! segment once too many segments are kept, so the folder stays bounded by the pending
//! transactions.
//!
//! Every frame carries a checksum: a frame torn by a crash (never acknowledged: the sync had
//! not returned) ends its segment's reading. Each start appends to a new segment, so nothing
//! is ever written after a torn frame.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tracing::warn;

use crate::error::NodeError;
use crate::local_store::LocalStore;

/// The folder of the journal, in a validator's folder.
pub const ACKNOWLEDGED_DIR: &str = "acknowledged";

/// The lock file in the folder: held exclusively by the validator while it deletes a segment,
/// shared by a backup while it reads (see [`read_pending`]).
const LOCK_FILE: &str = "lock";

/// The first bytes of every segment: refuses to read a file that is not one.
const MAGIC: &[u8; 16] = b"medchain-ack-v1\n";

/// A segment stops taking appends past this size, and a new one begins.
const SEGMENT_BYTES: u64 = 8 << 20;

/// Segments kept beside the current one before the oldest's pending transactions are carried
/// forward and it is deleted.
const KEPT_SEGMENTS: usize = 8;

/// A frame's fixed part: its state ([`PENDING`] or [`WITHDRAWN`]), body length (u32), accepted
/// time (u64), id, and after the body the checksum (the first 8 bytes of the SHA-256 of
/// everything from the length to the body's end: the state is written again in place).
const HEAD_BYTES: usize = 1 + 4 + 8 + 32;
/// A frame's state: acknowledged, to resubmit after a restart until committed.
const PENDING: u8 = 0;
/// A frame's state: withdrawn for good (a lost race kept as long as it may be): not resubmitted
/// after a restart (red team s48 F4: a removal that writes nothing brought them back).
const WITHDRAWN: u8 = 1;
const CHECK_BYTES: usize = 8;

/// Larger than any transaction a validator accepts: a length above it is a torn frame.
const MAX_BODY_BYTES: usize = 64 << 20;

/// An acknowledged transaction as stored: its id, when it was accepted, its encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub id: [u8; 32],
    pub accepted_ms: u64,
    pub body: Vec<u8>,
}

/// Whether a transaction is on chain (read at [`Acknowledged::open`]).
pub type Committed<'a> = dyn Fn(&[u8; 32]) -> Result<bool, NodeError> + 'a;

/// The journal, open for appending.
pub struct Acknowledged {
    dir: PathBuf,
    /// The segment appended to, created at the first append after a start or a rotation.
    current: Option<Segment>,
    /// The number the next segment takes.
    next_number: u64,
    /// Where each pending transaction's frame is.
    segment_of: HashMap<[u8; 32], Place>,
    /// How many pending transactions each segment holds (the current one included).
    pending_in: BTreeMap<u64, usize>,
    /// [`SEGMENT_BYTES`] but in tests.
    segment_bytes: u64,
    /// [`LOCK_FILE`], open.
    lock: File,
    /// Segments to delete once no backup is reading the folder.
    spent: Vec<u64>,
}

/// A frame's segment and its offset there.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Place {
    segment: u64,
    offset: u64,
}

/// A frame as read: where it is, whether it was withdrawn, what it holds.
struct Frame {
    offset: u64,
    withdrawn: bool,
    row: PendingRow,
}

struct Segment {
    number: u64,
    file: File,
    bytes: u64,
}

impl Acknowledged {
    /// Opens (or creates) the journal in `dir` and returns what it holds that is not
    /// `committed` (the removals a crash, or a stop, left unwritten), oldest first; segments
    /// holding nothing else are deleted. Only what is still pending is kept in memory.
    pub fn open(dir: &Path, committed: &Committed) -> Result<(Self, Vec<PendingRow>), NodeError> {
        ledger::files::private_dir(dir)?;
        let mut journal = Self {
            dir: dir.to_path_buf(),
            current: None,
            next_number: 1,
            segment_of: HashMap::new(),
            pending_in: BTreeMap::new(),
            segment_bytes: SEGMENT_BYTES,
            lock: open_lock(dir)?,
            spent: Vec::new(),
        };
        // Only what is not on chain is kept while the segments are read, one at a time.
        let mut numbers = Vec::new();
        let mut kept = Vec::new();
        let mut withdrawn = HashSet::new();
        for number in segment_numbers(dir)? {
            journal.next_number = number.saturating_add(1);
            let Some(frames) = read_segment(&segment_path(dir, number))? else {
                continue;
            };
            numbers.push(number);
            for frame in frames {
                if frame.withdrawn {
                    withdrawn.insert(frame.row.id);
                } else if !committed(&frame.row.id)? {
                    kept.push((number, frame));
                }
            }
        }
        let mut rows = Vec::new();
        for (number, frame) in kept {
            // Withdrawn in any copy stays withdrawn, and the first copy is the one kept (one
            // carried forward by a run that crashed before deleting its old segment has two).
            if withdrawn.contains(&frame.row.id) || journal.segment_of.contains_key(&frame.row.id) {
                continue;
            }
            let place = Place {
                segment: number,
                offset: frame.offset,
            };
            journal.segment_of.insert(frame.row.id, place);
            *journal.pending_in.entry(number).or_default() += 1;
            rows.push(frame.row);
        }
        for number in numbers {
            if !journal.pending_in.contains_key(&number) {
                journal.delete_segment(number);
            }
        }
        // The folder's own entry: durable before the first acknowledgement (red team s48: the
        // rows taken over from node.db leave its table next).
        ledger::files::sync_parent(dir)?;
        sort_oldest_first(&mut rows);
        Ok((journal, rows))
    }

    /// Durably appends the transactions not already pending, in one write and one sync.
    pub fn append<'a>(
        &mut self,
        transactions: impl IntoIterator<Item = (&'a [u8; 32], u64, &'a [u8])>,
    ) -> Result<(), NodeError> {
        let mut frames = Vec::new();
        let mut written = Vec::new();
        let mut ids = HashSet::new();
        for (id, accepted_ms, body) in transactions {
            if self.segment_of.contains_key(id) || !ids.insert(*id) {
                continue;
            }
            written.push((*id, frames.len() as u64));
            encode_frame(&mut frames, id, accepted_ms, body)?;
        }
        if written.is_empty() {
            return Ok(());
        }
        self.write_synced(&frames, written)?;
        self.rotate_if_full()
    }

    /// Forgets committed transactions. Writes nothing but the deletion of segments left with
    /// nothing pending: a start finds them committed.
    pub fn remove<'a>(&mut self, ids: impl IntoIterator<Item = &'a [u8; 32]>) {
        for id in ids {
            self.forget(id);
        }
    }

    /// Forgets transactions withdrawn for good, each marked so in its frame (one byte written
    /// in place, not synced: as the table's delete was, a crash of the machine may bring one
    /// back for another round of withdrawal).
    pub fn withdraw<'a>(&mut self, ids: impl IntoIterator<Item = &'a [u8; 32]>) {
        for id in ids {
            if let Some(place) = self.segment_of.get(id).copied() {
                if let Err(error) = self.mark_withdrawn(place) {
                    warn!(%error, "could not mark a withdrawn transaction in the journal");
                }
                self.forget(id);
            }
        }
    }

    fn mark_withdrawn(&mut self, place: Place) -> std::io::Result<()> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        match &self.current {
            Some(segment) if segment.number == place.segment => {
                segment.file.write_all_at(&[WITHDRAWN], place.offset)
            }
            _ => std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(segment_path(&self.dir, place.segment))?
                .write_all_at(&[WITHDRAWN], place.offset),
        }
    }

    /// Drops `id` from the pending; deletes its segment if that leaves it with nothing pending
    /// and it is not the one appended to.
    fn forget(&mut self, id: &[u8; 32]) {
        let Some(place) = self.segment_of.remove(id) else {
            return;
        };
        let Some(held) = self.pending_in.get_mut(&place.segment) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            self.pending_in.remove(&place.segment);
            if self.current.as_ref().map(|segment| segment.number) != Some(place.segment) {
                self.delete_segment(place.segment);
            }
        }
    }

    /// How many transactions are pending.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.segment_of.len()
    }

    /// Writes `frames` at the end of the current segment (created first if there is none),
    /// syncs, and records the transactions `written` (each with its frame's offset in
    /// `frames`) as pending there. After a failed write the segment is left: what follows goes
    /// to a new one, never after a partial frame.
    fn write_synced(
        &mut self,
        frames: &[u8],
        written: Vec<([u8; 32], u64)>,
    ) -> Result<(), NodeError> {
        if self.current.is_none() {
            self.current = Some(self.new_segment()?);
        }
        let Some(segment) = self.current.as_mut() else {
            return Err(NodeError::Corrupt("no current segment".into()));
        };
        let result = segment
            .file
            .write_all(frames)
            .and_then(|()| segment.file.sync_data());
        match result {
            Ok(()) => {
                let base = segment.bytes;
                segment.bytes += frames.len() as u64;
                let number = segment.number;
                *self.pending_in.entry(number).or_default() += written.len();
                for (id, offset) in written {
                    let place = Place {
                        segment: number,
                        offset: base + offset,
                    };
                    self.segment_of.insert(id, place);
                }
                Ok(())
            }
            Err(error) => {
                self.leave_current();
                Err(error.into())
            }
        }
    }

    fn new_segment(&mut self) -> Result<Segment, NodeError> {
        let number = self.next_number;
        self.next_number += 1;
        let path = segment_path(&self.dir, number);
        let mut file = ledger::files::create_private_file(&path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        // The segment's name must survive a crash with the frames synced into it.
        ledger::files::sync_parent(&path)?;
        Ok(Segment {
            number,
            file,
            bytes: MAGIC.len() as u64,
        })
    }

    /// Stops appending to the current segment; deletes it if nothing in it is pending.
    fn leave_current(&mut self) {
        if let Some(segment) = self.current.take()
            && !self.pending_in.contains_key(&segment.number)
        {
            self.delete_segment(segment.number);
        }
    }

    /// Deletes segment `number`, and those left before, unless a backup is reading the folder
    /// (it holds the lock shared): then they are deleted at a later call. A backup's read
    /// thus sees every segment that existed when it listed the folder, and a transaction
    /// carried forward is in the segment it left until the read is over (red team s48 F1: a
    /// listing races with a carry that creates one segment and deletes another).
    fn delete_segment(&mut self, number: u64) {
        self.spent.push(number);
        if self.lock.try_lock().is_err() {
            return;
        }
        for number in self.spent.drain(..) {
            remove_segment(&self.dir, number);
        }
        if let Err(error) = self.lock.unlock() {
            warn!(%error, "could not release the journal's lock");
        }
    }

    /// Begins a new segment once the current one is full, and carries stragglers forward when
    /// too many segments are kept.
    fn rotate_if_full(&mut self) -> Result<(), NodeError> {
        if self
            .current
            .as_ref()
            .is_some_and(|segment| segment.bytes >= self.segment_bytes)
        {
            self.leave_current();
        }
        let current = self.current.as_ref().map(|segment| segment.number);
        let older = self
            .pending_in
            .keys()
            .filter(|number| Some(**number) != current)
            .count();
        if older > KEPT_SEGMENTS
            && let Some(&oldest) = self.pending_in.keys().next()
        {
            self.carry_forward(oldest)?;
        }
        Ok(())
    }

    /// Appends the pending transactions of segment `number` to the current segment (synced),
    /// then deletes it. A crash between the two leaves both copies; the next open keeps one.
    fn carry_forward(&mut self, number: u64) -> Result<(), NodeError> {
        let mut frames = Vec::new();
        let mut written = Vec::new();
        for frame in read_segment(&segment_path(&self.dir, number))?
            .into_iter()
            .flatten()
        {
            let place = Place {
                segment: number,
                offset: frame.offset,
            };
            if self.segment_of.get(&frame.row.id) == Some(&place) {
                written.push((frame.row.id, frames.len() as u64));
                let row = &frame.row;
                encode_frame(&mut frames, &row.id, row.accepted_ms, &row.body)?;
            }
        }
        self.pending_in.remove(&number);
        // Any left mapped there were not in the file (damaged): forgotten, not kept as pending.
        self.segment_of.retain(|_, at| at.segment != number);
        if !written.is_empty() {
            self.write_synced(&frames, written)?;
        }
        self.delete_segment(number);
        Ok(())
    }
}

impl Drop for Acknowledged {
    /// A clean stop leaves no segment that holds nothing pending.
    fn drop(&mut self) {
        self.leave_current();
    }
}

/// Opens the journal in `dir` (see [`Acknowledged::open`]) and takes over what `local`'s
/// `pending` table holds: the rows of an older medchain, or of a backup's copy of node.db
/// ([`copy_into_backup`]). Appended (synced) before they leave the table, so a crash between
/// leaves two copies, never none.
pub(crate) fn open_taking_over(
    dir: &Path,
    local: &mut LocalStore,
    committed: &Committed,
) -> Result<(Acknowledged, Vec<PendingRow>), NodeError> {
    let (mut journal, mut rows) = Acknowledged::open(dir, committed)?;
    let legacy = local.pending()?;
    if !legacy.is_empty() {
        journal.append(
            legacy
                .iter()
                .map(|row| (&row.id, row.accepted_ms, &row.body[..])),
        )?;
        local.clear_pending()?;
        let held: HashSet<[u8; 32]> = rows.iter().map(|row| row.id).collect();
        rows.extend(legacy.into_iter().filter(|row| !held.contains(&row.id)));
        sort_oldest_first(&mut rows);
    }
    Ok((journal, rows))
}

/// Copies into `copy`, a backup's copy of a validator's node.db, what that validator's
/// journal holds (read as [`read_pending`] does): a restore takes them over at its start.
pub fn copy_into_backup(validator_dir: &Path, copy: &Path) -> Result<usize, NodeError> {
    let rows = read_pending(&validator_dir.join(ACKNOWLEDGED_DIR))?;
    LocalStore::open(copy)?.add_pending(
        rows.iter()
            .map(|row| (&row.id, row.accepted_ms, &row.body[..])),
    )?;
    Ok(rows.len())
}

/// What the journal in `dir` holds, read without changing anything (a running validator may
/// be appending and deleting): for a backup's copy. Oldest first, each transaction once.
pub fn read_pending(dir: &Path) -> Result<Vec<PendingRow>, NodeError> {
    let lock = match File::open(dir.join(LOCK_FILE)) {
        Ok(lock) => lock,
        // No validator ever opened this journal.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    // While it is held, the validator deletes no segment (it appends and creates new ones).
    lock.lock_shared()?;
    let mut seen = HashSet::new();
    let mut withdrawn = HashSet::new();
    let mut rows = Vec::new();
    for number in segment_numbers(dir)? {
        let read = match read_segment(&segment_path(dir, number)) {
            Ok(read) => read,
            // Deleted since it was listed, by a medchain that did not take the lock.
            Err(NodeError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        for frame in read.into_iter().flatten() {
            if frame.withdrawn {
                withdrawn.insert(frame.row.id);
            } else if seen.insert(frame.row.id) {
                rows.push(frame.row);
            }
        }
    }
    lock.unlock()?;
    rows.retain(|row| !withdrawn.contains(&row.id));
    sort_oldest_first(&mut rows);
    Ok(rows)
}

/// The journal's lock file, created (private) if missing, never through a link.
fn open_lock(dir: &Path) -> Result<File, NodeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(ledger::files::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)?;
    ledger::files::set_mode(&path, ledger::files::PRIVATE_FILE_MODE)?;
    Ok(lock)
}

fn sort_oldest_first(rows: &mut [PendingRow]) {
    rows.sort_by_key(|row| (row.accepted_ms, row.id));
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.log"))
}

/// The segments in `dir`, in order; other files are left alone.
fn segment_numbers(dir: &Path) -> Result<Vec<u64>, NodeError> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".log")) else {
            continue;
        };
        // `{:012}` is a least width: a number past 12 digits is named with more.
        if stem.len() >= 12
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(number) = stem.parse()
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn remove_segment(dir: &Path, number: u64) {
    let path = segment_path(dir, number);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            // Harmless: the next start reads it and drops what is committed.
            warn!(path = %path.display(), %error, "could not delete a spent segment");
        }
        _ => {}
    }
}

fn encode_frame(
    out: &mut Vec<u8>,
    id: &[u8; 32],
    accepted_ms: u64,
    body: &[u8],
) -> Result<(), NodeError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(NodeError::Config(format!(
            "a transaction of {} bytes is larger than the journal takes ({MAX_BODY_BYTES})",
            body.len()
        )));
    }
    out.push(PENDING);
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&accepted_ms.to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(body);
    let check = Sha256::digest(&out[start..]);
    out.extend_from_slice(&check[..CHECK_BYTES]);
    Ok(())
}

/// The frames of one segment up to the first that is torn (or the end); `None` if the file is
/// not a segment this journal wrote (a link, a FIFO, a folder or another file planted by a
/// writer of the folder: never followed, waited on or deleted).
fn read_segment(path: &Path) -> Result<Option<Vec<Frame>>, NodeError> {
    let (mut file, len) = match ledger::files::open_regular(path) {
        Ok(opened) => opened,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(error.into()),
        Err(error) => {
            warn!(path = %path.display(), %error, "not a journal segment: ignored");
            return Ok(None);
        }
    };
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    let Some(mut rest) = bytes.strip_prefix(&MAGIC[..]) else {
        warn!(path = %path.display(), "not a journal segment: ignored");
        return Ok(None);
    };
    let mut frames = Vec::new();
    while let Some((withdrawn, row, after)) = decode_frame(rest) {
        let offset = (bytes.len() - rest.len()) as u64;
        frames.push(Frame {
            offset,
            withdrawn,
            row,
        });
        rest = after;
    }
    if !rest.is_empty() {
        warn!(
            path = %path.display(),
            bytes = rest.len(),
            "a torn frame ends the segment (a crash during a write never acknowledged)"
        );
    }
    Ok(Some(frames))
}

/// The frame at the start of `bytes`: whether it was withdrawn, its row, what follows it.
fn decode_frame(bytes: &[u8]) -> Option<(bool, PendingRow, &[u8])> {
    let head = bytes.get(..HEAD_BYTES)?;
    let withdrawn = match head[0] {
        PENDING => false,
        WITHDRAWN => true,
        _ => return None,
    };
    let len = u32::from_le_bytes(head[1..5].try_into().ok()?) as usize;
    if len > MAX_BODY_BYTES {
        return None;
    }
    let end = HEAD_BYTES + len;
    let check = bytes.get(end..end + CHECK_BYTES)?;
    if Sha256::digest(&bytes[1..end])[..CHECK_BYTES] != *check {
        return None;
    }
    let row = PendingRow {
        accepted_ms: u64::from_le_bytes(head[5..13].try_into().ok()?),
        id: head[13..HEAD_BYTES].try_into().ok()?,
        body: bytes[HEAD_BYTES..end].to_vec(),
    };
    Some((withdrawn, row, &bytes[end + CHECK_BYTES..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal in `dir`, with nothing on chain.
    pub(super) fn open(dir: &Path) -> Result<(Acknowledged, Vec<PendingRow>), NodeError> {
        Acknowledged::open(dir, &|_| Ok(false))
    }

    pub(super) fn row(id: u8, accepted_ms: u64) -> PendingRow {
        PendingRow {
            id: [id; 32],
            accepted_ms,
            body: vec![id; 100 + id as usize],
        }
    }

    pub(super) fn append(journal: &mut Acknowledged, rows: &[PendingRow]) {
        journal
            .append(rows.iter().map(|r| (&r.id, r.accepted_ms, &r.body[..])))
            .unwrap();
    }

    pub(super) fn ids(rows: &[PendingRow]) -> Vec<u8> {
        rows.iter().map(|r| r.id[0]).collect()
    }

    fn segments(dir: &Path) -> Vec<u64> {
        segment_numbers(dir).unwrap()
    }

    #[test]
    fn what_is_appended_is_read_back_oldest_first_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, rows) = open(dir.path()).unwrap();
        assert!(rows.is_empty());
        assert!(
            segments(dir.path()).is_empty(),
            "an open alone writes nothing"
        );
        append(&mut journal, &[row(3, 30), row(1, 10)]);
        // Already pending (a client's retry) or twice in one batch: written once.
        append(&mut journal, &[row(1, 99), row(2, 20), row(2, 20)]);
        assert_eq!(journal.len(), 3);
        drop(journal);
        let (journal, rows) = open(dir.path()).unwrap();
        assert_eq!(rows, vec![row(1, 10), row(2, 20), row(3, 30)]);
        assert_eq!(journal.len(), 3);
        assert_eq!(read_pending(dir.path()).unwrap(), rows);
    }

    #[test]
    fn a_segment_with_nothing_pending_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        journal.segment_bytes = 1;
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        append(&mut journal, &[row(3, 3)]);
        assert_eq!(segments(dir.path()), vec![1, 2]);
        journal.remove([&[1; 32], &[7; 32]]);
        assert_eq!(
            segments(dir.path()),
            vec![1, 2],
            "row 2 is pending in segment 1"
        );
        journal.remove([&[2; 32]]);
        assert_eq!(segments(dir.path()), vec![2]);
        journal.remove([&[3; 32]]);
        assert!(segments(dir.path()).is_empty());
        // A clean stop deletes the current segment once nothing in it is pending.
        journal.segment_bytes = SEGMENT_BYTES;
        append(&mut journal, &[row(4, 4)]);
        journal.remove([&[4; 32]]);
        assert_eq!(segments(dir.path()), vec![3]);
        drop(journal);
        assert!(segments(dir.path()).is_empty());
        let (_, rows) = open(dir.path()).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn a_removal_is_forgotten_by_a_crash_and_the_next_start_checks_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        journal.remove([&[1; 32]]);
        // A crash: nothing runs on the way out.
        std::mem::forget(journal);
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![1, 2]);
    }

    #[test]
    fn what_is_committed_is_neither_kept_nor_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        journal.segment_bytes = 1;
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        append(&mut journal, &[row(3, 3)]);
        std::mem::forget(journal);
        let on_chain = |id: &[u8; 32]| Ok(id[0] != 2);
        let (journal, rows) = Acknowledged::open(dir.path(), &on_chain).unwrap();
        assert_eq!(ids(&rows), vec![2]);
        assert_eq!(journal.len(), 1);
        assert_eq!(
            segments(dir.path()),
            vec![1],
            "a segment of committed ones is deleted"
        );
    }

    #[test]
    fn a_torn_frame_ends_its_segment_and_the_next_start_appends_to_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        std::mem::forget(journal);
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        for cut in [1, 9, 60] {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len - cut).unwrap();
            let (_, rows) = open(dir.path()).unwrap();
            assert_eq!(ids(&rows), vec![1], "cut {cut}");
        }
        // A bit flipped in the first frame's body ends the segment before it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + HEAD_BYTES + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (mut journal, rows) = open(dir.path()).unwrap();
        assert!(rows.is_empty());
        assert!(
            segments(dir.path()).is_empty(),
            "a segment left with nothing is deleted"
        );
        bytes[MAGIC.len() + HEAD_BYTES + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        append(&mut journal, &[row(3, 3)]);
        drop(journal);
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![1, 3]);
    }

    #[test]
    fn stragglers_are_carried_forward_and_the_folder_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        journal.segment_bytes = 1;
        // Each segment keeps one transaction pending for long (ids 101..=130); the others
        // commit at once.
        for id in 1..=30u8 {
            append(
                &mut journal,
                &[row(id, id as u64), row(100 + id, id as u64)],
            );
            journal.remove([&[id; 32]]);
            assert!(segments(dir.path()).len() <= KEPT_SEGMENTS + 1, "{id}");
        }
        assert!(
            !segments(dir.path()).contains(&1),
            "the oldest were carried"
        );
        std::mem::forget(journal);
        let (_, rows) = open(dir.path()).unwrap();
        // With the committed ones of segments still kept (a removal writes nothing: the start
        // drops them as committed).
        let stragglers: Vec<PendingRow> = rows.into_iter().filter(|r| r.id[0] > 100).collect();
        assert_eq!(ids(&stragglers), (101..=130).collect::<Vec<u8>>());
        assert_eq!(
            stragglers[0],
            row(101, 1),
            "carried with its time and bytes"
        );
    }

    #[test]
    fn a_withdrawn_transaction_is_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        journal.segment_bytes = 1;
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        append(&mut journal, &[row(3, 3), row(4, 4)]);
        // Segment 1 is no longer appended to, segment 2 was the last appended to.
        journal.withdraw([&[1; 32], &[3; 32]]);
        assert_eq!(segments(dir.path()), vec![1, 2]);
        assert_eq!(ids(&read_pending(dir.path()).unwrap()), vec![2, 4]);
        // A crash: nothing runs on the way out, and the marks were not synced (the page cache
        // holds them, as it would after a crash of the process alone).
        std::mem::forget(journal);
        let (mut journal, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![2, 4]);
        // Marked in the segment appended to as well.
        append(&mut journal, &[row(5, 5), row(6, 6)]);
        journal.withdraw([&[5; 32]]);
        journal.remove([&[2; 32], &[4; 32]]);
        std::mem::forget(journal);
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![6]);
    }

    #[test]
    fn a_crash_while_carrying_forward_leaves_one_copy_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        std::mem::forget(journal);
        // The copy was appended to a later segment, the old one not yet deleted.
        std::fs::copy(segment_path(dir.path(), 1), segment_path(dir.path(), 5)).unwrap();
        let (mut journal, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![1, 2]);
        assert_eq!(segments(dir.path()), vec![1], "the copy held nothing new");
        assert_eq!(ids(&read_pending(dir.path()).unwrap()), vec![1, 2]);
        append(&mut journal, &[row(3, 3)]);
        assert_eq!(segments(dir.path()), vec![1, 6]);
    }

    #[test]
    fn other_files_are_left_alone_and_a_missing_folder_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_pending(&dir.path().join("none")).unwrap().is_empty());
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(segment_path(dir.path(), 3), b"not a segment").unwrap();
        // Planted by a writer of the folder (red team s48 F3): a link to a segment elsewhere
        // is not followed, a FIFO not waited on, a folder not read.
        let elsewhere = tempfile::tempdir().unwrap();
        let (mut other, _) = open(elsewhere.path()).unwrap();
        append(&mut other, &[row(9, 9)]);
        std::os::unix::fs::symlink(
            segment_path(elsewhere.path(), 1),
            segment_path(dir.path(), 4),
        )
        .unwrap();
        let mkfifo = std::process::Command::new("mkfifo")
            .arg(segment_path(dir.path(), 5))
            .status()
            .unwrap();
        assert!(mkfifo.success());
        std::fs::create_dir(segment_path(dir.path(), 6)).unwrap();
        let (mut journal, rows) = open(dir.path()).unwrap();
        assert!(rows.is_empty());
        append(&mut journal, &[row(1, 1)]);
        assert_eq!(
            segments(dir.path()),
            vec![3, 4, 5, 6, 7],
            "numbers go on after any found"
        );
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(ids(&read_pending(dir.path()).unwrap()), vec![1]);
    }

    #[test]
    fn a_segment_numbered_past_twelve_digits_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // Red team s48 F2: a planted `999999999999.log` made every later segment's name longer
        // than the reader took, so nothing acknowledged after it was resumed.
        std::fs::write(segment_path(dir.path(), 999_999_999_999), MAGIC).unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1)]);
        std::mem::forget(journal);
        assert_eq!(segments(dir.path()), vec![1_000_000_000_000]);
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![1]);
    }

    #[test]
    fn the_rows_node_db_holds_are_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join(ACKNOWLEDGED_DIR);
        let mut local = LocalStore::open(&dir.path().join("node.db")).unwrap();
        let (mut journal, _) = open(&journal_dir).unwrap();
        append(&mut journal, &[row(2, 20)]);
        drop(journal);
        local
            .add_pending([
                (&[1; 32], 10, &row(1, 10).body[..]),
                (&[2; 32], 5, &b"x"[..]),
            ])
            .unwrap();
        let (_, rows) = open_taking_over(&journal_dir, &mut local, &|_| Ok(false)).unwrap();
        assert_eq!(rows, vec![row(1, 10), row(2, 20)]);
        assert!(local.pending().unwrap().is_empty());
        let (_, rows) = open_taking_over(&journal_dir, &mut local, &|_| Ok(false)).unwrap();
        assert_eq!(ids(&rows), vec![1, 2]);
    }

    #[test]
    fn a_backup_copy_of_node_db_holds_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(&dir.path().join(ACKNOWLEDGED_DIR)).unwrap();
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        let copy = dir.path().join("copy.db");
        assert_eq!(copy_into_backup(dir.path(), &copy).unwrap(), 2);
        assert_eq!(
            LocalStore::open(&copy).unwrap().pending().unwrap(),
            vec![row(1, 1), row(2, 2)]
        );
    }
}

/// Red team s48: attacks on the journal (commit 341947a5). Tests named `s48_fN_...` that fail
/// on the current code show a break; see /work/helpers/rt-s48.md.
#[cfg(test)]
mod red_team_s48 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::tests::{append, ids, open, row};
    use super::*;

    /// F1 (fixed): `medchain backup` reads the journal of a running validator with
    /// `read_pending`: it lists the segments, then reads each, and takes a segment deleted since
    /// it was listed for "all it held is committed". But a segment is also deleted after a
    /// carry forward, whose copy goes to a segment begun after the listing (a rotation leaves
    /// the full current segment, so the carry always writes to a new number). The straggler,
    /// acknowledged long before the backup began, is then in no segment the backup reads and
    /// not on chain: a restore from that backup never resubmits it.
    #[test]
    fn s48_f1_a_backup_racing_a_carry_forward_keeps_every_straggler() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let (mut journal, _) = open(&path).unwrap();
        journal.segment_bytes = 1;
        // Nine stragglers, each in its own segment, pending for the whole test.
        let straggler = |id: u8| PendingRow {
            id: [id; 32],
            accepted_ms: id as u64,
            body: vec![id; 64 << 10],
        };
        // Other files in the folder (left alone) make a listing take a while: a carry forward
        // completes during it more often. The race does not need them, only the test's speed.
        for n in 0..2_000 {
            std::fs::write(path.join(format!("other-{n}")), b"").unwrap();
        }
        let stragglers: Vec<[u8; 32]> = (200..209u8).map(|id| [id; 32]).collect();
        for id in 200..209u8 {
            append(&mut journal, &[straggler(id)]);
        }
        assert_eq!(
            ids(&read_pending(&path).unwrap()),
            (200..209).collect::<Vec<u8>>()
        );
        let stop = Arc::new(AtomicBool::new(false));
        // The validator: submissions that commit at once; each rotation carries the oldest
        // straggler forward.
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut k: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut id = [1u8; 32];
                    id[..4].copy_from_slice(&k.to_le_bytes());
                    journal
                        .append([(&id, 1_000 + k as u64, &b"commits at once"[..])])
                        .unwrap();
                    journal.remove([&id]);
                    k += 1;
                }
                journal
            })
        };
        // The backup, read as `copy_into_backup` reads it, again and again.
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut reads = 0;
        let mut missed = None;
        // A backup that refuses (an error: try again) is no loss; one that answers must hold
        // every straggler.
        let mut refused = 0;
        while Instant::now() < deadline && missed.is_none() {
            let Ok(read) = read_pending(&path) else {
                refused += 1;
                continue;
            };
            let held: HashSet<[u8; 32]> = read.into_iter().map(|row| row.id).collect();
            reads += 1;
            missed = stragglers
                .iter()
                .find(|id| !held.contains(*id))
                .map(|id| id[0]);
        }
        stop.store(true, Ordering::Relaxed);
        let journal = writer.join().unwrap();
        assert_eq!(journal.len(), 9, "the stragglers stay pending");
        assert!(reads > 0, "every read refused ({refused})");
        assert_eq!(
            missed, None,
            "read {reads} times: a backup's copy lacks straggler {missed:?}, acknowledged and \
             never committed"
        );
    }

    /// F2 (fixed): segment names are `{:012}`, a minimum width, but `segment_numbers` takes only
    /// 12 digits. One file named `999999999999.log` (any content: it is deleted as "not a
    /// segment", but its number counts) makes every later segment 13 digits long, which no
    /// start and no backup reads: every acknowledgement from then on is lost at the next crash.
    #[test]
    fn s48_f2_a_segment_at_the_name_width_limit_hides_every_later_segment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 999_999_999_999), b"stray").unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1)]);
        // Acknowledged (durable, synced); then a crash.
        std::mem::forget(journal);
        assert_eq!(
            ids(&read_pending(dir.path()).unwrap()),
            vec![1],
            "a backup's copy lacks an acknowledged transaction"
        );
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(
            ids(&rows),
            vec![1],
            "the next start does not resubmit an acknowledged transaction"
        );
    }

    /// F3a (fixed): a FIFO named as a segment (a local writer's, or a mistaken `mkfifo`) hangs
    /// the start for ever: `std::fs::read` blocks on it.
    #[test]
    fn s48_f3a_a_fifo_named_as_a_segment_does_not_hang_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = segment_path(dir.path(), 1);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let path = dir.path().to_path_buf();
        let (done, opened) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(open(&path).map(|_| ()).is_ok());
        });
        let answer = opened.recv_timeout(Duration::from_secs(3));
        if answer.is_err() {
            // Unblock the reader (EOF) so that the thread ends.
            drop(std::fs::OpenOptions::new().write(true).open(&fifo));
        }
        assert!(answer.is_ok(), "Acknowledged::open hangs on a FIFO");
    }

    /// F3b (fixed): a directory named as a segment makes every start (and every backup) fail,
    /// although files that are not segments are "left alone".
    #[test]
    fn s48_f3b_a_directory_named_as_a_segment_does_not_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1)]);
        drop(journal);
        std::fs::create_dir(segment_path(dir.path(), 7)).unwrap();
        let read = read_pending(dir.path()).map(|rows| ids(&rows));
        let opened = open(dir.path()).map(|(_, rows)| ids(&rows));
        assert!(
            matches!(opened, Ok(ref rows) if rows == &vec![1]),
            "start: {opened:?}"
        );
        assert!(
            matches!(read, Ok(ref rows) if rows == &vec![1]),
            "backup: {read:?}"
        );
    }

    /// F4 (fixed): `remove` "forgets transactions that are committed (or withdrawn for good)",
    /// and writes nothing. A start drops again what it finds committed, but nothing tells it
    /// which were withdrawn for good (`Runtime::withdraw_refused`: a lost race kept
    /// `WITHDRAWN_KEPT_RESENDS` resend intervals, the bound on what a hostile doctor's losers
    /// cost): while any other transaction of its segment is pending, every start, even after a
    /// clean stop, reads it back and hands it to the replica again as acknowledged. The old
    /// `pending` table deleted the row (durable at node.db's next synced commit, and through a
    /// SIGKILL at once).
    #[test]
    fn s48_f4_a_transaction_withdrawn_for_good_stays_forgotten_after_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        // 1 lost its race; 2, accepted in the same batch, waits for a block.
        append(&mut journal, &[row(1, 1), row(2, 2)]);
        // What `withdraw_refused` calls since the fix (it called `remove`).
        journal.withdraw([&[1; 32]]);
        drop(journal);
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(
            ids(&rows),
            vec![2],
            "a transaction withdrawn for good is resumed again by the next start"
        );
    }

    /// Held: a write that fails (here ENOSPC, `/dev/full` in place of the segment's file) maps
    /// no id, leaves the segment, and the client's retry of the same transaction is written
    /// again (not skipped as "already pending") to a new segment, read by the next start.
    #[test]
    fn s48_held_a_failed_write_maps_nothing_and_the_retry_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        append(&mut journal, &[row(1, 1)]);
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        journal.current.as_mut().unwrap().file = full;
        let failed = journal.append([(&[2; 32], 2, &row(2, 2).body[..])]);
        assert!(failed.is_err());
        assert_eq!(journal.len(), 1, "nothing mapped for the failed write");
        assert!(journal.current.is_none(), "the segment is left");
        append(&mut journal, &[row(2, 2)]);
        assert_eq!(journal.len(), 2);
        std::mem::forget(journal);
        let (_, rows) = open(dir.path()).unwrap();
        assert_eq!(ids(&rows), vec![1, 2]);
        assert_eq!(segment_numbers(dir.path()).unwrap(), vec![1, 2]);
    }

    /// Held: stragglers carried forward are counted in their new segment: removing them deletes
    /// every segment, and a crash right after the carry (both copies) still reads each once.
    #[test]
    fn s48_held_carried_stragglers_are_counted_where_they_went() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        journal.segment_bytes = 1;
        for id in 1..=20u8 {
            append(
                &mut journal,
                &[row(id, id as u64), row(100 + id, id as u64)],
            );
            journal.remove([&[id; 32]]);
        }
        assert_eq!(journal.len(), 20);
        let counted: usize = journal.pending_in.values().sum();
        assert_eq!(counted, 20, "{:?}", journal.pending_in);
        for number in journal.pending_in.keys() {
            assert!(segment_path(dir.path(), *number).exists());
        }
        let stragglers: Vec<[u8; 32]> = (101..=120u8).map(|id| [id; 32]).collect();
        journal.remove(stragglers.iter());
        assert_eq!(journal.len(), 0);
        assert!(journal.pending_in.is_empty());
        drop(journal);
        assert!(segment_numbers(dir.path()).unwrap().is_empty());
    }

    /// F5 (fixed): node.db's schema version is what an older medchain checks to refuse a store
    /// it does not understand ("upgrade medchain"). The acknowledged transactions left node.db
    /// for `acknowledged/` without a new version: a medchain from before 341947a5 (node.db schema
    /// 6, rolled back to by an operator) opens this node.db, finds the `pending` table empty,
    /// never reads the journal, and resubmits none of what was acknowledged.
    #[test]
    fn s48_f5_an_older_medchain_refuses_a_node_db_whose_acknowledged_are_in_the_journal() {
        /// The last node.db schema a medchain without the journal knows (341947a5^).
        const BEFORE_THE_JOURNAL: i64 = 6;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("node.db");
        let mut local = LocalStore::open(&db).unwrap();
        let (mut journal, _) =
            open_taking_over(&dir.path().join(ACKNOWLEDGED_DIR), &mut local, &|_| {
                Ok(false)
            })
            .unwrap();
        append(&mut journal, &[row(1, 1)]);
        drop(journal);
        drop(local);
        let version: i64 = rusqlite::Connection::open(&db)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert!(
            version > BEFORE_THE_JOURNAL,
            "node.db is at schema {version}: an older medchain opens it and loses the journal's \
             acknowledged transactions"
        );
    }

    /// A start after a clean stop when each of the nine kept segments holds one straggler
    /// among 8 MiB of committed transactions (a removal writes nothing): the red team's
    /// measurement (65,536 rows read back, about 65 MiB held, for 9 pending). Since, the open
    /// drops what the chain holds as it reads: only the stragglers are kept and handed on.
    #[test]
    fn s48_info_a_start_after_a_clean_stop_keeps_only_the_stragglers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path()).unwrap();
        let body = vec![7u8; 1000];
        let mut n: u32 = 0;
        let mut stragglers = HashSet::new();
        // 9 segments' worth (about 31 batches of 256 each), one straggler in every 31st batch.
        for batch_number in 0..(KEPT_SEGMENTS as u32 + 1) * 31 {
            let mut batch = Vec::new();
            for _ in 0..256 {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&n.to_le_bytes());
                batch.push(id);
                n += 1;
            }
            journal
                .append(batch.iter().map(|id| (id, 1, &body[..])))
                .unwrap();
            let committed = if batch_number % 31 == 0 {
                stragglers.insert(batch[0]);
                &batch[1..]
            } else {
                &batch[..]
            };
            journal.remove(committed.iter());
        }
        assert_eq!(journal.len(), stragglers.len());
        drop(journal);
        let on_chain = |id: &[u8; 32]| Ok(!stragglers.contains(id));
        let (journal, rows) = Acknowledged::open(dir.path(), &on_chain).unwrap();
        let read: HashSet<[u8; 32]> = rows.iter().map(|row| row.id).collect();
        assert_eq!(read, stragglers, "only the stragglers are handed on");
        assert_eq!(journal.len(), stragglers.len());
    }
}
