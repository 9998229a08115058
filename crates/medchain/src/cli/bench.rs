//! `medchain bench`: committed transactions per second and commit latency under load.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use node::load::{Load, LoadReport, drive};

use super::node::start_validator;
use super::testnet::{Fleet, write_network};
use super::timing::TimingArgs;

/// Loads a fresh four-validator cluster with signed records (every signature checked, every
/// block fsynced) and reports committed transactions per second and the latency from
/// acknowledgement to commit. Embedded by default; --processes runs the validators as four
/// processes talking TCP on loopback (three `medchain node` children and this process).
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  medchain bench --duration 10s                 # throughput, as fast as it goes\n  medchain bench --rate 1000 --duration 20s     # latency at 1,000 tx/s"
)]
pub struct BenchArgs {
    /// Transactions per second to offer; omit to submit as fast as they are acknowledged.
    #[arg(long, value_name = "TX_PER_S")]
    rate: Option<u64>,
    /// How long to submit.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = node::parse_duration)]
    duration: Duration,
    /// Submitters in flight at once (without --rate).
    #[arg(long, value_name = "N", default_value_t = 512)]
    concurrency: usize,
    /// Run the validators as separate processes on loopback TCP.
    #[arg(long)]
    processes: bool,
    /// Where to create the cluster (default: a temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the validators' operator keys live (default: DATA_DIR.keys, beside it).
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    #[command(flatten)]
    timing: TimingArgs,
}

impl BenchArgs {
    fn describe(&self) -> String {
        format!(
            "{}, 4 validators, batch window {}, max batch {}, {} for {}",
            if self.processes {
                "4 processes on loopback TCP"
            } else {
                "embedded"
            },
            humantime::format_duration(self.timing.batch_window),
            self.timing.max_batch,
            self.rate
                .map_or("as fast as acknowledged".into(), |r| format!(
                    "{r} tx/s offered"
                )),
            humantime::format_duration(self.duration),
        )
    }
}

impl super::Run for BenchArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let key_dir = self
            .key_dir
            .clone()
            .unwrap_or_else(|| ledger::master::default_key_dir(&dir));
        println!("{}", self.describe());
        let load = Load {
            rate: self.rate,
            duration: self.duration,
            concurrency: self.concurrency,
        };
        let bar = ProgressBar::new(self.duration.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let progress = |elapsed: Duration, acknowledged: u64| {
            bar.set_position(elapsed.as_millis() as u64);
            bar.set_message(format!("{acknowledged} acknowledged"));
        };
        let settle = Duration::from_secs(120);
        let runtime = super::service::runtime()?;
        let report = if self.processes {
            let configs = write_network(&dir, &key_dir, 4, 17101, 15101, &self.timing, false)?;
            // Their logs in each validator's folder, node-1.log.
            let mut children = Fleet::new(&configs[1..], &key_dir, false, true)?;
            for i in 0..children.len() {
                children.start(i)?;
            }
            let first = &configs[0].1;
            let (operator_key, _) = ledger::master::MasterKey::from_key_file(
                &ledger::master::dev_key_path(&key_dir, &first.name),
                &first.data_dir,
                false,
            )?;
            let result = runtime.block_on(async {
                let node = start_validator(first, operator_key).await?;
                let handles = vec![node.handle().clone()];
                let report = drive(&handles, &load, settle, progress).await;
                tokio::task::spawn_blocking(move || node.stop()).await.ok();
                report.map_err(anyhow::Error::from)
            });
            children.stop_all();
            result?
        } else {
            let mut options = node::ClusterOptions::new(&dir, self.timing.timing());
            options.key_dir = key_dir;
            let cluster = node::Cluster::start(options)?;
            let handles = cluster.handles();
            runtime.block_on(drive(&handles, &load, settle, progress))?
        };
        bar.finish_and_clear();
        print_report(&report);
        Ok(ExitCode::SUCCESS)
    }
}

fn print_report(report: &LoadReport) {
    println!(
        "committed {} transactions in {:.2} s: {:.0} tx/s ({} blocks; {} acknowledged, {} refused as busy)",
        report.committed,
        report.elapsed.as_secs_f64(),
        report.committed_per_second,
        report.blocks,
        report.acknowledged,
        report.refused,
    );
    println!(
        "commit latency (acknowledged to committed): p50 {:.1} ms, p99 {:.1} ms",
        report.commit_latency_p50.as_secs_f64() * 1e3,
        report.commit_latency_p99.as_secs_f64() * 1e3,
    );
    println!(
        "grant latency (seal started to applied at the patient's home): p50 {:.1} ms, p99 {:.1} ms",
        report.grant_latency_p50.as_secs_f64() * 1e3,
        report.grant_latency_p99.as_secs_f64() * 1e3,
    );
    let keys = &report.keys;
    println!(
        "key service: {} keys received, {} served; refused {} wrong, {} reused, {} unentitled; \
         requests {} dropped, {} busy, {} not entitled",
        keys.keys_received,
        keys.keys_served,
        keys.keys_refused_wrong,
        keys.keys_refused_reused,
        keys.keys_refused_unentitled,
        keys.keys_requests_dropped,
        keys.keys_requests_busy,
        keys.keys_requests_not_entitled,
    );
}
