//! How a validator knows that it may have voted before (issue 8, finding 2).
//!
//! A replica whose protocol records (node.db) were deleted or restored from an older backup may
//! have sent prepares, commits or view-changes it no longer remembers; it must start
//! *recovering* ([`pbft::Restored::recovering`], the pbft crate docs "Recovering from lost
//! state"). A deleted node.db looks exactly like a first start, so the knowledge lives beside
//! the key, in the *incarnation marker* `DIR/<name>/node.incarnation`:
//!
//! - `medchain init --validators` (and `testnet`, and the embedded `serve` when it creates its
//!   network)
//!   writes it for the new genesis with incarnation 0: "never started". Only a fresh genesis
//!   (`init --force`) writes it again.
//! - Every start reads it and node.db's own copy of the counter, then writes the next
//!   incarnation to the marker (fsync of the file and its folder) and to node.db (one SQLite
//!   transaction), before the validator sends anything.
//! - The start is recovering unless node.db holds exactly the marker's incarnation, or the
//!   marker says "never started" and node.db holds none. A deleted node.db (none, after a
//!   start), a node.db from an older backup (a lower counter), a missing or unreadable marker,
//!   or a marker of another genesis all start recovering.
//!
//! A crash between the two writes makes the next start recover needlessly (safe, it only costs
//! the cluster that validator for a while). What this cannot see is the marker restored from
//! the same backup as node.db: back up chain.db and node.db, never the marker.
//!
//! The incarnation is also pbft's [`pbft::Restored::incarnation`], which must outrank every
//! earlier start's (peers refuse view-changes of older ones): when the marker is lost, the
//! count starts again from the clock's seconds.

use std::path::{Path, PathBuf};

use ledger::{Genesis, Hash};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::local_store::LocalStore;

/// The marker's file name in a validator's folder, beside `node.key`.
pub const MARKER_FILE: &str = "node.incarnation";

/// The marker as written: the genesis it belongs to and how many times the validator started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkerFile {
    /// Hex of the genesis hash this validator was created for.
    genesis: String,
    /// Starts so far (0: created by `init`, never started).
    incarnation: u64,
}

/// What the marker and node.db say about this start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Start {
    /// This start's incarnation (written to the marker and to node.db).
    pub incarnation: u64,
    /// Why the replica may have voted in a state it no longer remembers, if it may have.
    pub recovering: Option<String>,
}

/// Writes the marker of a validator just created for the genesis `genesis_hash`:
/// incarnation 0, "never started". Durable (fsync of the file and the folder) on return.
fn write_fresh_marker(validator_dir: &Path, genesis_hash: &Hash) -> Result<(), NodeError> {
    write_marker(validator_dir, genesis_hash, 0)
}

/// Creates a network from its validators' public keys as [`ledger::init_from_public_keys`]
/// does (`medchain init --validators`), and each validator's incarnation marker. With `force`,
/// the markers of the new genesis replace the old ones.
pub fn init_from_public_keys(
    dir: &Path,
    validators: Vec<ledger::ValidatorInfo>,
    force: bool,
    params: ledger::ChainParams,
) -> Result<Genesis, NodeError> {
    let genesis = ledger::init_from_public_keys(dir, validators, force, params)?;
    write_fresh_markers(dir, &genesis)?;
    Ok(genesis)
}

/// Creates a development network, every key in one place, as [`ledger::init_dev_network`]
/// does (operator keys in `key_dir`), and each validator's incarnation marker: the one way
/// `serve`, `testnet`, the embedded cluster and the tests create one. Returns the genesis and
/// the operator keys in the order of `names`.
pub fn init_dev_network(
    dir: &Path,
    key_dir: &Path,
    names: &[&str],
    params: ledger::ChainParams,
) -> Result<(Genesis, Vec<ledger::master::DevKey>), NodeError> {
    let (genesis, keys) = ledger::init_dev_network(dir, key_dir, names, params)?;
    write_fresh_markers(dir, &genesis)?;
    Ok((genesis, keys))
}

fn write_fresh_markers(dir: &Path, genesis: &Genesis) -> Result<(), NodeError> {
    for validator in genesis.validators() {
        write_fresh_marker(
            &crate::node::validator_dir(dir, &validator.name),
            &genesis.hash(),
        )?;
    }
    Ok(())
}

