//! A load generator for measuring a cluster: submits records at a fixed rate (open loop) or as
//! fast as they are acknowledged (closed loop), then waits for everything to commit. Used by
//! `medchain bench` and by the tests that load validators while they are killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger::Transaction;

use crate::error::NodeError;
use crate::handle::NodeHandle;

/// How to load the cluster.
#[derive(Clone, Debug)]
pub struct Load {
    /// Transactions per second in total; `None`: as fast as acknowledgements allow.
    pub rate: Option<u64>,
    pub duration: Duration,
    /// Submitters in flight at once when `rate` is `None`.
    pub concurrency: usize,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub acknowledged: u64,
    pub refused: u64,
    pub committed: u64,
    /// From the first submission to the last commit.
    pub elapsed: Duration,
    pub committed_per_second: f64,
    /// Acknowledgement to commit, at the validator that accepted the transaction.
    pub commit_latency_p50: Duration,
    pub commit_latency_p99: Duration,
    pub blocks: u64,
}

/// A synthetic but realistic record (about the size of a clinic note).
pub fn sample_record(i: u64) -> Transaction {
    Transaction::AddRecord {
        patient_id: format!("p{:05}", i % 10_000),
        doctor_id: format!("d{:03}", i % 50),
        department: "Cardiology".into(),
        diagnosis: format!("Stable angina, follow-up {i}"),
        prescription: "Atorvastatin 20 mg once daily; nitroglycerin as needed".into(),
        notes: "Blood pressure 128/82. Advised moderate exercise and a follow-up in 3 months."
            .into(),
        consent_hash: ledger::sha256(&i.to_le_bytes()),
    }
}

/// Drives `handles` with `load`, then waits (up to `settle`) until nothing is pending.
pub async fn drive(
    handles: &[NodeHandle],
    load: &Load,
    settle: Duration,
    on_progress: impl Fn(Duration, u64),
) -> Result<LoadReport, NodeError> {
    if handles.is_empty() {
        return Err(NodeError::Config("no validator to load".into()));
    }
    for handle in handles {
        handle.shared().reset_latencies();
    }
    let committed_before: u64 = handles[0].shared().committed_transactions();
    let height_before = handles[0].status().height;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let submit = {
        let (acknowledged, refused, counter) =
            (acknowledged.clone(), refused.clone(), counter.clone());
        move |handle: NodeHandle| {
            let (acknowledged, refused, counter) =
                (acknowledged.clone(), refused.clone(), counter.clone());
            async move {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                match handle.submit(sample_record(i)).await {
                    Ok(_) => acknowledged.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    };
    match load.rate {
        Some(rate) => {
            // Open loop: a slot every millisecond, each submitting its share of the rate.
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            let mut sent = 0u64;
            let mut last_progress = Instant::now();
            while started.elapsed() < load.duration {
                interval.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let handle = handles[(sent as usize) % handles.len()].clone();
                    tasks.push(tokio::spawn(submit(handle)));
                    sent += 1;
                }
                if last_progress.elapsed() >= Duration::from_millis(250) {
                    last_progress = Instant::now();
                    on_progress(started.elapsed(), acknowledged.load(Ordering::Relaxed));
                }
            }
        }
        None => {
            for worker in 0..load.concurrency.max(1) {
                let handle = handles[worker % handles.len()].clone();
                let submit = submit.clone();
                let duration = load.duration;
                tasks.push(tokio::spawn(async move {
                    while started.elapsed() < duration {
                        submit(handle.clone()).await;
                    }
                }));
            }
            while started.elapsed() < load.duration {
                tokio::time::sleep(Duration::from_millis(250)).await;
                on_progress(started.elapsed(), acknowledged.load(Ordering::Relaxed));
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let deadline = Instant::now() + settle;
    while handles.iter().any(|handle| handle.status().pending > 0) {
        if Instant::now() > deadline {
            return Err(NodeError::Timeout("acknowledged transactions to commit"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let committed = handles[0].shared().committed_transactions() - committed_before;
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.shared().latencies());
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((p / 100.0) * latencies.len().saturating_sub(1) as f64).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(LoadReport {
        acknowledged: acknowledged.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        committed,
        elapsed,
        committed_per_second: committed as f64 / elapsed.as_secs_f64(),
        commit_latency_p50: percentile(50.0),
        commit_latency_p99: percentile(99.0),
        blocks: handles[0].status().height - height_before,
    })
}
