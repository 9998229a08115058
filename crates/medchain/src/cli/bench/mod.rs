//! `medchain bench`: committed transactions per second and commit latency under load, and the
//! ceiling of what the same validators commit with no protocol.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use node::load::{Load, LoadReport, MadeBefore, Progress, drive};
use node::offline::PrefillProgress;
use node::{NodeConfig, NodeHandle};

use super::node::start_validator;
use super::testnet::{Fleet, write_network};
use super::timing::TimingArgs;
use report::{BenchReport, LatencyMs, Point};
use usage::{Meter, Process, Used};

mod ceiling;
mod http;
mod report;
mod usage;

/// Loads a fresh cluster with signed records (every signature checked, every block fsynced)
/// and reports committed transactions per second, the latency from acknowledgement to commit,
/// CPU, bytes written and memory per transaction. Embedded by default (four validators, or
/// --validators); --processes runs them as processes talking TCP on loopback (`medchain node`
/// children and this process). --mode ceiling applies the same transactions with no protocol
/// instead: each validator checks and stores every block as it stores a committed one. --mode
/// http runs the seed's flow with remote consent over each validator's HTTP API instead.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  medchain bench --duration 10s                        # throughput, as fast as it goes
  medchain bench --rate 1000 --duration 20s            # latency at 1,000 tx/s
  medchain bench --processes 7 --duration 20s          # seven validator processes
  medchain bench --with-ceiling --out results/         # efficiency; bench.json and bench.svg
  medchain bench --prefill 1000000 --duration 2m       # on a chain of a million transactions
  medchain bench --mode http --duration 20s            # records over HTTP, remote consent")]
pub struct BenchArgs {
    /// What to measure: `ledger`, the validators committing the load by PBFT; `ceiling`, the
    /// same transactions, signed and sealed alike, in blocks certified by the validators' keys,
    /// applied by the same validators with no protocol (each checks every signature in batch
    /// and stores each block in one durable write, as it applies a committed block); `http`,
    /// the seed's flow over each validator's HTTP API, doctors and patients signed in, each
    /// record a consent request, the patient's approval on their device and an `add_record`.
    #[arg(long, value_enum, default_value_t = Mode::Ledger)]
    mode: Mode,
    /// Transactions per second to offer; omit to submit as fast as they are acknowledged.
    #[arg(long, value_name = "TX_PER_S")]
    rate: Option<u64>,
    /// How long to submit (ceiling: how long to apply blocks).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = node::parse_duration)]
    duration: Duration,
    /// Submitters in flight at once (without --rate); --mode http: clients, each a doctor's
    /// and a patient's kept-alive connection [default: 512; --mode http: 256]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Run the validators as N separate processes on loopback TCP (4 without a value).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "4",
          value_parser = clap::value_parser!(u16).range(1..=100))]
    processes: Option<u16>,
    /// Validators of the embedded cluster (and of the ceiling).
    #[arg(long, value_name = "N", default_value_t = 4, conflicts_with = "processes",
          value_parser = clap::value_parser!(u16).range(1..=100))]
    validators: u16,
    /// Put a chain of N transactions of the same load on every validator before measuring:
    /// blocks made here with real signatures and certificates (this bench holds every
    /// validator's key), so that a long chain is measured without waiting for it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    prefill: u64,
    /// Seal and sign the load's records before the measured run (enough for --rate, or for
    /// 10,000 tx/s without it, over --duration; written to a file in the data folder), so that
    /// the run's CPU and disk are the validators', as the ceiling's are: the clients'
    /// signatures and the homes' seals are made first (the homes' key services keep the data
    /// keys), then only submitted. Should the made ones run out, the submitters make the rest
    /// (the report counts both).
    #[arg(long)]
    premade: bool,
    /// After the run, apply as many transactions to the same validators with no protocol
    /// (as --mode ceiling) and report the efficiency: committed tx/s over the ceiling's.
    #[arg(long)]
    with_ceiling: bool,
    /// Write bench.json (every figure, and one point a second) and bench.svg (committed tx/s
    /// and p99 latency over time) into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Peer port of the first validator process (--processes); the others take the next ones.
    #[arg(long, value_name = "PORT", default_value_t = 17101)]
    peer_port: u16,
    /// API port of the first validator process (--processes); the others take the next ones.
    #[arg(long, value_name = "PORT", default_value_t = 15101)]
    api_port: u16,
    /// Where to create the cluster (default: a temporary directory, removed afterwards). The
    /// validators in the bench's own process log to DIR/bench.log (`RUST_LOG` chooses what; in
    /// a temporary directory they log to stderr, only with `RUST_LOG`), the others to node-1.log
    /// in their folders.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the validators' operator keys live (default: DATA_DIR.keys, beside it).
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Ledger,
    Ceiling,
    Http,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ledger => "ledger",
            Mode::Ceiling => "ceiling",
            Mode::Http => "http",
        }
    }
}

