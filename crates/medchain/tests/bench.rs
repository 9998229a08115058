//! `medchain bench` as a person runs it: a real cluster under load for two seconds (and the
//! ceiling of the same validators with no protocol), its figures in `bench.json` and its chart
//! in `bench.svg`.
mod common_cli;

use std::path::Path;

use common_cli::{medchain, text};
use serde_json::Value;

/// The `bench.json` a run wrote into `out`.
fn bench_json(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("bench.json")).expect("bench.json"))
        .unwrap_or_else(|e| panic!("bench.json: {e}"))
}

/// Runs `medchain bench --duration 2s --batch-window 10ms --out DIR/out` with `args`; the
/// bench.json it wrote, after checking what every run must show.
fn bench(dir: &Path, args: &[&str]) -> Value {
    let out = dir.join("out");
    let data = dir.join("data");
    let mut all = vec![
        "bench",
        "--duration",
        "2s",
        "--batch-window",
        "10ms",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let output = medchain(&all, None);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    for figure in [
        "committed tx/s",
        "latency p50/p95/p99/max",
        "write amplification",
    ] {
        assert!(
            printed.contains(figure),
            "the table has no {figure:?}: {printed}"
        );
    }
    let json = bench_json(&out);
    let number = |field: &str| {
        json[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is not a number: {json}"))
    };
    let committed = number("committed");
    assert!(committed > 0.0, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
    // Every acknowledged transaction committed (none lost). More may commit: over HTTP a step
    // answered with a refusal or an error may still commit its transaction.
    assert!(number("acknowledged") <= committed, "{json}");
    assert!(number("committed_tx_per_s") > 0.0, "{json}");
    let latency = |p: &str| json["latency_ms"][p].as_f64().unwrap();
    assert!(
        0.0 < latency("p50")
            && latency("p50") <= latency("p95")
            && latency("p95") <= latency("p99")
            && latency("p99") <= latency("max"),
        "{json}"
    );
    assert!(number("cpu_us_per_tx") > 0.0, "{json}");
    // A grant or a record: a few hundred bytes, sealed and signed.
    assert!((200.0..4_000.0).contains(&number("tx_bytes")), "{json}");
    assert!(number("write_bytes_per_tx_per_validator") > 0.0, "{json}");
    assert!(number("write_amplification") > 0.0, "{json}");
    // What reached the disk holding the data (null, with the reason, on a tmpfs or overlay).
    match json["device_write_bytes_per_tx_per_validator"].as_f64() {
        Some(bytes) => assert!(
            bytes > 0.0 && number("device_write_amplification") > 0.0,
            "{json}"
        ),
        None => assert!(
            json["why_null"]["device_write_bytes_per_tx_per_validator"].is_string(),
            "{json}"
        ),
    }
    assert!(json["index_write_bytes_per_tx_per_validator"].is_null());
    assert!(json["why_null"]["index_write_bytes_per_tx_per_validator"].is_string());
    assert!(number("peak_rss_bytes_per_validator") > 1e6, "{json}");
    assert!(number("chain_bytes_per_validator") > 1e5, "{json}");
    let series = json["series"].as_array().unwrap();
    assert!(!series.is_empty(), "{json}");
    let in_series: f64 = series
        .iter()
        .map(|p| p["committed_tx_per_s"].as_f64().unwrap())
        .sum();
    assert!(in_series > 0.0, "{json}");
    let svg = std::fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(
        svg.contains("<polyline class=\"committed_tx_per_s\""),
        "{svg}"
    );
    json
}

#[test]
fn a_ledger_run_reports_every_figure_and_its_efficiency_against_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let json = bench(dir.path(), &["--with-ceiling"]);
    assert_eq!(json["mode"], "ledger");
    assert!(json["blocks"].as_u64().is_some_and(|b| b > 0), "{json}");
    assert!(json["view_changes"].is_u64(), "{json}");
    assert!(
        json["refused_busy"].as_u64() <= json["refused"].as_u64(),
        "{json}"
    );
    assert_eq!(
        (json["validators"].as_u64(), json["processes"].as_u64()),
        (Some(4), Some(1))
    );
    let ceiling = &json["ceiling"];
    assert_eq!(ceiling["mode"], "ceiling", "{json}");
    // As many transactions as the run committed (rounded up to a whole grant and record).
    let (run, applied) = (
        json["committed"].as_u64().unwrap(),
        ceiling["committed"].as_u64().unwrap(),
    );
    assert!(applied >= run && applied <= run + 1, "{json}");
    let efficiency = json["efficiency"].as_f64().unwrap();
    let expected = json["committed_tx_per_s"].as_f64().unwrap()
        / ceiling["committed_tx_per_s"].as_f64().unwrap();
    assert!((efficiency - expected).abs() < 1e-9, "{json}");
}

#[test]
fn the_ceiling_applies_the_load_with_no_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let json = bench(
        dir.path(),
        &[
            "--mode",
            "ceiling",
            "--validators",
            "4",
            "--max-batch",
            "200",
        ],
    );
    assert_eq!(json["mode"], "ceiling");
    assert!(json["efficiency"].is_null(), "{json}");
    assert!(json["duration_s"].as_f64().unwrap() >= 2.0, "{json}");
}

#[test]
fn validators_as_processes_are_metered_each() {
    let dir = tempfile::tempdir().unwrap();
    // Ports of this test run's own, so that two runs of the suite do not meet.
    let base = 20_000 + (std::process::id() % 4_000) as u16 * 10;
    let (peer, api) = (base.to_string(), (base + 5).to_string());
    // Its records made before the run (`--premade`): 500 tx/s over 2 s, 500 records.
    let json = bench(
        dir.path(),
        &[
            "--processes",
            "--peer-port",
            &peer,
            "--api-port",
            &api,
            "--premade",
            "--rate",
            "500",
        ],
    );
    assert_eq!(
        (json["validators"].as_u64(), json["processes"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(json["records_made_before"], 500, "{json}");
    assert!(json["records_made_in_run"].is_u64(), "{json}");
    let made_file = dir.path().join("data").join("premade-records.bin");
    assert!(!made_file.exists(), "the made records' file is removed");
    // Validator 0 runs in the bench's process: its log is DIR/bench.log, private, plain text.
    let log_path = dir.path().join("data").join("bench.log");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&log_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("chain verified"), "{log}");
    assert!(log.contains("validator stopped"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a file: {log}");
}

/// A prefilled chain is a real one: every block certified by a quorum of the validators' keys,
/// every transaction's signature valid, and the same at every validator (`medchain verify`),
/// with the blocks the ceiling applied after it on top; the key services hold every key of it.
#[test]
fn a_prefilled_chain_verifies_at_every_validator() {
    let dir = tempfile::tempdir().unwrap();
    let output = medchain(
        &[
            "bench",
            "--mode",
            "ceiling",
            "--prefill",
            "3000",
            "--duration",
            "1s",
            "--max-batch",
            "500",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ],
        None,
    );
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("prefilled every validator's chain with 3000 transactions"),
        "{printed}"
    );
    assert!(
        !printed.contains("still wait for"),
        "every key in place: {printed}"
    );
    assert!(
        printed.contains("fetched 0 keys of it"),
        "kept where they were made, none fetched: {printed}"
    );
    let json = bench_json(&dir.path().join("out"));
    assert_eq!(json["prefill"], 3000, "{json}");
    // Read from the first validator's chain before the run: the prefill, enrollment included.
    assert_eq!(json["chain_transactions_before"], 3000, "{json}");
    assert!(json["committed"].as_u64().unwrap() > 0, "{json}");
    let verified = medchain(
        &[
            "verify",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        None,
    );
    let said = text(&verified);
    assert!(verified.status.success(), "{said}");
    // 3,000 prefilled (enrollment included), then the ceiling's enrollment and blocks.
    let total = 3000 + 220 + json["committed"].as_u64().unwrap();
    assert!(
        said.contains(&total.to_string()),
        "{total} transactions: {said}"
    );
}

/// The ceiling's records keep their data keys at their homes, as the load's do: a network
/// the ceiling ran on is one whose key services, at their next start, find every key they are
/// entitled to (here the prefill's wait for the keys, which says how many it still waits for
/// when none comes for a minute). Before, the ceiling's keys were kept nowhere and every later
/// start wanted them from every peer for good.
#[test]
fn the_ceiling_leaves_no_key_held_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let mut all = vec!["bench", "--data-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        let output = medchain(&all, None);
        let printed = text(&output);
        assert!(output.status.success(), "{printed}");
        printed
    };
    run(&[
        "--mode",
        "ceiling",
        "--duration",
        "1s",
        "--max-batch",
        "500",
    ]);
    let printed = run(&["--prefill", "500", "--duration", "1s", "--max-batch", "500"]);
    assert!(
        !printed.contains("still wait for"),
        "every key of the ceiling's records in place: {printed}"
    );
    assert!(
        printed.contains("fetched 0 keys of it"),
        "the prefill's keys kept where they were made, none fetched: {printed}"
    );
}

/// A chain prefilled past the watermarks (more blocks than two checkpoint intervals, built
/// outside the protocol, so no replica ever sent those checkpoints) goes on: each replica
/// vouches again for the last checkpoint it executed and the window moves (`pbft::Restored`'s
/// `executed_checkpoint`). Before, the ledger load's first block never committed.
#[test]
fn a_chain_prefilled_past_the_watermarks_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let output = medchain(
        &[
            "bench",
            "--prefill",
            "3000",
            "--max-batch",
            "20",
            "--duration",
            "1s",
            "--batch-window",
            "10ms",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ],
        None,
    );
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    let json = bench_json(&dir.path().join("out"));
    assert!(json["committed"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
}

/// `--mode http`: the seed's flow over each validator's API, doctors and patients signed in,
/// each record a consent request, the patient's approval signed on their device and an
/// `add_record`: records commit, none is lost, and bench.json says so.
#[test]
fn the_seed_flow_over_http_commits_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let json = bench(dir.path(), &["--mode", "http", "--concurrency", "8"]);
    assert_eq!(json["mode"], "http");
    assert_eq!(json["clients"], 8, "{json}");
    let records = |field: &str| {
        json[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {json}"))
    };
    assert!(records("records_committed") > 0, "{json}");
    assert_eq!(records("records_lost"), 0, "{json}");
    assert_eq!(
        records("records_committed"),
        records("records_acknowledged"),
        "{json}"
    );
    // Three transactions a record: the request, the grant and the record.
    assert!(
        records("committed") >= 3 * records("records_committed"),
        "{json}"
    );
    assert!(
        json["records_committed_per_s"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert_eq!(json["series_counts"], "records", "{json}");
    // Every committed transaction is accounted for: acknowledged, or a step's that the API
    // answered with a refusal or an error (and the flow was cut short there). Nothing the
    // clients did not ask for commits.
    let total = |field: &str| -> u64 {
        json[field]
            .as_object()
            .unwrap_or_else(|| panic!("{field}: {json}"))
            .values()
            .map(|count| count.as_u64().unwrap())
            .sum()
    };
    let unacknowledged = total("committed_unacknowledged");
    assert_eq!(
        records("committed"),
        records("acknowledged") + unacknowledged,
        "{json}"
    );
    assert!(unacknowledged <= total("cut_short"), "{json}");
    let flow = &json["record_flow_ms"];
    assert!(
        flow["p50"].as_f64().unwrap() >= json["latency_ms"]["p50"].as_f64().unwrap(),
        "a whole flow takes longer than its last step: {json}"
    );
}

/// Settings that do not go together are refused before anything is made, with what to use.
#[test]
fn premade_records_are_refused_outside_the_ledger_mode() {
    for mode in ["ceiling", "http"] {
        let output = medchain(&["bench", "--mode", mode, "--premade"], None);
        let printed = text(&output);
        assert!(!output.status.success(), "{printed}");
        assert!(
            printed.contains("--premade makes the records of --mode ledger"),
            "{printed}"
        );
        assert_eq!(printed.trim().lines().count(), 1, "one line: {printed}");
    }
    // Its records would expire before a longer run's end.
    let output = medchain(&["bench", "--premade", "--duration", "31m"], None);
    let printed = text(&output);
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("--duration 30m at most"), "{printed}");
}
