//! `--log-format json` (issue 11): a validator's stderr is one JSON object a line, with a line
//! per committed block (ids, counts and heights, never content) and per view change, and
//! validators started by `serve` log the same way.
mod common_net;

use std::net::{Ipv4Addr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use common_net::{Load, Net, http, medchain, wait_for};

#[test]
fn serve_logs_json_lines_with_one_per_committed_block() {
    let root = tempfile::tempdir().expect("tempdir");
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let log = root.path().join("serve.log");
    let mut child = medchain()
        .args([
            "serve",
            "--demo",
            "--batch-window",
            "10ms",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg("--addr")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("run medchain serve");
    let lines = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // A line still being written is read next time.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    };
    let run = std::panic::catch_unwind(|| {
        wait_for(Duration::from_secs(60), "serve to answer", || {
            matches!(http(addr, "GET", "/healthz", None, None), Ok((200, _))).then_some(())
        });
        // The demo's enrolments commit blocks at start.
        let block = wait_for(Duration::from_secs(30), "a committed block's line", || {
            lines()
                .into_iter()
                .find(|l| l["message"] == "committed block")
        });
        assert_eq!(block["target"], "medchain::block", "{block}");
        assert!(block["height"].as_u64().is_some_and(|h| h >= 1), "{block}");
        assert!(block["txs"].as_u64().is_some(), "{block}");
        // Four validators in one process: each says which it is.
        let validators: std::collections::BTreeSet<u64> = lines()
            .iter()
            .filter(|l| l["message"] == "committed block" && l["height"] == block["height"])
            .filter_map(|l| l["validator"].as_u64())
            .collect();
        assert!(!validators.is_empty(), "no validator named: {block}");
        assert!(
            block["timestamp"].is_string() && block["level"] == "INFO",
            "{block}"
        );
        for line in lines() {
            let text = line.to_string();
            assert!(!text.contains("patient123"), "a password logged: {text}");
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = run {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::panic::resume_unwind(panic);
    }
}

/// Four `medchain node` processes logging JSON: the primary of view 0 is killed under load, and
/// each survivor logs a line when its view change starts and one when view 1 is installed,
/// naming the validator, the view and the new primary.
#[test]
fn a_view_change_is_logged_as_json_lines() {
    let mut net = Net::setup(4);
    for node in &mut net.nodes {
        node.args
            .extend(["--log-format".to_string(), "json".to_string()]);
    }
    net.start_all();
    net.login_all();
    net.kill(0);
    // The survivors' timers run while they wait on requests the dead primary never orders.
    let load = Load::start(&net, vec![1, 2, 3], "view", Duration::from_millis(100));
    let lines = |i: usize| -> Vec<serde_json::Value> {
        net.log(i)
            .lines()
            .filter(|line| line.starts_with('{'))
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    let installed = wait_for(Duration::from_secs(60), "a 'view installed' line", || {
        lines(1)
            .into_iter()
            .find(|l| l["message"] == "view installed" && l["view"].as_u64() >= Some(1))
    });
    load.finish();
    assert_eq!(installed["target"], "medchain::view", "{installed}");
    assert_eq!(installed["validator"], 1, "{installed}");
    assert!(
        installed["primary"].as_u64().is_some_and(|p| p != 0),
        "{installed}"
    );
    let started = lines(1)
        .into_iter()
        .find(|l| l["message"] == "view change started")
        .expect("a 'view change started' line before it");
    assert!(started["view"].as_u64() >= Some(1), "{started}");
    assert_eq!(started["level"], "INFO", "{started}");
}