/// Decides whether this start recovers, then records its incarnation in the marker (fsync)
/// and in node.db, with `pbft::Durable::Recovery` beside it if it recovers (so that a crash
/// before the replica persists anything still restarts recovering).
pub(crate) fn begin(
    validator_dir: &Path,
    genesis_hash: &Hash,
    local: &mut LocalStore,
) -> Result<Start, NodeError> {
    let path = marker_path(validator_dir);
    let marker = read_marker(&path, genesis_hash);
    let stored = local.incarnation()?;
    let recovering = amnesia(&marker, stored);
    // The incarnation must outrank every earlier start's (pbft signs it into view-changes, and
    // peers refuse those of older ones). A lost marker lost the count: start again from the
    // clock's seconds, above any number of starts a validator makes in the time it ran.
    let previous = marker.as_ref().copied().unwrap_or_else(|_| unix_seconds());
    let incarnation = previous.max(stored.unwrap_or(0)).saturating_add(1);
    write_marker(validator_dir, genesis_hash, incarnation)?;
    local.begin_incarnation(incarnation, recovering.is_some())?;
    Ok(Start {
        incarnation,
        recovering,
    })
}

/// Makes `node_db`, a copy of a validator's node.db taken for a backup (`medchain backup`,
/// while the validator may run), start its validator recovering wherever it is restored. The
/// copy is of some start k, and the validator may go on voting in that same start after the
/// copy was taken: the marker of start k would take the restored copy for current and let it
/// contradict those votes. So the copy's counter is set to k - 1 (every marker of that
/// validator now shows an older node.db), and a `Durable::Recovery` record is added (so that a
/// marker saying "never started", copied from the network's creation, cannot let it vote at
/// once either). A copy of a node.db that never started a validator holds no vote: left as it is.
pub fn mark_backup_copy(node_db: &Path) -> Result<(), NodeError> {
    let mut local = LocalStore::open(node_db)?;
    if let Some(start) = local.incarnation()? {
        local.begin_incarnation(start.saturating_sub(1), true)?;
    }
    Ok(())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn marker_path(validator_dir: &Path) -> PathBuf {
    validator_dir.join(MARKER_FILE)
}

/// The marker's incarnation if it is readable, or why it is not usable (the reason to
/// recover).
fn read_marker(path: &Path, genesis_hash: &Hash) -> Result<u64, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} is missing: this validator may have voted before",
                path.display()
            ));
        }
        Err(error) => return Err(format!("{} is unreadable: {error}", path.display())),
    };
    let marker: MarkerFile = toml::from_str(&text)
        .map_err(|error| format!("{} is unreadable: {error}", path.display()))?;
    let genesis = hex::decode(&marker.genesis)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .ok_or_else(|| format!("{} names no genesis hash", path.display()))?;
    if &genesis != genesis_hash {
        return Err(format!(
            "{} belongs to genesis {}, not this network's",
            path.display(),
            marker.genesis
        ));
    }
    Ok(marker.incarnation)
}

/// Why the replica may have voted in a state its node.db no longer holds (`None`: it holds all).
fn amnesia(marker: &Result<u64, String>, stored: Option<u64>) -> Option<String> {
    let marked = match marker {
        Ok(incarnation) => *incarnation,
        Err(reason) => return Some(reason.clone()),
    };
    match stored {
        Some(stored) if stored == marked => None,
        None if marked == 0 => None,
        None => Some(format!(
            "node.db is new but this validator started {marked} times before (a deleted store)"
        )),
        Some(stored) if stored < marked => Some(format!(
            "node.db is from start {stored} of {marked} (restored from an older backup)"
        )),
        Some(stored) => Some(format!(
            "node.db is from start {stored}, after the marker's {marked} (the marker was restored)"
        )),
    }
}