/// What `latency_ms` measures in ledger mode.
const LEDGER_LATENCY: &str = "acknowledged to committed at the accepting validator";

/// What `latency_ms` measures in http mode.
const HTTP_LATENCY: &str = "a record: add_record's answer to applied at the doctor's validator";

impl BenchArgs {
    fn validators(&self) -> usize {
        usize::from(self.processes.unwrap_or(self.validators))
    }

    fn describe(&self) -> String {
        let validators = self.validators();
        let how = match (self.mode, self.processes) {
            (Mode::Ceiling, _) => "ceiling (no protocol)".to_string(),
            (Mode::Http, _) => "embedded, each validator's HTTP API on loopback".to_string(),
            (Mode::Ledger, Some(n)) => format!("{n} processes on loopback TCP"),
            (Mode::Ledger, None) => "embedded".to_string(),
        };
        let offered = match (self.mode, self.rate) {
            (Mode::Ceiling, _) => "blocks applied".to_string(),
            (Mode::Http, _) => format!("{} clients, closed loop", self.http_clients()),
            (Mode::Ledger, None) => "as fast as acknowledged".to_string(),
            (Mode::Ledger, Some(rate)) => format!("{rate} tx/s offered"),
        };
        format!(
            "{how}, {validators} validators, batch window {}, max batch {}, {offered} for {}{}",
            humantime::format_duration(self.timing.batch_window),
            self.timing.max_batch,
            humantime::format_duration(self.duration),
            if self.prefill > 0 {
                format!(", on a chain prefilled with {} transactions", self.prefill)
            } else {
                String::new()
            }
        )
    }

    /// The figures every mode reports alike.
    fn report(&self, mode: Mode) -> BenchReport {
        BenchReport {
            mode: mode.name(),
            validators: self.validators(),
            processes: match (mode, self.processes) {
                (Mode::Ledger, Some(n)) => usize::from(n),
                _ => 1,
            },
            duration_s: self.duration.as_secs_f64(),
            rate: self.rate,
            batch_window_ms: report::ms(self.timing.batch_window),
            max_batch: self.timing.max_batch,
            ..BenchReport::default()
        }
    }

    /// The run's report from the load generator's, and what the processes used.
    fn ledger_report(&self, prefill: u64, load: &LoadReport, used: &Used) -> BenchReport {
        let mut report = BenchReport {
            prefill,
            elapsed_s: load.elapsed.as_secs_f64(),
            committed: load.committed,
            acknowledged: load.acknowledged,
            lost: load.lost,
            refused: Some(load.refused),
            refused_busy: Some(load.refused_busy),
            records_made_before: Some(load.made_before),
            records_made_in_run: Some(load.made_in_run),
            blocks: Some(load.blocks),
            view_changes: Some(load.view_changes),
            committed_tx_per_s: load.committed_per_second,
            latency_is: LEDGER_LATENCY,
            latency_ms: LatencyMs::from(load.commit_latency),
            tx_bytes: load.tx_bytes,
            series: load.series.iter().map(Point::from).collect(),
            ..self.report(Mode::Ledger)
        };
        report.set_usage(used);
        report
    }

    /// Records made before the run with `--premade`: a grant and a record each, for the
    /// offered rate over the run (or [`PREMADE_CLOSED_LOOP_TX_PER_S`]).
    fn premade_records(&self) -> u64 {
        let tx_per_s = self.rate.unwrap_or(PREMADE_CLOSED_LOOP_TX_PER_S);
        (tx_per_s as f64 * self.duration.as_secs_f64() / 2.0).ceil() as u64
    }

    /// Clients of `--mode http`.
    fn http_clients(&self) -> usize {
        self.concurrency.unwrap_or(256).max(1)
    }

