//! Helpers shared by the embedded-cluster tests.

use std::time::Duration;

use ledger::Transaction;
use node::Timing;

/// Checkpoints every 8 sequence numbers (the log window L is 16), a 10 ms batch window.
pub fn fast_timing() -> Timing {
    Timing {
        batch_window: Duration::from_millis(10),
        view_change_timeout: Duration::from_millis(500),
        checkpoint_interval: 8,
        ..Timing::default()
    }
}

pub fn record(i: usize) -> Transaction {
    Transaction::AddRecord {
        patient_id: format!("p{:03}", i % 7),
        doctor_id: "d001".into(),
        department: "Cardiology".into(),
        diagnosis: format!("diagnosis {i}"),
        prescription: "rest".into(),
        notes: String::new(),
        consent_hash: ledger::sha256(format!("consent {i}").as_bytes()),
    }
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
