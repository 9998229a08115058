//! What a bench run found, as a table for a person, `bench.json` for a machine, and
//! `bench.svg`: committed transactions per second and p99 latency, second by second, so that
//! a slowdown shows. The chart is SVG written by hand (no script, nothing fetched).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use node::load::{Percentiles, Second};
use serde::Serialize;

/// Why `index_write_bytes_per_tx_per_validator` is null: what /proc can and cannot tell.
pub const INDEX_BYTES_UNKNOWN: &str = "/proc/<pid>/io counts the bytes a process writes, not \
     which B-tree of chain.db they belong to; index bytes need the store to count its own writes";

/// One run's figures; `bench.json` is this, serialized.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchReport {
    /// `ledger` (the cluster under load), or `ceiling` (the same transactions applied by the
    /// same validators with no protocol).
    pub mode: &'static str,
    pub validators: usize,
    /// The operating-system processes the validators run in (1: embedded).
    pub processes: usize,
    /// How long the load was offered (ceiling: how long blocks were being applied).
    pub duration_s: f64,
    /// From the first submission to the last commit.
    pub elapsed_s: f64,
    /// Transactions per second offered; `None`: closed loop.
    pub rate: Option<u64>,
    pub batch_window_ms: f64,
    pub max_batch: u32,
    /// Transactions on the chain before the run (`--prefill`).
    pub prefill: u64,
    /// Every entry the first validator's chain held before the run: the prefill and its
    /// enrollments, and what earlier runs on the same `--data-dir` committed.
    pub chain_transactions_before: Option<u64>,
    pub committed: u64,
    pub acknowledged: u64,
    pub lost: u64,
    /// Submissions refused (busy, by admission, or records whose grant was not applied); of
    /// them, those refused as busy (null in modes that do not count them).
    pub refused: Option<u64>,
    pub refused_busy: Option<u64>,
    /// Records (a grant and a record each) sealed and signed before the measured run
    /// (`--premade`), and records the load sealed and signed inside it (null in modes that do
    /// not make them so).
    pub records_made_before: Option<u64>,
    pub records_made_in_run: Option<u64>,
    /// Blocks committed over the run, and the views the first validator moved through (a view
    /// change under load: a primary suspected while it was merely slow).
    pub blocks: Option<u64>,
    pub view_changes: Option<u64>,
    pub committed_tx_per_s: f64,
    /// What `latency_ms` measures in this mode.
    pub latency_is: &'static str,
    pub latency_ms: LatencyMs,
    pub cpu_us_per_tx: Option<f64>,
    /// The mean size of a committed transaction as the chain stores it.
    pub tx_bytes: f64,
    pub write_bytes_per_tx_per_validator: Option<f64>,
    /// `write_bytes_per_tx_per_validator` over `tx_bytes`.
    pub write_amplification: Option<f64>,
    pub index_write_bytes_per_tx_per_validator: Option<f64>,
    /// Bytes handed to `write` and `pwrite` per committed transaction per validator (`wchar` of
    /// `/proc/<pid>/io`), counted like `write_bytes_per_tx_per_validator`. `write_bytes` is
    /// counted when a page of the page cache turns dirty, a whole folio at a time: on kernels
    /// that cache files in large folios (ext4 since Linux 6.x) one 4 KiB page written into a
    /// file read or written sequentially counts as the whole folio (up to 2 MiB), while only the
    /// page goes to the disk. Embedded and in the ceiling every such call is to a file; with
    /// `--processes` the peer sockets' bytes count too.
    pub call_write_bytes_per_tx_per_validator: Option<f64>,
    /// `call_write_bytes_per_tx_per_validator` over `tx_bytes`.
    pub call_write_amplification: Option<f64>,
    /// Bytes written to the block device holding the data folder over the run (its sectors
    /// written, from sysfs), per committed transaction per validator: what reaches the disk,
    /// the filesystem's journal included, whatever the page cache's folios. The whole
    /// machine's writes to that device: a figure for a quiet machine.
    pub device_write_bytes_per_tx_per_validator: Option<f64>,
    /// `device_write_bytes_per_tx_per_validator` over `tx_bytes`.
    pub device_write_amplification: Option<f64>,
    /// Why a figure above is null, by its name.
    pub why_null: BTreeMap<&'static str, &'static str>,
    pub peak_rss_bytes_per_validator: Option<u64>,
    /// The size of the first validator's chain (`chain.db` and its WAL) at the end of the run:
    /// what the chain of `chain_transactions_before` and `committed` transactions takes on each
    /// validator's disk.
    pub chain_bytes_per_validator: Option<u64>,
    /// `committed_tx_per_s` over the ceiling's, run after on as many transactions
    /// (`--with-ceiling`).
    pub efficiency: Option<f64>,
    pub ceiling: Option<Box<BenchReport>>,
    /// `http`: clients, each a doctor's and a patient's kept-alive connection.
    pub clients: Option<usize>,
    /// `http`: records `add_record` acknowledged; of them, those applied on chain, and those
    /// in no block of the run (each record is three transactions: the request, the grant
    /// and the record, all counted in `committed`).
    pub records_acknowledged: Option<u64>,
    pub records_committed: Option<u64>,
    pub records_lost: Option<u64>,
    pub records_committed_per_s: Option<f64>,
    /// `http`: flows a refusal or an error cut short, by step and answer; and the
    /// transactions committed that no answer acknowledged, by kind (such a step's).
    pub cut_short: Option<BTreeMap<String, u64>>,
    pub committed_unacknowledged: Option<BTreeMap<&'static str, u64>>,
    /// `http`: a record's whole flow, from the doctor's consent request to the record applied.
    pub record_flow_ms: Option<LatencyMs>,
    /// Committed tx/s over the first and the last [`FLATNESS_WINDOW_S`] seconds of the load,
    /// and the last over the first (issue 11: a long run's last 30 s within 10 % of its first);
    /// null in a run of two windows or less, and over HTTP (its series counts records).
    pub first_30_s_tx_per_s: Option<f64>,
    pub last_30_s_tx_per_s: Option<f64>,
    pub last_over_first_30_s: Option<f64>,
    /// What `series` counts: `records` (`http`), or transactions (null).
    pub series_counts: Option<&'static str>,
    pub series: Vec<Point>,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<Percentiles> for LatencyMs {
    fn from(p: Percentiles) -> Self {
        LatencyMs {
            p50: ms(p.p50),
            p95: ms(p.p95),
            p99: ms(p.p99),
            max: ms(p.max),
        }
    }
}

