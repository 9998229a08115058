//! The ceiling (`--mode ceiling`, `--with-ceiling`): the load's transactions applied by the
//! same validators with no protocol ([`node::offline::Ceiling`]). Blocks are made between
//! measured spans (making them is the clients' and the homes' work, not the validators'); only
//! the spans in which the validators check and store them are timed and metered.

use std::path::Path;
use std::time::Duration;

use node::load::Series;
use node::offline::Ceiling;

use super::report::{BenchReport, LatencyMs, Point};
use super::usage::{Device, Meter, Process, Used};

/// When the ceiling stops.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// After this long applying blocks.
    Duration(Duration),
    /// After this many transactions (rounded up to whole records).
    Transactions(u64),
}

/// Blocks made per measured span.
const BLOCKS_PER_SPAN: u64 = 4;

/// What `latency_ms` measures in ceiling mode.
const CEILING_LATENCY: &str = "a block checked and stored, at the slowest validator";

/// Runs the ceiling on the stopped network in `dir` (its operator keys in `key_dir`) until
/// `limit`; `report` holds the figures of the run's settings, filled with its results.
pub fn run(
    dir: &Path,
    key_dir: &Path,
    limit: Limit,
    mut report: BenchReport,
) -> anyhow::Result<BenchReport> {
    let mut ceiling = Ceiling::open(dir, key_dir)?;
    let bar = match limit {
        Limit::Duration(duration) => {
            super::progress_bar(duration.as_millis() as u64, "ceiling {bar:40} {msg}")
        }
        Limit::Transactions(count) => {
            super::progress_bar(count, "ceiling {bar:40} {pos}/{len} transactions")
        }
    };
    let span = BLOCKS_PER_SPAN * ceiling.max_batch() as u64;
    let mut series = Series::default();
    let mut applied_for = Duration::ZERO;
    let (mut committed, mut stored_bytes) = (0u64, 0f64);
    let mut used = Used {
        write_bytes: Some(0),
        written_by_calls: Some(0),
        device_write_bytes: Device::of(dir).map(|_| 0),
        ..Used::default()
    };
    Process::This.reset_peak_rss();
    loop {
        let want = match limit {
            Limit::Duration(duration) if applied_for >= duration => break,
            Limit::Duration(_) => span,
            Limit::Transactions(count) if committed >= count => break,
            Limit::Transactions(count) => span.min(count - committed),
        };
        let blocks = ceiling.make(want)?;
        let meter = Meter::start(vec![Process::This], dir);
        let applied = ceiling.apply(&blocks)?;
        used = used.add(meter.used());
        for block in &applied {
            series.add(
                applied_for + block.stored_at,
                block.transactions,
                &[block.slowest],
            );
            committed += block.transactions;
        }
        let made: u64 = applied.iter().map(|block| block.transactions).sum();
        stored_bytes += node::offline::mean_tx_bytes(&blocks) * made as f64;
        applied_for += applied
            .last()
            .map_or(Duration::ZERO, |block| block.stored_at);
        match limit {
            Limit::Duration(_) => {
                bar.set_position(applied_for.as_millis() as u64);
                bar.set_message(format!("{committed} transactions"));
            }
            Limit::Transactions(_) => bar.set_position(committed),
        }
    }
    bar.finish_and_clear();
    let (series, latency) = series.finish(applied_for);
    report.validators = ceiling.validators();
    report.duration_s = applied_for.as_secs_f64();
    report.elapsed_s = applied_for.as_secs_f64();
    report.committed = committed;
    // Nothing is acknowledged before it is stored: every transaction counts as both.
    report.acknowledged = committed;
    report.committed_tx_per_s = committed as f64 / applied_for.as_secs_f64().max(1e-9);
    report.latency_is = CEILING_LATENCY;
    report.latency_ms = LatencyMs::from(latency);
    report.tx_bytes = if committed > 0 {
        stored_bytes / committed as f64
    } else {
        0.0
    };
    report.series = series.iter().map(Point::from).collect();
    report.set_usage(&used);
    Ok(report)
}
