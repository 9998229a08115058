//! `medchain verify`: offline verification of every replica in a data directory.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::Genesis;
use ledger::verify::{Progress, verify_replicas};

/// Reads DIR/genesis.toml and checks every DIR/*/chain.db: hash links, heights, Merkle roots,
/// transaction signatures, commit certificates (2f+1 distinct validators of the genesis set)
/// and the derived state; then that the replicas hold the same block at every height they
/// share. Exits 0 when all of it holds and 1 otherwise, naming the replica file, the first bad
/// block height and what is wrong with it.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The network's directory, as made by `medchain init`.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// After verifying, also time batch signature verification alone over the same signatures
    /// (those of the first replica, on one thread per core) and print both rates in
    /// transactions per second, their ratio and the peak resident memory of verification.
    #[arg(long)]
    measure: bool,
}

impl super::Run for VerifyArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let genesis_path = self.data_dir.join("genesis.toml");
        let genesis = Genesis::load(&genesis_path)?;
        let stores = find_stores(&self.data_dir)?;
        anyhow::ensure!(
            !stores.is_empty(),
            "no replica found: {} holds no */chain.db",
            self.data_dir.display()
        );
        let started = Instant::now();
        let mut bar = Bar::new(std::io::stderr().is_terminal());
        let outcome = verify_replicas(&stores, &genesis, &mut |path, p| bar.update(path, p));
        bar.finish();
        let elapsed = started.elapsed();
        match outcome {
            Ok(summaries) => {
                for s in &summaries {
                    println!(
                        "ok  {}: {} blocks, {} transactions, head {} {}",
                        s.path.display(),
                        s.blocks,
                        s.transactions,
                        s.head_height,
                        ledger::short_hex(&s.head_hash)
                    );
                }
                let blocks: u64 = summaries.iter().map(|s| s.blocks).sum();
                let txs: u64 = summaries.iter().map(|s| s.transactions).sum();
                println!(
                    "verified {} replica(s) of chain {}: {blocks} blocks, {txs} transactions in {:.2} s; the replicas agree",
                    summaries.len(),
                    genesis.chain_id(),
                    elapsed.as_secs_f64()
                );
                if self.measure {
                    measure(&stores[0], &genesis, txs, elapsed.as_secs_f64())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("verification FAILED: {error}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Prints verification's rate (`transactions` in `elapsed_s`) beside the rate of batch signature
/// verification alone over the signatures of `store`, on one thread per core.
fn measure(
    store: &Path,
    genesis: &Genesis,
    transactions: u64,
    elapsed_s: f64,
) -> anyhow::Result<()> {
    // Read before the timing holds its batches: the peak of verification itself.
    let peak_rss_mb = peak_rss_kib().map(|kib| kib as f64 / 1024.0);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let alone = ledger::verify::time_signatures(store, genesis, threads)?;
    let verify_rate = transactions as f64 / elapsed_s.max(f64::MIN_POSITIVE);
    let alone_rate = alone.transactions_per_s();
    println!(
        "verify: {transactions} transactions in {elapsed_s:.2} s: {verify_rate:.0} tx/s (all of it: \
         reading, hashes, certificates, signatures, replay and comparison)"
    );
    println!(
        "signatures alone: {} signatures of {} transactions ({}) checked in batches on {threads} \
         thread(s) in {:.2} s: {alone_rate:.0} tx/s",
        alone.signatures,
        alone.transactions,
        store.display(),
        alone.checking_s
    );
    println!(
        "ratio verify / signatures alone: {:.3}",
        verify_rate / alone_rate.max(f64::MIN_POSITIVE)
    );
    match peak_rss_mb {
        Some(mb) => println!("peak resident memory of verify (VmHWM): {mb:.1} MB"),
        None => println!("peak resident memory of verify: unknown (no /proc/self/status)"),
    }
    Ok(())
}

/// The peak resident set size of this process in KiB (`VmHWM` of `/proc/self/status`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Every `DIR/*/chain.db`, sorted by name so the report is the same on every run.
fn find_stores(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut stores = Vec::new();
    for entry in entries {
        let path = entry?.path().join("chain.db");
        if path.is_file() {
            stores.push(path);
        }
    }
    stores.sort();
    Ok(stores)
}

/// A progress bar per replica, shown only on a terminal.
struct Bar {
    enabled: bool,
    current: Option<(PathBuf, ProgressBar)>,
}

impl Bar {
    fn new(enabled: bool) -> Self {
        Bar {
            enabled,
            current: None,
        }
    }

    fn update(&mut self, path: &Path, p: Progress) {
        if !self.enabled {
            return;
        }
        if self
            .current
            .as_ref()
            .is_none_or(|(current, _)| current != path)
        {
            self.finish();
            let bar = ProgressBar::new(p.head + 1);
            bar.set_style(
                ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} blocks {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            let name = path
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            bar.set_message(name);
            self.current = Some((path.to_path_buf(), bar));
        }
        if let Some((_, bar)) = &self.current {
            bar.set_position(p.height + 1);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish();
        }
    }
}
