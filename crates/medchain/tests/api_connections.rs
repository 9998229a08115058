//! Slow and hostile clients at the socket (issue 12): partial headers, a partial body and an
//! idle connection were all still open after 130 s. Now each is closed after its timeout, the
//! connection cap holds and the server serves afterwards; every refusal, hyper's own included,
//! is the API's JSON; a Host not served is refused (DNS rebinding); `--secure-cookie` brings
//! HSTS; and a stop still finishes the request in flight.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::wire::{self, closed_within, connect_from, mid_request, read_answer};
use medchain::http::Settings;
use node::ConnectionLimits;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Short limits, so that the tests wait seconds, not minutes.
fn settings(limits: ConnectionLimits) -> Settings {
    Settings {
        limits,
        ..Settings::default()
    }
}

fn short() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        max_connections: 64,
        max_connections_per_client: None,
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    connect_from("127.0.0.1", addr).await
}

/// A connection from `from` served once, then idle.
async fn served_once(from: &str, addr: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, addr).await;
    stream
        .write_all(&wire::request(addr, "GET", "/healthz", &[], None))
        .await
        .unwrap();
    assert!(
        read_answer(&mut stream, Duration::from_secs(10))
            .await
            .is_some()
    );
    stream
}

async fn still_serves(addr: SocketAddr) {
    let answer = wire::exchange_from("127.0.0.1", addr, "GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_headers_and_silent_connections_are_closed_after_the_header_timeout() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(settings(short())).await;
    let addr = served.addr;
    let began = Instant::now();
    let mut partial = connect(addr).await;
    partial
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    let mut silent = connect(addr).await;
    let answer = read_answer(&mut partial, Duration::from_secs(10))
        .await
        .expect("a 408 before the close");
    answer.assert_json_refusal(408);
    assert!(closed_within(&mut partial, Duration::from_secs(5)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    still_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_body_is_answered_408_after_the_body_timeout() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(settings(short())).await;
    let addr = served.addr;
    let mut stream = connect(addr).await;
    let began = Instant::now();
    stream
        .write_all(
            format!(
                "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"role\": \"pat"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert!(began.elapsed() >= Duration::from_millis(900));
    answer.assert_json_refusal(408);
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    still_serves(addr).await;
}

/// The idle timeout is not the header timeout: a kept-alive connection outlives the header
/// timeout while idle, and is closed after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(settings(short())).await;
    let addr = served.addr;
    let mut stream = connect(addr).await;
    for _ in 0..2 {
        stream
            .write_all(&wire::request(addr, "GET", "/healthz", &[], None))
            .await
            .unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(10))
            .await
            .expect("kept alive");
        assert_eq!(answer.status, 200);
    }
    // Open past the header timeout (1 s), closed by the idle timeout (3 s).
    assert!(
        !closed_within(&mut stream, Duration::from_millis(2_000)).await,
        "closed at the header timeout, not the idle one"
    );
    assert!(closed_within(&mut stream, Duration::from_secs(6)).await);
    still_serves(addr).await;
}

/// The cap holds against busy connections: two clients each in the middle of a request's
/// headers hold both slots, and a third waits (the kernel takes its connection, the server
/// does not) until one of them ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_the_server_serves_after() {
    let t = common::app_only().await;
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(20),
        max_connections: 2,
        ..short()
    };
    let (served, _server) = t.listen_with(settings(limits)).await;
    let addr = served.addr;
    let mut holders = vec![
        mid_request("127.0.0.11", addr).await,
        mid_request("127.0.0.12", addr).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = connect_from("127.0.0.3", addr).await;
    third
        .write_all(&wire::request(addr, "GET", "/healthz", &[], None))
        .await
        .unwrap();
    assert!(
        read_answer(&mut third, Duration::from_millis(1_500))
            .await
            .is_none(),
        "served beyond the cap"
    );
    // One slot frees: the third is served, and so is a fourth after it.
    drop(holders.pop());
    let answer = read_answer(&mut third, Duration::from_secs(10))
        .await
        .expect("served once a slot freed");
    assert_eq!(answer.status, 200);
    drop(third);
    still_serves(addr).await;
}

/// Keep-alive hogging (issue 12's red team): at the cap, the connection idle longest is
/// closed to admit a newcomer, rather than the newcomer waiting for it to time out. A client
/// in the middle of a request is never closed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_connection_idle_longest_makes_room() {
    let t = common::app_only().await;
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(20),
        max_connections: 3,
        ..short()
    };
    let (served, _server) = t.listen_with(settings(limits)).await;
    let addr = served.addr;
    // A client mid-request, then two idle ones (served once), the older first.
    let mut busy = mid_request("127.0.0.1", addr).await;
    let mut idle = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3"] {
        idle.push(served_once(from, addr).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let began = Instant::now();
    let answer = wire::exchange_from("127.0.0.4", addr, "GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2)).await,
        "the connection idle longest was closed"
    );
    assert!(
        !closed_within(&mut idle[1], Duration::from_millis(300)).await,
        "only one was closed"
    );
    // The client mid-request finishes it.
    busy.write_all(b"\r\n").await.unwrap();
    let answer = read_answer(&mut busy, Duration::from_secs(10))
        .await
        .expect("the busy client is served");
    assert_eq!(answer.status, 200);
}

/// One client gets a share of the connections (`--max-connections-per-client`): beyond it,
/// its own idle connection makes room for its new one; with all of them busy, the new one is
/// refused (429, as JSON) while other clients are served. A trusted proxy, which carries
/// every client, is not held to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_gets_its_share_of_connections_and_a_proxy_is_not_held_to_it() {
    let t = common::app_only().await;
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(20),
        max_connections: 16,
        max_connections_per_client: Some(2),
        ..short()
    };
    let (served, _server) = t
        .listen_with(Settings {
            trusted_proxies: vec!["127.0.0.9".parse().unwrap()],
            ..settings(limits)
        })
        .await;
    let addr = served.addr;
    let mut busy = [
        mid_request("127.0.0.5", addr).await,
        mid_request("127.0.0.5", addr).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = wire::exchange_from("127.0.0.5", addr, "GET", "/healthz", &[], None).await;
    answer.assert_json_refusal(429);
    still_serves(addr).await;
    // One of its connections is served and then idle: the client's next one takes its place.
    busy[0].write_all(b"\r\n").await.unwrap();
    assert!(
        read_answer(&mut busy[0], Duration::from_secs(10))
            .await
            .is_some()
    );
    let answer = wire::exchange_from("127.0.0.5", addr, "GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(closed_within(&mut busy[0], Duration::from_secs(2)).await);
    // The proxy holds more than a client's share.
    let mut through_proxy = Vec::new();
    for _ in 0..4 {
        through_proxy.push(mid_request("127.0.0.9", addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = wire::exchange_from("127.0.0.9", addr, "GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    for mut stream in through_proxy {
        stream.write_all(b"\r\n").await.unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(answer.map(|a| a.status), Some(200));
    }
}

/// A request (method, path, extra headers, body) and the status it must get.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<serde_json::Value>,
    u16,
);

/// Every refusal a client can provoke is the API's JSON, those hyper makes before any request
/// reaches the router (a head too large, an unparsable one) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_json() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(Settings::default()).await;
    let addr = served.addr;
    let raw = |bytes: Vec<u8>| async move {
        let mut stream = connect(addr).await;
        stream.write_all(&bytes).await.unwrap();
        read_answer(&mut stream, Duration::from_secs(10))
            .await
            .expect("an answer")
    };
    // 431: headers over the limit (hyper's own refusal).
    let big = "a".repeat(20 * 1024);
    let answer = raw(wire::request(
        addr,
        "GET",
        "/healthz",
        &[("X-Big", &big)],
        None,
    ))
    .await;
    answer.assert_json_refusal(431);
    // 400: a head that does not parse (hyper's own).
    let answer =
        raw(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nno colon here\r\n\r\n").into_bytes()).await;
    answer.assert_json_refusal(400);
    // 413: a body over the limit, refused on its length.
    let answer = raw(format!(
        "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n"
    )
    .into_bytes())
    .await;
    answer.assert_json_refusal(413);
    let cases: [Case; 5] = [
        ("GET", "/api/no-such-endpoint", &[], None, 404),
        ("GET", "/api/login", &[], None, 405),
        ("GET", "/api/me", &[], None, 401),
        ("GET", "/healthz", &[("Host", "evil.example")], None, 421),
        (
            "POST",
            "/api/consents/request",
            &[("Origin", "http://127.0.0.1:1")],
            Some(json!({})),
            403,
        ),
    ];
    for (method, path, headers, body, status) in cases {
        let mut bytes = wire::request(addr, method, path, headers, body.as_ref());
        if headers.iter().any(|(name, _)| *name == "Host") {
            // The test's Host replaces the one `wire::request` writes.
            let text = String::from_utf8(bytes).unwrap();
            bytes = text
                .replacen(&format!("Host: {addr}\r\n"), "", 1)
                .into_bytes();
        }
        let answer = raw(bytes).await;
        answer.assert_json_refusal(status);
    }
    // 415: a body that is not JSON.
    let answer = raw(format!(
        "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         Content-Length: 5\r\n\r\nhello"
    )
    .into_bytes())
    .await;
    answer.assert_json_refusal(415);
    // 429 (with Retry-After): the throttle, over the socket.
    let wrong = json!({"role": "patient", "patientId": "p002", "password": "guess"});
    let mut last = None;
    for _ in 0..=medchain::http::throttle::FREE_ATTEMPTS {
        last = Some(raw(wire::request(addr, "POST", "/api/login", &[], Some(&wrong))).await);
    }
    let answer = last.unwrap();
    answer.assert_json_refusal(429);
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    still_serves(addr).await;
}

/// DNS rebinding: a page of another name resolving to this server gets 421. Served by
/// default: the address connected to, localhost, 127.0.0.1 and [::1] with the port; with
/// `--allowed-host`, that name too. HTTP/1.1 without a Host is 400 (RFC 9112 §3.2; the
/// red team's `red_team_held_http11_without_host_is_refused` has HTTP/1.0). `--secure-cookie` brings HSTS and the
/// cookie's Secure flag; without it, neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_not_served_are_refused_and_secure_cookie_brings_hsts() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(Settings::default()).await;
    let addr = served.addr;
    let port = addr.port();
    let with_host = |addr: SocketAddr, host: Option<String>, path: &str| {
        let mut text = format!("GET {path} HTTP/1.1\r\n");
        if let Some(host) = host {
            text.push_str(&format!("Host: {host}\r\n"));
        }
        text.push_str("\r\n");
        async move {
            let mut stream = connect(addr).await;
            stream.write_all(text.as_bytes()).await.unwrap();
            read_answer(&mut stream, Duration::from_secs(10))
                .await
                .expect("an answer")
        }
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            with_host(addr, Some(host.clone()), "/healthz").await.status,
            200,
            "{host}"
        );
    }
    with_host(addr, None, "/healthz")
        .await
        .assert_json_refusal(400);
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "medchain.example.org".to_string(),
    ] {
        let answer = with_host(addr, Some(host.clone()), "/").await;
        answer.assert_json_refusal(421);
    }
    let login = json!({"role": "patient", "patientId": "p001", "password": "patient123"});
    let answer =
        wire::exchange_from("127.0.0.1", addr, "POST", "/api/login", &[], Some(&login)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("strict-transport-security").is_none());
    assert!(!answer.head.contains("secure"), "{}", answer.head);
    drop(served);

    // Behind a TLS proxy that passes its public name on.
    let (served, _server) = t
        .listen_with(Settings {
            secure_cookie: true,
            allowed_hosts: vec!["medchain.example.org".into()],
            ..Settings::default()
        })
        .await;
    let addr = served.addr;
    let answer = with_host(addr, Some("medchain.example.org".into()), "/healthz").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("strict-transport-security").as_deref(),
        Some(medchain::http::HSTS)
    );
    let answer = with_host(addr, Some("medchain.example.org.evil.example".into()), "/").await;
    answer.assert_json_refusal(421);
    let answer =
        wire::exchange_from("127.0.0.1", addr, "POST", "/api/login", &[], Some(&login)).await;
    assert_eq!(answer.status, 200);
    // The session cookie and the device cookie.
    let cookies: Vec<&str> = answer
        .head
        .lines()
        .filter(|line| line.starts_with("set-cookie:"))
        .collect();
    assert_eq!(cookies.len(), 2, "{}", answer.head);
    for cookie in cookies {
        assert!(cookie.contains("; secure"), "{cookie}");
    }
    assert!(answer.header("strict-transport-security").is_some());
}

/// A stop closes the listener and idle connections, and finishes the request in flight: its
/// client, still sending the body, gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_the_request_in_flight() {
    let t = common::app_only().await;
    let limits = ConnectionLimits {
        body_timeout: Duration::from_secs(20),
        ..ConnectionLimits::default()
    };
    let (served, server) = t.listen_with(settings(limits)).await;
    let addr = served.addr;
    let mut idle = connect(addr).await;
    idle.write_all(&wire::request(addr, "GET", "/healthz", &[], None))
        .await
        .unwrap();
    assert!(
        read_answer(&mut idle, Duration::from_secs(10))
            .await
            .is_some()
    );
    let body =
        json!({"role": "patient", "patientId": "p001", "password": "patient123"}).to_string();
    let (head, rest) = body.split_at(10);
    let mut busy = connect(addr).await;
    busy.write_all(
        format!(
            "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{head}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(served);
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle closed at once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.write_all(rest.as_bytes()).await.unwrap();
    let answer = read_answer(&mut busy, Duration::from_secs(10))
        .await
        .expect("the request in flight is answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops once its connections end")
        .unwrap()
        .unwrap();
}