/// One second of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    pub t_s: u64,
    pub committed_tx_per_s: f64,
    pub p99_ms: f64,
}

impl From<&Second> for Point {
    fn from(second: &Second) -> Self {
        Point {
            t_s: second.t_s,
            committed_tx_per_s: second.committed_tx_per_s,
            p99_ms: ms(second.p99),
        }
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The span at each end of a run that [`BenchReport::set_flatness`] compares.
pub const FLATNESS_WINDOW_S: u64 = 30;

impl BenchReport {
    /// Fills the first and last windows' rates from `series` and `duration_s`: the seconds
    /// the load was offered, not the drain after it. The last window ends a second before the
    /// load does: [`node::load::Series::finish`] adds a drain shorter than a fifth of a second
    /// to the load's last second (red team s44). Not for a series of records (`http`).
    pub fn set_flatness(&mut self) {
        let seconds = self.duration_s.floor() as u64;
        if seconds < 2 * FLATNESS_WINDOW_S + 1 || self.series_counts.is_some() {
            return;
        }
        let mean = |from: u64, to: u64| {
            let total: f64 = self
                .series
                .iter()
                .filter(|point| (from..=to).contains(&point.t_s))
                .map(|point| point.committed_tx_per_s)
                .sum();
            total / (to - from + 1) as f64
        };
        let first = mean(1, FLATNESS_WINDOW_S);
        let last = mean(seconds - FLATNESS_WINDOW_S, seconds - 1);
        self.first_30_s_tx_per_s = Some(first);
        self.last_30_s_tx_per_s = Some(last);
        self.last_over_first_30_s = (first > 0.0).then(|| last / first);
    }

    /// Fills the per-transaction figures from what the processes used over the run.
    pub fn set_usage(&mut self, used: &super::usage::Used) {
        let validators = self.validators.max(1) as f64;
        let per_tx = |total: f64| (self.committed > 0).then(|| total / self.committed as f64);
        self.cpu_us_per_tx = per_tx(used.cpu.as_secs_f64() * 1e6);
        // Bytes per transaction per validator, and over the transaction's stored size.
        let per_tx_per_validator = |bytes: Option<u64>| {
            let per = bytes.and_then(|bytes| per_tx(bytes as f64 / validators));
            let amplification = per
                .filter(|_| self.tx_bytes > 0.0)
                .map(|per| per / self.tx_bytes);
            (per, amplification)
        };
        (
            self.write_bytes_per_tx_per_validator,
            self.write_amplification,
        ) = per_tx_per_validator(used.write_bytes);
        (
            self.call_write_bytes_per_tx_per_validator,
            self.call_write_amplification,
        ) = per_tx_per_validator(used.written_by_calls);
        (
            self.device_write_bytes_per_tx_per_validator,
            self.device_write_amplification,
        ) = per_tx_per_validator(used.device_write_bytes);
        if self.device_write_bytes_per_tx_per_validator.is_none() {
            self.why_null.insert(
                "device_write_bytes_per_tx_per_validator",
                "the data folder's block device has no stat in sysfs (tmpfs, overlay, not Linux)",
            );
        }
        if self.write_bytes_per_tx_per_validator.is_none() {
            self.why_null.insert(
                "write_bytes_per_tx_per_validator",
                "/proc/<pid>/io could not be read",
            );
        }
        self.index_write_bytes_per_tx_per_validator = None;
        self.why_null.insert(
            "index_write_bytes_per_tx_per_validator",
            INDEX_BYTES_UNKNOWN,
        );
        self.peak_rss_bytes_per_validator = used.peak_rss_bytes.map(|bytes| {
            if self.processes > 1 {
                bytes
            } else {
                bytes / self.validators.max(1) as u64
            }
        });
    }

    /// Sets the ceiling run after this one, and the efficiency it gives.
    pub fn set_ceiling(&mut self, ceiling: BenchReport) {
        self.efficiency = (ceiling.committed_tx_per_s > 0.0)
            .then(|| self.committed_tx_per_s / ceiling.committed_tx_per_s);
        self.ceiling = Some(Box::new(ceiling));
    }

    /// Writes `bench.json` and `bench.svg` into `dir` (made if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write("bench.json", &json)?;
        write("bench.svg", &self.svg())
    }

    /// The figures as an aligned table.
    pub fn table(&self) -> String {
        let or_null = |value: Option<String>| value.unwrap_or_else(|| "-".into());
        let mut rows: Vec<(&str, String)> = vec![
            ("mode", self.mode.to_string()),
            (
                "validators",
                format!("{} in {} process(es)", self.validators, self.processes),
            ),
            (
                "duration",
                format!(
                    "{:.1} s ({:.1} s to the last commit)",
                    self.duration_s, self.elapsed_s
                ),
            ),
            (
                "prefill",
                match self.chain_transactions_before {
                    Some(before) if before != self.prefill => format!(
                        "{} transactions ({before} on the chain before the run)",
                        self.prefill
                    ),
                    _ => format!("{} transactions", self.prefill),
                },
            ),
            ("committed", self.committed.to_string()),
            ("acknowledged", self.acknowledged.to_string()),
            ("lost", self.lost.to_string()),
            ("committed tx/s", format!("{:.0}", self.committed_tx_per_s)),
        ];
        if let (Some(first), Some(last)) = (self.first_30_s_tx_per_s, self.last_30_s_tx_per_s) {
            rows.push((
                "first / last 30 s",
                format!(
                    "{first:.0} / {last:.0} tx/s ({:+.1} %)",
                    self.last_over_first_30_s
                        .map_or(0.0, |ratio| (ratio - 1.0) * 100.0)
                ),
            ));
        }
        if let (Some(blocks), Some(view_changes)) = (self.blocks, self.view_changes) {
            rows.push(("blocks", format!("{blocks}, {view_changes} view changes")));
        }
        if let (Some(before), Some(in_run)) = (self.records_made_before, self.records_made_in_run) {
            rows.push((
                "records sealed and signed",
                format!("{before} before the run, {in_run} in it"),
            ));
        }
        if let (Some(per_s), Some(acknowledged), Some(committed), Some(lost)) = (
            self.records_committed_per_s,
            self.records_acknowledged,
            self.records_committed,
            self.records_lost,
        ) {
            rows.push(("records committed/s", format!("{per_s:.0}")));
            rows.push((
                "records",
                format!("{acknowledged} acknowledged, {committed} committed, {lost} lost"),
            ));
        }
        if let Some(flow) = self.record_flow_ms {
            rows.push((
                "record flow p50/p99",
                format!(
                    "{:.1} / {:.1} ms (consent request to record applied)",
                    flow.p50, flow.p99
                ),
            ));
        }
        rows.extend([
            (
                "latency p50/p95/p99/max",
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} ms ({})",
                    self.latency_ms.p50,
                    self.latency_ms.p95,
                    self.latency_ms.p99,
                    self.latency_ms.max,
                    self.latency_is
                ),
            ),
            (
                "CPU per tx",
                or_null(self.cpu_us_per_tx.map(|us| format!("{us:.0} µs"))),
            ),
            ("tx size stored", format!("{:.0} bytes", self.tx_bytes)),
            (
                "written per tx per validator",
                or_null(
                    self.write_bytes_per_tx_per_validator
                        .map(|b| format!("{b:.0} bytes")),
                ),
            ),
            (
                "write amplification",
                or_null(self.write_amplification.map(|a| format!("{a:.1}"))),
            ),
            (
                "handed to write calls",
                or_null(
                    self.call_write_bytes_per_tx_per_validator
                        .zip(self.call_write_amplification)
                        .map(|(b, a)| format!("{b:.0} bytes per tx per validator ({a:.1} x)")),
                ),
            ),
            (
                "written to the device",
                or_null(
                    self.device_write_bytes_per_tx_per_validator
                        .zip(self.device_write_amplification)
                        .map(|(b, a)| {
                            format!("{b:.0} bytes per tx per validator ({a:.1} x; whole machine)")
                        }),
                ),
            ),
            (
                "index bytes per tx per validator",
                or_null(
                    self.index_write_bytes_per_tx_per_validator
                        .map(|b| format!("{b:.0} bytes")),
                ),
            ),
            (
                "peak RSS per validator",
                or_null(
                    self.peak_rss_bytes_per_validator
                        .map(|b| format!("{:.0} MB", b as f64 / 1e6)),
                ),
            ),
            (
                "chain.db per validator",
                // The count before the run is not read from a store of an older schema (this
                // run migrates it): its size is then shown alone.
                or_null(self.chain_bytes_per_validator.map(
                    |b| match self.chain_transactions_before {
                        Some(before) => format!(
                            "{:.1} MB ({:.0} bytes per transaction on it)",
                            b as f64 / 1e6,
                            b as f64 / (before + self.committed).max(1) as f64
                        ),
                        None => format!("{:.1} MB", b as f64 / 1e6),
                    },
                )),
            ),
        ]);
        if let Some(ceiling) = &self.ceiling {
            rows.push((
                "ceiling tx/s",
                format!(
                    "{:.0} ({} transactions)",
                    ceiling.committed_tx_per_s, ceiling.committed
                ),
            ));
        }
        if let Some(efficiency) = self.efficiency {
            rows.push(("efficiency", format!("{efficiency:.2}")));
        }
        let width = rows.iter().map(|(name, _)| name.chars().count()).max();
        let mut table = String::new();
        for (name, value) in rows {
            let _ = writeln!(table, "{name:<width$}  {value}", width = width.unwrap_or(0));
        }
        table
    }

    /// The chart: committed tx/s (left axis) and p99 latency (right axis), a point a second.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 900.0;
        const HEIGHT: f64 = 420.0;
        const LEFT: f64 = 80.0;
        const RIGHT: f64 = 80.0;
        const TOP: f64 = 50.0;
        const BOTTOM: f64 = 60.0;
        const TX_COLOUR: &str = "#1f5fbf";
        const P99_COLOUR: &str = "#c0392b";
        let plot_width = WIDTH - LEFT - RIGHT;
        let plot_height = HEIGHT - TOP - BOTTOM;
        let last_t = self.series.last().map_or(1, |p| p.t_s.max(1)) as f64;
        let tx_top = nice_ceiling(self.series.iter().map(|p| p.committed_tx_per_s));
        let p99_top = nice_ceiling(self.series.iter().map(|p| p.p99_ms));
        let x = |t: f64| LEFT + t / last_t * plot_width;
        let y = |value: f64, top: f64| TOP + plot_height - value / top * plot_height;

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        );
        let title = format!(
            "medchain bench, {} mode, {} validators in {} process(es){}: {:.0} tx/s, p99 {:.1} ms",
            self.mode,
            self.validators,
            self.processes,
            if self.prefill > 0 {
                format!(", prefill {}", self.prefill)
            } else {
                String::new()
            },
            self.committed_tx_per_s,
            self.latency_ms.p99
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&title)
        );
        // Axes.
        let _ = writeln!(
            svg,
            r#"<path d="M{LEFT} {TOP} V{bottom} H{right} V{TOP}" fill="none" stroke="black"/>"#,
            bottom = TOP + plot_height,
            right = LEFT + plot_width,
        );
        for step in 0..=5 {
            let fraction = f64::from(step) / 5.0;
            let level = TOP + plot_height - fraction * plot_height;
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{level}" x2="{}" y2="{level}" stroke="#ddd"/>"##,
                LEFT + plot_width
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end" fill="{TX_COLOUR}">{}</text>"#,
                LEFT - 6.0,
                level + 4.0,
                compact(fraction * tx_top)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="start" fill="{P99_COLOUR}">{}</text>"#,
                LEFT + plot_width + 6.0,
                level + 4.0,
                compact(fraction * p99_top)
            );
        }
        let x_step = nice_step(last_t / 10.0);
        let mut t = 0.0;
        while t <= last_t + 1e-9 {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x(t),
                TOP + plot_height + 18.0,
                compact(t)
            );
            t += x_step;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"#,
            LEFT + plot_width / 2.0,
            HEIGHT - 16.0
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(20 {mid}) rotate(-90)" text-anchor="middle" fill="{TX_COLOUR}">committed tx/s</text>"#,
            mid = TOP + plot_height / 2.0
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate({} {mid}) rotate(90)" text-anchor="middle" fill="{P99_COLOUR}">p99 latency (ms)</text>"#,
            WIDTH - 20.0,
            mid = TOP + plot_height / 2.0
        );
        // When the load stopped, if the run went on committing after it.
        if self.elapsed_s > self.duration_s + 0.5 && self.duration_s < last_t {
            let at = x(self.duration_s);
            let _ = writeln!(
                svg,
                r##"<line x1="{at}" y1="{TOP}" x2="{at}" y2="{}" stroke="#888" stroke-dasharray="4 4"/><text x="{}" y="{}" fill="#555">load stops</text>"##,
                TOP + plot_height,
                at + 4.0,
                TOP + 32.0
            );
        }
        // The two series.
        for (name, colour, top, value) in [
            (
                "committed_tx_per_s",
                TX_COLOUR,
                tx_top,
                (|p: &Point| p.committed_tx_per_s) as fn(&Point) -> f64,
            ),
            ("p99_ms", P99_COLOUR, p99_top, |p: &Point| p.p99_ms),
        ] {
            let points: Vec<String> = self
                .series
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.t_s as f64), y(value(p), top)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline class="{name}" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                points.join(" ")
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{TX_COLOUR}">committed tx/s</text><text x="{}" y="{}" fill="{P99_COLOUR}">p99 latency (ms)</text>"#,
            LEFT + 10.0,
            TOP + 16.0,
            LEFT + 130.0,
            TOP + 16.0
        );
        svg.push_str("</svg>\n");
        svg
    }
}