    /// The report of a run over HTTP: transactions as in ledger mode (requests, grants and
    /// records), and the records apart.
    fn http_report(&self, prefill: u64, found: &http::HttpReport, used: &Used) -> BenchReport {
        let seconds = found.elapsed.as_secs_f64().max(1e-9);
        let mut report = BenchReport {
            prefill,
            elapsed_s: found.elapsed.as_secs_f64(),
            committed: found.committed,
            acknowledged: found.acknowledged,
            lost: found.lost,
            committed_tx_per_s: found.committed as f64 / seconds,
            latency_is: HTTP_LATENCY,
            latency_ms: LatencyMs::from(found.record_latency),
            tx_bytes: found.tx_bytes,
            series: found.series.iter().map(Point::from).collect(),
            series_counts: Some("records"),
            clients: Some(found.clients),
            records_acknowledged: Some(found.records_acknowledged),
            records_committed: Some(found.records_committed),
            records_lost: Some(found.records_lost),
            records_committed_per_s: Some(found.records_committed as f64 / seconds),
            cut_short: Some(found.refusals.clone()),
            committed_unacknowledged: Some(found.unacknowledged.clone()),
            record_flow_ms: Some(LatencyMs::from(found.flow_latency)),
            ..self.report(Mode::Http)
        };
        report.set_usage(used);
        report
    }

    /// Runs the load on the validators of `configs`: validator 0 in this process, the others
    /// as `medchain node` children.
    fn ledger_processes(
        &self,
        configs: &[(PathBuf, NodeConfig)],
        key_dir: &Path,
        load: &Load,
        bar: &ProgressBar,
    ) -> anyhow::Result<(LoadReport, Used)> {
        // Their logs in each validator's folder, node-1.log.
        let mut children = Fleet::new(&configs[1..], key_dir, false, true)?;
        let mut processes = vec![Process::This];
        for i in 0..children.len() {
            processes.push(Process::Child(children.start(i)?));
        }
        let first = &configs[0].1;
        let (operator_key, _) = ledger::master::MasterKey::from_key_file(
            &ledger::master::dev_key_path(key_dir, &first.name),
            &first.data_dir,
            false,
        )?;
        let runtime = super::service::runtime()?;
        let result = runtime.block_on(async {
            let node = start_validator(first, operator_key).await?;
            let handles = vec![node.handle().clone()];
            let measured = measure(&handles, load, bar, processes, &first.data_dir).await;
            tokio::task::spawn_blocking(move || node.stop()).await.ok();
            measured
        });
        children.stop_all();
        result
    }

    /// Puts a chain of `--prefill` transactions on every validator of the network in `dir`;
    /// the transactions it holds.
    fn prefill(&self, dir: &Path, key_dir: &Path) -> anyhow::Result<u64> {
        let bar = progress_bar(self.prefill, "prefill {bar:40} {pos}/{len} {msg}");
        let prefilled = node::offline::prefill(
            self.cluster_options(dir, key_dir),
            self.prefill,
            |progress| match progress {
                PrefillProgress::Stored(stored) => {
                    bar.set_position(stored);
                    bar.set_message("transactions");
                }
                PrefillProgress::KeysWaiting(waiting) => {
                    bar.set_message(format!("on chain; key services fetching {waiting} keys"));
                }
            },
        )?;
        bar.finish_and_clear();
        println!(
            "prefilled every validator's chain with {} transactions; the key services fetched \
             {} keys of it from each other",
            prefilled.transactions, prefilled.keys_fetched
        );
        if prefilled.keys_waiting > 0 {
            println!(
                "warning: the key services still wait for {} keys of the prefilled chain (none \
                 came for a minute); they go on asking during the run",
                prefilled.keys_waiting
            );
        }
        Ok(prefilled.transactions)
    }

    /// The embedded cluster of the network in `dir`, its operator keys in `key_dir`.
    fn cluster_options(&self, dir: &Path, key_dir: &Path) -> node::ClusterOptions {
        let mut options = node::ClusterOptions::new(dir, self.timing.timing());
        options.key_dir = key_dir.to_path_buf();
        options
    }

    /// Runs the load on an embedded cluster of the network in `dir`.
    fn ledger_embedded(
        &self,
        dir: &Path,
        key_dir: &Path,
        load: &Load,
        bar: &ProgressBar,
    ) -> anyhow::Result<(LoadReport, Used)> {
        let cluster = node::Cluster::start(self.cluster_options(dir, key_dir))?;
        let runtime = super::service::runtime()?;
        runtime.block_on(measure(
            &cluster.handles(),
            load,
            bar,
            vec![Process::This],
            dir,
        ))
    }
}

