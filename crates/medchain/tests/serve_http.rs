//! `medchain serve`'s HTTP deployment flags, as a process (issue 12): `--secure-cookie` brings
//! HSTS and the cookie's Secure flag, `--allowed-host` adds a Host served while others are
//! refused, `--header-timeout` closes a silent connection, lockouts are logged with the client's
//! address, and `--help` lists the flags with their node.toml keys.
mod common_net;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common_net::{http, medchain, output_text, raw_get, wait_for};
use serde_json::json;

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

#[test]
fn serve_takes_its_http_flags() {
    let help = medchain().args(["serve", "--help"]).output().expect("help");
    let help = output_text(&help);
    for flag in [
        "--secure-cookie",
        "--allowed-host",
        "--trusted-proxy",
        "--header-timeout",
        "--body-timeout",
        "--idle-timeout",
        "--max-connections",
        "node.toml: http.allowed_hosts",
    ] {
        assert!(help.contains(flag), "{flag} not in --help: {help}");
    }

    let root = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let log = root.path().join("serve.log");
    let mut child = common_net::serve_process(
        &root.path().join("data"),
        addr,
        &log,
        &[
            "--secure-cookie",
            "--allowed-host",
            "medchain.example.org",
            "--header-timeout",
            "1s",
        ],
    );
    let run = std::panic::catch_unwind(|| {
        wait_for(Duration::from_secs(60), "serve to answer", || {
            matches!(http(addr, "GET", "/healthz", None, None), Ok((200, _))).then_some(())
        });
        let (head, _) = raw_get(addr, "/healthz", "medchain.example.org");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains("strict-transport-security: max-age=31536000"),
            "{head}"
        );
        let (head, body) = raw_get(addr, "/healthz", "evil.example");
        assert!(head.starts_with("http/1.1 421"), "{head}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["success"], false);

        // The cookie's Secure flag, and a lockout logged with the client's address.
        let right = json!({"role": "patient", "patientId": "p001", "password": "patient123"});
        let answer = common_net::seed::exchange(addr, "POST", "/api/login", &[], Some(&right))
            .expect("login");
        assert_eq!(answer.status, 200);
        assert!(
            answer.set_cookies[0].contains("; Secure"),
            "{:?}",
            answer.set_cookies
        );
        let wrong = json!({"role": "patient", "patientId": "p001", "password": "guess"});
        let statuses: Vec<u16> = (0..6)
            .map(|_| {
                http(addr, "POST", "/api/login", None, Some(&wrong))
                    .expect("login")
                    .0
            })
            .collect();
        assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
        wait_for(Duration::from_secs(5), "the lockout in the log", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .any(|l| l.contains("login slowed") && l.contains("127.0.0.1"))
                .then_some(())
        });

        // A connection that sends nothing is closed after the header timeout.
        let mut silent = TcpStream::connect(addr).expect("connect");
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let began = Instant::now();
        let mut byte = [0u8; 1];
        let read = silent.read(&mut byte);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let waited = began.elapsed();
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    if let Err(panic) = run {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "serve's exit: {status}");
}
