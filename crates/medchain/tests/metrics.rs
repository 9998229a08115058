//! `GET /metrics` on four real `medchain node` processes (issue 11, "Observability"): after a
//! load of records commits, each node's scrape parses as Prometheus (OpenMetrics) text and its
//! counters agree with facts read elsewhere: the chain's height and transactions, the node's
//! own `/api/metrics`, the histogram of commit latency, the store's writes, the HTTP routes.
mod common_net;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common_net::{Load, Net, http, raw_get, wait_committed, wait_for};

const PROGRESS: Duration = Duration::from_secs(30);

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: the families' declared types and every sample.
#[derive(Debug)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of `name` with exactly the labels `labels` (panics if absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape"))
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// A small parser of the OpenMetrics text format, strict where a wrong exposition would show:
/// every sample belongs to a family declared by `# TYPE`, label values are quoted and
/// escaped, values are numbers, and the text ends with `# EOF`.
fn parse(text: &str) -> Result<Scrape, String> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        if ended {
            return Err(format!("a line after # EOF: {line}"));
        }
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (keyword, family) = (words.next(), words.next());
            match (keyword, family) {
                (Some("TYPE"), Some(family)) => {
                    let kind = words.next().ok_or(format!("no type in {line}"))?;
                    if !["counter", "gauge", "histogram", "info", "unknown"].contains(&kind) {
                        return Err(format!("unknown type {kind}"));
                    }
                    types.insert(family.to_string(), kind.to_string());
                }
                (Some("HELP" | "UNIT"), Some(_)) => {}
                _ => return Err(format!("a bad comment: {line}")),
            }
            continue;
        }
        let (name_and_labels, value) =
            line.rsplit_once(' ').ok_or(format!("no value in {line}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value of {line} is not a number"))?;
        let (name, labels) = match name_and_labels.split_once('{') {
            None => (name_and_labels.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?;
                (name.to_string(), parse_labels(body)?)
            }
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("a bad metric name {name}"));
        }
        let family = [
            "_total", "_bucket", "_count", "_sum", "_created", "_info", "",
        ]
        .iter()
        .find_map(|suffix| {
            name.strip_suffix(suffix)
                .filter(|base| types.contains_key(*base))
        })
        .ok_or(format!("{name} belongs to no declared family"))?;
        if types[family] == "counter" && !name.ends_with("_total") && !name.ends_with("_created") {
            return Err(format!("counter sample {name} lacks _total"));
        }
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    if !ended {
        return Err("no # EOF".into());
    }
    Ok(Scrape { types, samples })
}

fn parse_labels(body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return Err(format!("label {key} is not quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    _ => return Err(format!("a bad escape in label {key}")),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err(format!("label {key} is not closed")),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            Some(',') | None => {}
            Some(c) => return Err(format!("unexpected {c} after label")),
        }
    }
    Ok(labels)
}

/// `GET /metrics` without any credential: the status, content type and body.
fn scrape(addr: SocketAddr) -> (u16, String, String) {
    let (head, body) = raw_get(addr, "/metrics", &addr.to_string());
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    // The body is sent whole with a content-length (no chunking on a small answer).
    (status, content_type, body)
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    assert!(parse("# TYPE a counter\na_total 1\n# EOF\n").is_ok());
    assert!(parse("# TYPE a counter\na_total 1\n").is_err(), "no EOF");
    assert!(parse("b_total 1\n# EOF\n").is_err(), "undeclared");
    assert!(
        parse("# TYPE a counter\na 1\n# EOF\n").is_err(),
        "no _total"
    );
    assert!(
        parse("# TYPE a gauge\na{x=1} 1\n# EOF\n").is_err(),
        "unquoted"
    );
    assert!(
        parse("# TYPE a gauge\na{x=\"1\"} one\n# EOF\n").is_err(),
        "not a number"
    );
    let scrape = parse("# TYPE a gauge\na{x=\"q\\\"\",y=\"2\"} 3.5\n# EOF\n").unwrap();
    assert_eq!(scrape.value("a", &[("x", "q\""), ("y", "2")]), 3.5);
}