/// The rate a closed loop's records are made for with `--premade`: above what this machine
/// commits, so that the made ones last the run (made for 10,000, they ran out 93 s into a
/// 120 s run at 12,900 tx/s, and the run's end made its records as it went: BENCHMARKS.md
/// "thirty-ninth").
const PREMADE_CLOSED_LOOP_TX_PER_S: u64 = 20_000;

/// The longest run with `--premade`: its records, made before it, must still be valid at its
/// end (`ledger::tx::SIGNATURE_LIFE_MS`, an hour, with time to make them and to settle).
const PREMADE_LONGEST_RUN: Duration = Duration::from_secs(30 * 60);

/// The file in the data folder that `--premade` records wait in during the run.
const PREMADE_FILE: &str = "premade-records.bin";

/// How long a run may take to commit what was acknowledged once the load stops.
const SETTLE: Duration = Duration::from_secs(120);

/// Drives `handles` with `load`, showing progress on `bar`; what `processes`, and the disk
/// holding `data_dir`, used from the start of the measured run (after the population's
/// enrollment) to its last commit (not the audit of its blocks after).
async fn measure(
    handles: &[NodeHandle],
    load: &Load,
    bar: &ProgressBar,
    processes: Vec<Process>,
    data_dir: &Path,
) -> anyhow::Result<(LoadReport, Used)> {
    let (mut meter, mut used) = (None, Used::default());
    let on_progress = |progress: Progress| match progress {
        Progress::Making { made, of } => {
            bar.set_message(format!(
                "sealing and signing records before the run: {made}/{of}"
            ));
        }
        Progress::Started => {
            // The peak of the run, not of starting the validators.
            processes.iter().for_each(|p| {
                p.reset_peak_rss();
            });
            meter = Some(Meter::start(processes.clone(), data_dir));
        }
        Progress::Running {
            elapsed,
            acknowledged,
        } => {
            bar.set_position(elapsed.as_millis() as u64);
            bar.set_message(format!("{acknowledged} acknowledged"));
        }
        Progress::Settled => used = meter.as_ref().map(Meter::used).unwrap_or_default(),
    };
    let report = drive(handles, load, SETTLE, on_progress).await?;
    Ok((report, used))
}