/// The top of an axis showing `values`: the next 1, 2 or 5 times a power of ten (1 if empty).
fn nice_ceiling(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0f64, f64::max);
    if max <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|top| *top >= max)
        .unwrap_or(10.0 * power)
}

/// A step of 1, 2 or 5 times a power of ten, at least `at_least` (and at least 1).
fn nice_step(at_least: f64) -> f64 {
    nice_ceiling(std::iter::once(at_least.max(1.0)))
}

/// A tick label: whole numbers as they are, thousands as `12k`.
fn compact(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seconds: u64) -> BenchReport {
        let mut report = BenchReport {
            mode: "ledger",
            validators: 4,
            processes: 1,
            duration_s: seconds as f64,
            elapsed_s: seconds as f64,
            committed: 12_345,
            acknowledged: 12_345,
            committed_tx_per_s: 2_469.0,
            latency_ms: LatencyMs {
                p50: 10.0,
                p95: 15.0,
                p99: 17.9,
                max: 31.0,
            },
            tx_bytes: 600.0,
            series: (1..=seconds)
                .map(|t| Point {
                    t_s: t,
                    committed_tx_per_s: 2_000.0 + 100.0 * t as f64,
                    p99_ms: 10.0 + t as f64,
                })
                .collect(),
            ..BenchReport::default()
        };
        report.set_usage(&super::super::usage::Used {
            cpu: Duration::from_secs(2),
            write_bytes: Some(4 * 12_345 * 3_000),
            written_by_calls: Some(4 * 12_345 * 1_200),
            peak_rss_bytes: Some(400_000_000),
            device_write_bytes: Some(4 * 12_345 * 2_400),
        });
        report
    }

    #[test]
    fn bench_json_holds_every_figure_and_a_point_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let report = report(5);
        report.write(dir.path()).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("bench.json")).unwrap()).unwrap();
        for field in [
            "mode",
            "validators",
            "processes",
            "duration_s",
            "prefill",
            "committed",
            "acknowledged",
            "lost",
            "committed_tx_per_s",
            "latency_ms",
            "cpu_us_per_tx",
            "tx_bytes",
            "write_bytes_per_tx_per_validator",
            "write_amplification",
            "index_write_bytes_per_tx_per_validator",
            "peak_rss_bytes_per_validator",
            "efficiency",
            "last_over_first_30_s",
            "series",
        ] {
            assert!(
                json.get(field).is_some(),
                "bench.json lacks {field}: {json}"
            );
        }
        assert_eq!(json["committed"], 12_345);
        assert_eq!(json["latency_ms"]["p99"], 17.9);
        assert_eq!(json["latency_ms"]["max"], 31.0);
        // 2 s of CPU over 12,345 transactions; 3,000 bytes each at each of 4 validators.
        assert!((json["cpu_us_per_tx"].as_f64().unwrap() - 162.0).abs() < 1.0);
        assert_eq!(json["write_bytes_per_tx_per_validator"], 3_000.0);
        assert_eq!(json["write_amplification"], 5.0);
        assert_eq!(json["call_write_bytes_per_tx_per_validator"], 1_200.0);
        assert_eq!(json["call_write_amplification"], 2.0);
        assert_eq!(json["device_write_bytes_per_tx_per_validator"], 2_400.0);
        assert_eq!(json["device_write_amplification"], 4.0);
        assert_eq!(json["peak_rss_bytes_per_validator"], 100_000_000);
        assert!(json["index_write_bytes_per_tx_per_validator"].is_null());
        assert!(json["efficiency"].is_null());
        let series = json["series"].as_array().unwrap();
        assert_eq!(series.len(), 5);
        assert_eq!(series[4]["t_s"], 5);
        assert_eq!(series[4]["committed_tx_per_s"], 2_500.0);
        assert_eq!(series[4]["p99_ms"], 15.0);
    }

    /// The chain's size a transaction counts what it held before the run; a count not read
    /// (a store of an older schema, migrated by the run) leaves the size alone, not divided by
    /// the run's transactions only.
    #[test]
    fn the_chains_size_a_transaction_needs_the_count_before_the_run() {
        let mut report = report(5);
        report.chain_bytes_per_validator = Some(1_000 * (987_655 + 12_345));
        report.chain_transactions_before = Some(987_655);
        let table = report.table();
        assert!(
            table.contains("1000.0 MB (1000 bytes per transaction on it)"),
            "{table}"
        );
        report.chain_transactions_before = None;
        let table = report.table();
        let row = table
            .lines()
            .find(|line| line.starts_with("chain.db per validator"))
            .unwrap();
        assert!(row.ends_with(" 1000.0 MB"), "{row}");
    }

    #[test]
    fn the_chart_draws_both_series_a_point_a_second_with_labelled_axes() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = report(7);
        let mut ceiling = report.clone();
        ceiling.committed_tx_per_s = 4_938.0;
        report.set_ceiling(ceiling);
        assert_eq!(report.efficiency, Some(0.5));
        report.write(dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(
            !svg.contains("<script") && !svg.contains("href"),
            "nothing runs or is fetched"
        );
        for label in [
            "committed tx/s",
            "p99 latency (ms)",
            "time (s)",
            "2469 tx/s",
        ] {
            assert!(svg.contains(label), "no {label:?} in the chart");
        }
        for class in ["committed_tx_per_s", "p99_ms"] {
            let line = svg
                .lines()
                .find(|line| line.contains(&format!("class=\"{class}\"")))
                .unwrap();
            let points = line.split("points=\"").nth(1).unwrap().split('"').next();
            assert_eq!(points.unwrap().split(' ').count(), 7, "{line}");
        }
        // The axis tops are round: 2,700 tx/s at most -> 5k; 17 ms -> 20.
        assert!(svg.contains(">5000<") && svg.contains(">20<"), "{svg}");
        let table = report.table();
        assert!(
            table.contains("efficiency") && table.contains("0.50"),
            "{table}"
        );
        assert!(table.contains("write amplification") && table.contains("5.0"));
    }

    /// The first and last 30 s of the load, the drain's seconds after it left out; none in a
    /// run of a minute or less.
    #[test]
    fn a_long_runs_first_and_last_thirty_seconds_are_compared() {
        let mut short = report(60);
        short.set_flatness();
        assert_eq!(short.last_over_first_30_s, None);
        assert!(!short.table().contains("first / last 30 s"));
        let mut records = report(90);
        records.series_counts = Some("records");
        records.set_flatness();
        assert_eq!(
            records.first_30_s_tx_per_s, None,
            "records are not transactions"
        );
        let mut long = report(90);
        // The drain after the load: not counted.
        long.series.push(Point {
            t_s: 91,
            committed_tx_per_s: 1.0,
            p99_ms: 1.0,
        });
        long.set_flatness();
        // 2,000 + 100 t: the mean of t over 1..=30 is 15.5, over 60..=89 it is 74.5.
        assert_eq!(long.first_30_s_tx_per_s, Some(3_550.0));
        assert_eq!(long.last_30_s_tx_per_s, Some(9_450.0));
        let ratio = long.last_over_first_30_s.unwrap();
        assert!((ratio - 9_450.0 / 3_550.0).abs() < 1e-9);
        assert!(
            long.table().contains("3550 / 9450 tx/s (+166.2 %)"),
            "{}",
            long.table()
        );
    }

    /// Red team s44: a flat load of 1,000 tx/s for 61 s whose in-flight transactions (500)
    /// commit in the 0.15 s after it: `Series::finish` adds that short tail to second 61,
    /// which the last window leaves out.
    #[test]
    fn red_team_s44_a_short_drain_is_not_counted_in_the_last_window() {
        let mut series = node::load::Series::default();
        for tenth in 0..610u64 {
            series.add(Duration::from_millis(tenth * 100 + 50), 100, &[]);
        }
        series.add(Duration::from_millis(61_100), 500, &[]);
        let (seconds, _) = series.finish(Duration::from_millis(61_150));
        let mut flat = report(61);
        flat.series = seconds.iter().map(Point::from).collect();
        flat.set_flatness();
        assert_eq!(flat.first_30_s_tx_per_s, Some(1_000.0));
        assert_eq!(
            flat.last_30_s_tx_per_s,
            Some(1_000.0),
            "the drain counted in the load's last window"
        );
    }
}