#[test]
fn four_nodes_expose_counters_that_agree_with_the_chain() {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let load = Load::start(&net, vec![0, 1, 2, 3], "metrics", Duration::from_millis(60));
    wait_for(PROGRESS, "records acknowledged", || {
        (load.count() >= 12).then_some(())
    });
    let (acks, _) = load.finish();
    wait_committed(&net, &acks, PROGRESS, "the records to commit");
    let (height, _) = net.wait_converged(PROGRESS);
    assert!(height > 0);

    // Transactions on chain above genesis, from the block explorer.
    let token = net.tokens[0].clone();
    let mut on_chain = 0u64;
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/blocks?limit=100&before={b}"),
            None => "/api/blocks?limit=100".to_string(),
        };
        let (status, page) = http(net.apis()[0], "GET", &path, Some(&token), None).expect("blocks");
        assert_eq!(status, 200, "{page}");
        for block in page["blocks"].as_array().unwrap() {
            if block["height"].as_u64().unwrap() > 0 {
                on_chain += block["tx_count"].as_u64().unwrap();
            }
        }
        match page["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert!(on_chain >= 2 * acks.len() as u64, "grants and records");

    let (mut pre_prepares_sent, mut pre_prepares_received) = (0.0, 0.0);
    let acked_at = |node: usize| acks.iter().filter(|a| a.node == node).count() as f64;
    for (i, api) in net.apis().into_iter().enumerate() {
        let (status, content_type, body) = scrape(api);
        assert_eq!(status, 200, "anyone may scrape: {body}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let m = parse(&body).unwrap_or_else(|e| panic!("node {i}: {e}\n{body}"));
        assert_eq!(m.types["medchain_commit_latency_seconds"], "histogram");

        let blocks = m.value("medchain_committed_blocks_total", &[]);
        assert_eq!(blocks, height as f64, "node {i}: every block since start");
        assert_eq!(
            m.value("medchain_committed_transactions_total", &[]),
            on_chain as f64,
            "node {i}: the transactions on chain"
        );
        assert_eq!(m.value("medchain_height", &[]), height as f64);
        assert_eq!(m.value("medchain_pending_transactions", &[]), 0.0);
        // Every block was proposed in sight of every node (backups from the pre-prepare they
        // received), unless it came by state transfer or through a new view.
        let latencies = m.value("medchain_commit_latency_seconds_count", &[]);
        let transferred = m.value("medchain_state_transfer_blocks_total", &[]);
        if m.value("medchain_view_changes_total", &[]) == 0.0 {
            assert_eq!(
                latencies + transferred,
                blocks,
                "node {i}: one latency a block"
            );
        } else {
            assert!(latencies + transferred <= blocks);
        }
        assert!(m.value("medchain_commit_latency_seconds_sum", &[]) > 0.0);
        let inf = m.value("medchain_commit_latency_seconds_bucket", &[("le", "+Inf")]);
        assert_eq!(inf, latencies, "the +Inf bucket holds every observation");
        // A block append per block, each of some bytes.
        assert_eq!(
            m.value("medchain_store_write_seconds_count", &[("write", "block")]),
            blocks
        );
        assert!(m.value("medchain_store_written_bytes_total", &[("write", "block")]) > 0.0);
        assert!(
            m.value(
                "medchain_store_written_bytes_total",
                &[("write", "protocol")]
            ) > 0.0
        );
        // Consensus traffic both ways: the primary pre-prepares, the backups prepare (§4.2).
        let sent = |kind| m.value("medchain_messages_sent_total", &[("kind", kind)]);
        let received = |kind| m.value("medchain_messages_received_total", &[("kind", kind)]);
        assert!(received("prepare") > 0.0 && received("commit") > 0.0);
        assert!(sent("commit") > 0.0);
        assert!(sent("pre_prepare") > 0.0 || sent("prepare") > 0.0);
        pre_prepares_sent += sent("pre_prepare");
        pre_prepares_received += received("pre_prepare");
        assert_eq!(
            m.value(
                "medchain_messages_rejected_total",
                &[("reason", "unauthentic")]
            ),
            0.0
        );
        // The records acknowledged here, by route template; no raw path is a label.
        assert!(
            m.value(
                "medchain_http_requests_total",
                &[("route", "/api/add_record"), ("status", "200")]
            ) >= acked_at(i)
        );
        assert!(
            m.find(
                "medchain_http_requests_total",
                &[("route", "/api/tx/{id}"), ("status", "200")]
            )
            .is_some()
                || acked_at(i) == 0.0
        );
        for sample in m.all("medchain_http_requests_total") {
            let route = &sample.labels["route"];
            assert!(
                !route
                    .split('/')
                    .any(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit())),
                "a raw path as a label: {route}"
            );
        }

        // `/api/metrics` reads the same counters.
        let (status, api) =
            http(api, "GET", "/api/metrics", Some(&net.tokens[i]), None).expect("/api/metrics");
        assert_eq!(status, 200, "{api}");
        assert_eq!(api["latest"]["success_blocks"].as_f64(), Some(blocks));
        assert_eq!(
            api["latest"]["attempted_blocks"].as_f64(),
            Some(m.value("medchain_proposed_blocks_total", &[]))
        );
    }
    // A broadcast counts once per peer: what was sent arrived, but for frames dropped while a
    // channel was still being set up.
    assert!(pre_prepares_received > 0.0);
    assert!(pre_prepares_received <= pre_prepares_sent);
    net.stop_all();
}