/// Writes the marker durably: a temporary file, synced, renamed over the marker, and the
/// folder synced so that the rename itself survives a crash.
fn write_marker(
    validator_dir: &Path,
    genesis_hash: &Hash,
    incarnation: u64,
) -> Result<(), NodeError> {
    let path = marker_path(validator_dir);
    let text = format!(
        "# medchain: this validator's starts under its genesis. Never copy or restore this file:\n\
         # a validator whose node.db is missing or older than it starts recovering (it cannot\n\
         # contradict a vote it no longer remembers). `medchain init --force` writes a new one.\n{}",
        toml::to_string(&MarkerFile {
            genesis: hex::encode(genesis_hash),
            incarnation,
        })
        .map_err(|error| NodeError::Config(format!("{}: {error}", path.display())))?
    );
    ledger::files::write_private_file(&path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENESIS: Hash = [7; 32];

    fn start(dir: &Path) -> Start {
        let mut local = LocalStore::open(&dir.join("node.db")).unwrap();
        begin(dir, &GENESIS, &mut local).unwrap()
    }

    #[test]
    fn first_start_after_init_is_not_recovering_and_restarts_are_not_either() {
        let dir = tempfile::tempdir().unwrap();
        write_fresh_marker(dir.path(), &GENESIS).unwrap();
        assert_eq!(
            start(dir.path()),
            Start {
                incarnation: 1,
                recovering: None
            }
        );
        assert_eq!(start(dir.path()).recovering, None);
        assert_eq!(start(dir.path()).incarnation, 3);
    }

    #[test]
    fn a_deleted_node_db_starts_recovering_and_says_so_in_its_records() {
        let dir = tempfile::tempdir().unwrap();
        write_fresh_marker(dir.path(), &GENESIS).unwrap();
        start(dir.path());
        std::fs::remove_file(dir.path().join("node.db")).unwrap();
        let again = start(dir.path());
        assert!(again.recovering.unwrap().contains("deleted"));
        assert_eq!(again.incarnation, 2);
        let local = LocalStore::open(&dir.path().join("node.db")).unwrap();
        assert_eq!(
            local.durable().unwrap(),
            vec![pbft::Durable::Recovery { bound: None }]
        );
        // Once it recorded the recovery, the next start is normal again by the marker; the
        // replica still recovers, from its records.
        assert_eq!(start(dir.path()).recovering, None);
    }

    #[test]
    fn an_older_node_db_starts_recovering() {
        let dir = tempfile::tempdir().unwrap();
        write_fresh_marker(dir.path(), &GENESIS).unwrap();
        start(dir.path());
        let backup = dir.path().join("backup.db");
        std::fs::copy(dir.path().join("node.db"), &backup).unwrap();
        start(dir.path());
        std::fs::copy(&backup, dir.path().join("node.db")).unwrap();
        assert!(start(dir.path()).recovering.unwrap().contains("backup"));
    }

    /// A backup is taken while the validator runs, and it goes on voting in the same start:
    /// restored under the marker of that very start, the copy still recovers, and so it does
    /// under a marker that says "never started".
    #[test]
    fn a_backup_copy_of_the_current_start_recovers_when_restored() {
        let dir = tempfile::tempdir().unwrap();
        write_fresh_marker(dir.path(), &GENESIS).unwrap();
        start(dir.path());
        let copy = dir.path().join("copy.db");
        std::fs::copy(dir.path().join("node.db"), &copy).unwrap();
        mark_backup_copy(&copy).unwrap();
        let recovers = |marker: Option<u64>| {
            if let Some(count) = marker {
                write_marker(dir.path(), &GENESIS, count).unwrap();
            }
            std::fs::copy(&copy, dir.path().join("node.db")).unwrap();
            let again = start(dir.path());
            let local = LocalStore::open(&dir.path().join("node.db")).unwrap();
            let records = local.durable().unwrap();
            (again.recovering, records.last().cloned())
        };
        let (reason, last) = recovers(None);
        assert!(reason.unwrap().contains("older backup"));
        assert_eq!(last, Some(pbft::Durable::Recovery { bound: None }));
        // A marker copied from the network's creation: the record still makes it recover.
        let (reason, last) = recovers(Some(0));
        assert_eq!(reason, None);
        assert_eq!(last, Some(pbft::Durable::Recovery { bound: None }));
        // Without the mark, a copy of the current start is taken for current: the hole.
        std::fs::copy(dir.path().join("node.db"), &copy).unwrap();
        std::fs::copy(&copy, dir.path().join("node.db")).unwrap();
        assert_eq!(start(dir.path()).recovering, None);
    }

    #[test]
    fn a_missing_or_foreign_marker_starts_recovering() {
        let dir = tempfile::tempdir().unwrap();
        let lost = start(dir.path());
        assert!(lost.recovering.unwrap().contains("missing"));
        assert!(
            lost.incarnation > unix_seconds() - 60,
            "a lost count starts again from the clock, above the starts it lost"
        );
        let other = tempfile::tempdir().unwrap();
        write_fresh_marker(other.path(), &[8; 32]).unwrap();
        assert!(start(other.path()).recovering.unwrap().contains("genesis"));
        std::fs::write(other.path().join(MARKER_FILE), "garbage").unwrap();
        assert!(
            start(other.path())
                .recovering
                .unwrap()
                .contains("unreadable")
        );
    }
}
