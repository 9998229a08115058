//! Helpers shared by the embedded-cluster tests; `world` is the cluster of the key tests,
//! `tcp` validators as separate processes on loopback TCP.

pub mod tcp;
pub mod world;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger::SignedTx;
use ledger::tx::RecordBody;
use node::load::Person;
use node::{NodeHandle, Timing};

/// Checkpoints every 8 sequence numbers (the log window L is 16), a 10 ms batch window.
pub fn fast_timing() -> Timing {
    Timing {
        batch_window: Duration::from_millis(10),
        view_change_timeout: Duration::from_millis(500),
        checkpoint_interval: 8,
        ..Timing::default()
    }
}

/// A transaction every validator admits and applies, signed by `handle`'s validator (a real
/// signature, and a real proof of possession of the new key): the enrollment of a new patient
/// whose home it is.
#[allow(dead_code)] // Not every test file enrolls this way.
pub fn enrollment(handle: &NodeHandle) -> SignedTx {
    let patient = Person::patient(handle.id());
    handle.sign_as_validator(patient.enrollment(&handle.genesis_hash()), Vec::new())
}

/// Stops validators 2 and 3 of `cluster` (opened with [`fast_timing`]): with no quorum
/// nothing commits. Then submits `count` enrollments through validator 0 (the first is
/// returned, with every id) and waits until they have waited twice as long as a validator
/// takes to call itself behind (node's `busy_after`): 64 or more make it turn new submissions
/// away.
#[allow(dead_code)] // Not every test file queues transactions.
pub fn queue_with_no_quorum(
    cluster: &mut node::Cluster,
    rt: &tokio::runtime::Runtime,
    count: usize,
) -> (SignedTx, Vec<ledger::TxId>) {
    let hospital = cluster.handle(0).unwrap();
    cluster.stop(2);
    cluster.stop(3);
    let first = enrollment(&hospital);
    let ids = rt.block_on(async {
        let mut ids = vec![hospital.submit(first.clone()).await.unwrap()];
        for _ in 1..count {
            ids.push(hospital.submit(enrollment(&hospital)).await.unwrap());
        }
        ids
    });
    let timing = fast_timing();
    std::thread::sleep((timing.batch_window + timing.view_change_timeout / 4) * 2);
    (first, ids)
}

pub fn runtime() -> tokio::runtime::Runtime {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A record's content with `diagnosis`.
#[allow(dead_code)] // Not every test file writes records.
pub fn note(diagnosis: &str) -> RecordBody {
    RecordBody {
        diagnosis: diagnosis.into(),
        prescription: "rest".into(),
        notes: String::new(),
    }
}

/// A cluster's data directory `ROOT/data` in a temporary folder `ROOT`, so that its key
/// directory (`data.keys`, beside it) is removed with it.
pub struct DataDir {
    _root: tempfile::TempDir,
    data: PathBuf,
}

impl DataDir {
    pub fn path(&self) -> &Path {
        &self.data
    }
}

pub fn data_dir() -> DataDir {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    DataDir { _root: root, data }
}

/// Copies the folder `from` (its files and folders, as a validator's folder holds them) to
/// `to`.
#[allow(dead_code)] // Not every test file copies folders.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Milliseconds since the Unix epoch, as the validators' clocks read it.
#[allow(dead_code)] // Not every test file reads the clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes `tx` into the `node.db` of the stopped validator in `dir` as acknowledged, as an
/// older medchain (or a backup's copy) holds it: the start takes it over into its journal and
/// resumes it.
#[allow(dead_code)] // Not every test file stops validators.
pub fn acknowledge_offline(dir: PathBuf, tx: &SignedTx, genesis: &ledger::Hash) {
    let request = tx.to_request(genesis);
    let db = rusqlite::Connection::open(dir.join("node.db")).unwrap();
    db.execute(
        "INSERT INTO pending (id, accepted_ms, body) VALUES (?1, ?2, ?3)",
        rusqlite::params![&request.id[..], now_ms() as i64, &request.payload[..]],
    )
    .unwrap();
}

/// `doctor`'s write-access request to `patient`, its `purpose` sealed at `home` (the doctor's).
#[allow(dead_code)] // Not every test file asks for access.
pub fn sealed_write_request(
    rt: &tokio::runtime::Runtime,
    home: &NodeHandle,
    doctor: &Person,
    patient: &Person,
    purpose: &str,
) -> SignedTx {
    let meta = ledger::Meta::RequestGrant(ledger::tx::RequestGrant {
        patient: patient.id,
        doctor: doctor.id,
        scope: ledger::tx::Scope::Write,
    });
    let purpose = ledger::tx::PurposeBody {
        purpose: purpose.into(),
    };
    rt.block_on(doctor.sealed(home, meta, &purpose.to_bytes(), false))
        .unwrap()
}