/// A progress bar of `length` steps, its position shown as `{pos}` in `template`.
pub(super) fn progress_bar(length: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

impl super::Run for BenchArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.mode != Mode::Ceiling
                || (self.processes.is_none() && !self.with_ceiling && self.rate.is_none()),
            "--mode ceiling applies blocks as fast as the validators store them, in this \
             process, with no protocol: use --validators, not --processes, --with-ceiling or \
             --rate"
        );
        anyhow::ensure!(
            self.mode == Mode::Ledger || !self.premade,
            "--premade makes the records of --mode ledger before its run: the ceiling makes its \
             own outside what it times, and --mode http's clients make theirs over HTTP"
        );
        anyhow::ensure!(
            !self.premade || self.duration <= PREMADE_LONGEST_RUN,
            "--premade's records are valid for an hour from when they are made (as every \
             signature): use --duration 30m at most with --premade"
        );
        anyhow::ensure!(
            self.mode != Mode::Http
                || (self.processes.is_none() && !self.with_ceiling && self.rate.is_none()),
            "--mode http runs embedded validators, each serving its API in this process, in a \
             closed loop: use --validators and --concurrency, not --processes, --with-ceiling \
             or --rate"
        );
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
        // The validators in this process (all of them embedded, validator 0 with --processes)
        // log to DIR/bench.log when DIR is kept (--data-dir): on stderr they would cut through
        // the bar and the table. In a temporary DIR, to stderr if RUST_LOG asks.
        if self.data_dir.is_some() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let log = ledger::files::private_log_file(&dir.join("bench.log"))?;
            super::service::init_logging_to(std::sync::Mutex::new(log), false);
        } else if std::env::var_os("RUST_LOG").is_some() {
            super::service::init_logging();
        }
        // Every mode's network: genesis, keys and a node.toml per validator (used by processes).
        let configs = write_network(
            &dir,
            &key_dir,
            self.validators(),
            self.peer_port,
            self.api_port,
            &self.timing,
            false,
        )?;
        let prefill = if self.prefill > 0 {
            self.prefill(&dir, &key_dir)?
        } else {
            0
        };
        let first_dir = configs.first().and_then(|(path, _)| path.parent());
        let chain_before = first_dir.and_then(chain_transactions);
        let mut report = match self.mode {
            Mode::Ledger => {
                let load = Load {
                    rate: self.rate,
                    duration: self.duration,
                    concurrency: self.concurrency.unwrap_or(512),
                    made_before: self.premade.then(|| MadeBefore {
                        records: self.premade_records(),
                        file: dir.join(PREMADE_FILE),
                    }),
                };
                let bar = progress_bar(
                    self.duration.as_millis() as u64,
                    "{bar:40} {elapsed_precise} {msg}",
                );
                let (load_report, used) = if self.processes.is_some() {
                    self.ledger_processes(&configs, &key_dir, &load, &bar)?
                } else {
                    self.ledger_embedded(&dir, &key_dir, &load, &bar)?
                };
                bar.finish_and_clear();
                print_load(&load_report);
                self.ledger_report(prefill, &load_report, &used)
            }
            Mode::Http => {
                let bar = progress_bar(
                    self.duration.as_millis() as u64,
                    "{bar:40} {elapsed_precise} {msg}",
                );
                let load = http::HttpLoad {
                    clients: self.http_clients(),
                    duration: self.duration,
                    batch_window: self.timing.batch_window,
                    settle: SETTLE,
                };
                let (found, used) =
                    http::run(&dir, self.cluster_options(&dir, &key_dir), &load, &bar)?;
                bar.finish_and_clear();
                http::print(&found);
                self.http_report(prefill, &found, &used)
            }
            Mode::Ceiling => ceiling::run(
                &dir,
                &key_dir,
                ceiling::Limit::Duration(self.duration),
                BenchReport {
                    prefill,
                    ..self.report(Mode::Ceiling)
                },
            )?,
        };
        // The chain's size on each validator's disk (they all hold the same chain).
        report.chain_bytes_per_validator = first_dir.and_then(chain_bytes);
        report.chain_transactions_before = chain_before;
        if self.with_ceiling {
            let ceiling = ceiling::run(
                &dir,
                &key_dir,
                ceiling::Limit::Transactions(report.committed),
                BenchReport {
                    prefill: prefill + report.committed,
                    ..self.report(Mode::Ceiling)
                },
            )?;
            report.set_ceiling(ceiling);
        }
        report.set_flatness();
        print!("{}", report.table());
        if let Some(out) = &self.out {
            report.write(out)?;
            println!(
                "wrote {} and {}",
                out.join("bench.json").display(),
                out.join("bench.svg").display()
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The entries of the chain in the validator folder `dir`: none before its first start;
/// `None` when it cannot be read here (a store of an older schema, which its node migrates
/// when it starts).
fn chain_transactions(dir: &Path) -> Option<u64> {
    let path = dir.join("chain.db");
    if !path.exists() {
        return Some(0);
    }
    ledger::Reader::open(&path)
        .and_then(|reader| ledger::Queries::transaction_count(&reader))
        .ok()
}

/// The bytes of the chain in the validator folder `dir`: `chain.db` and its WAL.
fn chain_bytes(dir: &Path) -> Option<u64> {
    let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len());
    let main = size("chain.db").ok()?;
    Some(main + size("chain.db-wal").unwrap_or(0))
}

/// The load generator's own figures, beyond the table's.
fn print_load(report: &LoadReport) {
    println!(
        "{} blocks; {} view changes; {} refused ({} as busy); grant latency ({} to applied \
         at the patient's home): p50 {:.1} ms, p99 {:.1} ms",
        report.blocks,
        report.view_changes,
        report.refused,
        report.refused_busy,
        if report.made_before > 0 {
            "first submitted, made before the run,"
        } else {
            "seal started"
        },
        report::ms(report.grant_latency.p50),
        report::ms(report.grant_latency.p99),
    );
    let keys = &report.keys;
    println!(
        "key service: {} keys received, {} served; refused {} wrong, {} reused, {} unentitled; \
         requests {} dropped, {} busy ({} while catching up), {} not entitled; answers {} dropped, {} late",
        keys.keys_received,
        keys.keys_served,
        keys.keys_refused_wrong,
        keys.keys_refused_reused,
        keys.keys_refused_unentitled,
        keys.keys_requests_dropped,
        keys.keys_requests_busy,
        keys.keys_requests_busy_behind,
        keys.keys_requests_not_entitled,
        keys.keys_answers_dropped,
        keys.keys_answers_late,
    );
}
