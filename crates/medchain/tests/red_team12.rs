//! Red team of issue 12, as a hostile client over real sockets: the login throttle (races,
//! many addresses, forged forwarded headers, eviction games), slow and numerous clients
//! against the connection cap, the Host allow-list, the read limit's coverage, and whether
//! every refusal is the API's JSON.
//!
//! A test marked `#[ignore = "BREAK: ..."]` asserts what issue 12 promises and fails on the
//! code as it is (the mechanism is in its doc comment); `#[ignore = "WEAKNESS: ..."]` asserts
//! what a careful reader would expect beyond the letter of the issue. `red_team_held_*` tests
//! are attacks that failed.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::anon;
use common::wire::{self, Answer, closed_within, connect_from, read_answer};
use medchain::http::Settings;
use medchain::http::read_limit::READ_BURST;
use medchain::http::throttle::{ACCOUNT_FREE_ATTEMPTS, FREE_ATTEMPTS, MAX_TRACKED};
use node::ConnectionLimits;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn login_body(id: &str, password: &str) -> serde_json::Value {
    json!({"role": "patient", "patientId": id, "password": password})
}

/// p001's login with `password`, on a new connection from `from`: its answer.
async fn login_at(from: &str, addr: SocketAddr, password: &str) -> Answer {
    wire::exchange_from(
        from,
        addr,
        "POST",
        "/api/login",
        &[],
        Some(&login_body("p001", password)),
    )
    .await
}

fn limits(header_s: u64, body_s: u64, idle_s: u64, max_connections: usize) -> Settings {
    Settings {
        limits: ConnectionLimits {
            header_timeout: Duration::from_secs(header_s),
            body_timeout: Duration::from_secs(body_s),
            idle_timeout: Duration::from_secs(idle_s),
            max_connections,
            max_connections_per_client: None,
        },
        ..Settings::default()
    }
}

/// Everything the server sends on `stream` until it closes (or `within` passes).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&chunk[..n]);
    }
    all
}

async fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream.write_all(bytes).await.unwrap();
    read_answer(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer")
}

/// Keep-alive hogging: with the cap at `max_connections`, one client that opened that many
/// connections and sent one cheap request on each a little more often than the idle timeout
/// held every slot for as long as it liked. The header and idle timeouts never fired (each
/// connection was never idle long enough), and the listener accepted nothing while the cap
/// was reached, so a real user's connection waited in the kernel's backlog and was never
/// served. With the defaults (1024 connections, 60 s idle) that was 17 requests a second from
/// one address. Now one address gets an eighth of the connections (here one), and at the cap
/// the connection idle longest is closed to admit a newcomer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_keep_alive_hog_does_not_deny_real_users() {
    keep_alive_hogs_leave_room_for_a_real_user(&["127.0.0.9"; 4]).await;
}

/// The same from four addresses, each within its share: together they hold the cap, and
/// the connection idle longest makes room for the real user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_keep_alive_hogs_from_many_addresses_do_not_deny_real_users() {
    keep_alive_hogs_leave_room_for_a_real_user(&[
        "127.0.0.9",
        "127.0.0.10",
        "127.0.0.11",
        "127.0.0.12",
    ])
    .await;
}

/// Hogs from `sources` (one connection each) refresh their connections under the idle
/// timeout of a server with as many slots; a real user must still be served.
async fn keep_alive_hogs_leave_room_for_a_real_user(sources: &[&str]) {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(limits(1, 1, 1, sources.len())).await;
    let addr = served.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hogs = Vec::new();
    for source in sources {
        let mut stream = connect_from(source, addr).await;
        let stop = stop.clone();
        hogs.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                stream
                    .write_all(&wire::request(addr, "GET", "/healthz", &[], None))
                    .await
                    .unwrap();
                if read_answer(&mut stream, Duration::from_secs(5))
                    .await
                    .is_none()
                {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            true
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let mut user = connect_from("127.0.0.2", addr).await;
    user.write_all(&wire::request(addr, "GET", "/healthz", &[], None))
        .await
        .unwrap();
    // Header + idle + body timeouts are 3 s: a server that admits users is within twice that.
    let answer = read_answer(&mut user, Duration::from_secs(6)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut held = 0;
    for hog in hogs {
        held += usize::from(hog.await.unwrap());
    }
    assert!(
        answer.is_some(),
        "the real user was not served within {:?} while {held} hogging connections kept \
         every slot",
        began.elapsed()
    );
}

/// Pipelining: a well-formed request followed, in the same packet, by one hyper cannot parse.
/// hyper answers the first and writes its own bare 400 for the second; the refusal must be
/// the API's JSON like every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_pipelined_garbage_after_a_request_is_refused_as_json() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(limits(2, 2, 2, 16)).await;
    let addr = served.addr;
    let mut bytes = wire::request(addr, "GET", "/healthz", &[], None);
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n");
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream.write_all(&bytes).await.unwrap();
    let all = String::from_utf8_lossy(&read_to_close(&mut stream, Duration::from_secs(8)).await)
        .into_owned();
    let starts: Vec<usize> = all.match_indices("HTTP/1.1 ").map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 2, "two answers expected: {all:?}");
    assert!(all[starts[0]..].starts_with("HTTP/1.1 200"), "{all:?}");
    let second = &all[starts[1]..];
    assert!(second.starts_with("HTTP/1.1 400"), "{all:?}");
    assert!(
        second.to_ascii_lowercase().contains("application/json"),
        "hyper's bare 400 leaked: {second:?}"
    );
}

/// Eviction game: the table was ranked "not slowed first, then oldest", so the attacker's
/// own pair, kept just below [`FREE_ATTEMPTS`] failures, was the first thing a flood of
/// made-up ids pushed out. Four guesses, a flood of `MAX_TRACKED` made-up ids (each one
/// request, from any address), four more guesses: the account got unlimited guesses and the
/// attacker was never slowed. The issue promised a flood "resets no one's count". Now the
/// fewest failures go first, and a pair pushed out anyway still weighs on its address (the
/// throttle's unit test `a_flood_of_made_up_ids_resets_no_count`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_flood_does_not_evict_the_attackers_own_count() {
    let t = common::app_only().await;
    let attacker = "203.0.113.66";
    let mut judged_wrong = 0;
    for _ in 0..FREE_ATTEMPTS - 1 {
        let (s, _) = t
            .call_from(
                attacker,
                &anon(),
                "POST",
                "/api/login",
                Some(login_body("p001", "guess")),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        judged_wrong += 1;
    }
    // The made-up ids come after (by the clock), so the attacker's pair is the oldest.
    t.clock.advance_ms(1);
    let flood = futures_flood(&t, MAX_TRACKED).await;
    assert_eq!(flood, MAX_TRACKED, "every made-up id judged");
    t.clock.advance_ms(1);
    let mut refused = 0;
    for _ in 0..FREE_ATTEMPTS {
        let (s, _) = t
            .call_from(
                attacker,
                &anon(),
                "POST",
                "/api/login",
                Some(login_body("p001", "guess")),
            )
            .await;
        match s {
            StatusCode::UNAUTHORIZED => judged_wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert!(
        judged_wrong <= FREE_ATTEMPTS,
        "{judged_wrong} wrong guesses judged from one address without a wait ({refused} \
         refused): the flood reset the attacker's count"
    );
}

/// `MAX_TRACKED` made-up ids, two at a time (the hashing's width), from other addresses.
async fn futures_flood(t: &common::TestApp, n: usize) -> usize {
    let mut judged = 0;
    let mut tasks = Vec::new();
    let per = n.div_ceil(4);
    for w in 0..4 {
        let router = t.router.clone();
        tasks.push(tokio::spawn(async move {
            let mut judged = 0;
            for i in w * per..((w + 1) * per).min(n) {
                let mut req = common::request(
                    "POST",
                    "/api/login",
                    Some(login_body(&format!("fake{i}"), "x")),
                    None,
                    None,
                );
                let peer: SocketAddr = format!("198.18.{}.{}:4000", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap();
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let res = tower::ServiceExt::oneshot(router.clone(), req)
                    .await
                    .unwrap();
                if res.status() == StatusCode::UNAUTHORIZED {
                    judged += 1;
                }
            }
            judged
        }));
    }
    for task in tasks {
        judged += task.await.unwrap();
    }
    judged
}

/// Many addresses: the throttle was keyed only on (login id, client address), so every
/// address brought [`FREE_ATTEMPTS`] fresh guesses for the same account. 20 loopback
/// addresses (one attacker's /27, or a small botnet) judged 100 wrong passwords for p001
/// without one 429, and nothing was logged. Now the login id has a ceiling across the
/// addresses it never signed in from ([`ACCOUNT_FREE_ATTEMPTS`]), logged when passed; and the
/// real person, from where they signed in before, is still judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_many_addresses_do_not_multiply_guesses() {
    let t = common::app_only().await;
    let served = t.listen().await;
    let addr = served.addr;
    // The real person signed in from home once before.
    let home = "127.0.0.3";
    let answer = login_at(home, addr, "patient123").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut judged = 0;
    for host in 10..30 {
        let from = format!("127.0.0.{host}");
        for _ in 0..FREE_ATTEMPTS {
            let answer = login_at(&from, addr, "guess").await;
            if answer.status == 401 {
                judged += 1;
            }
        }
    }
    assert!(
        judged <= ACCOUNT_FREE_ATTEMPTS,
        "{judged} wrong passwords for one account judged across 20 addresses"
    );
    let answer = login_at("127.0.0.40", addr, "patient123").await;
    answer.assert_json_refusal(429);
    let answer = login_at(home, addr, "patient123").await;
    assert_eq!(answer.status, 200, "the real person, from home: {answer:?}");
}

/// X-Forwarded-For without a trusted proxy: a client that sends a new forged address with
/// each guess is still keyed on its socket's address; and the real user, from another
/// loopback address, is not locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_forged_forwarded_for_without_a_trusted_proxy() {
    let t = common::app_only().await;
    let served = t.listen().await;
    let addr = served.addr;
    let mut statuses = Vec::new();
    for i in 0..FREE_ATTEMPTS + 2 {
        let forged = format!("198.51.100.{i}, 10.9.8.{i}");
        let answer = wire::exchange_from(
            "127.0.0.5",
            addr,
            "POST",
            "/api/login",
            &[
                ("X-Forwarded-For", &forged),
                ("X-Real-IP", "192.0.2.1"),
                ("Forwarded", "for=192.0.2.2"),
            ],
            Some(&login_body("p001", "guess")),
        )
        .await;
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let answer = login_at("127.0.0.6", addr, "patient123").await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Through a trusted proxy that appends the client's address (nginx's
/// `$proxy_add_x_forwarded_for`): the client's own part of the header is forged, with a
/// victim's address and a trusted proxy's address at its end. The rightmost untrusted hop,
/// the one the proxy wrote, is still the key: the attacker is slowed, the victim is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_forged_chain_through_a_trusted_proxy() {
    let t = common::app_only().await;
    let (served, _server) = t
        .listen_with(Settings {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            ..Settings::default()
        })
        .await;
    let addr = served.addr;
    let victim = "198.51.100.10";
    let attacker = "203.0.113.66";
    let mut statuses = Vec::new();
    for _ in 0..FREE_ATTEMPTS + 1 {
        let chain = format!("{victim}, 10.0.0.2, {attacker}");
        let answer = wire::exchange_from(
            "127.0.0.1",
            addr,
            "POST",
            "/api/login",
            &[("X-Forwarded-For", &chain)],
            Some(&login_body("p001", "guess")),
        )
        .await;
        statuses.push(answer.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let answer = wire::exchange_from(
        "127.0.0.1",
        addr,
        "POST",
        "/api/login",
        &[("X-Forwarded-For", victim)],
        Some(&login_body("p001", "patient123")),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// A forwarded header with one byte outside ASCII (obs-text, which hyper accepts): a proxy
/// that appends the client's address to the client's own value (nginx's
/// `$proxy_add_x_forwarded_for`) sends one line, `\xff, <client>`. `to_str()` failed on the
/// whole line, so the walk found no hop and the client was the proxy: a slowed attacker got
/// a fresh key (every such client shared the proxy's), and the lockout log named the proxy,
/// not the attacker. Now hops are split from the bytes: the spoiled hop is the client's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_obs_text_does_not_hide_the_forwarded_client() {
    let t = common::app_only().await;
    let (served, _server) = t
        .listen_with(Settings {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..Settings::default()
        })
        .await;
    let addr = served.addr;
    let attacker = "203.0.113.66";
    let body = login_body("p001", "guess").to_string();
    let send = |xff: Vec<u8>| {
        let body = body.clone();
        async move {
            let mut bytes = format!(
                "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nX-Forwarded-For: ",
                body.len()
            )
            .into_bytes();
            bytes.extend_from_slice(&xff);
            bytes.extend_from_slice(b"\r\n\r\n");
            bytes.extend_from_slice(body.as_bytes());
            raw_answer(addr, &bytes).await.status
        }
    };
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(send(attacker.as_bytes().to_vec()).await, 401);
    }
    assert_eq!(send(attacker.as_bytes().to_vec()).await, 429);
    let mut hidden = b"\xff, ".to_vec();
    hidden.extend_from_slice(attacker.as_bytes());
    let status = send(hidden).await;
    assert_eq!(
        status, 429,
        "the attacker, slowed, was judged again once its forwarded hop was hidden"
    );
}

/// The read limit covers every read that makes an access entry: a doctor's reads through
/// `/api/doctor/patient_records` and through `/api/patient_records` draw on one bucket (a
/// read is spent before the grant is checked, so even refused reads count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_doctor_reads_share_one_bucket() {
    let t = common::app_only().await;
    let doctor = t.login("d001").await;
    let mut refused = 0;
    for i in 0..READ_BURST + 4 {
        let path = if i % 2 == 0 {
            "/api/doctor/patient_records"
        } else {
            "/api/patient_records"
        };
        let (s, b) = t.post(&doctor, path, json!({"patientId": "p001"})).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
            assert_eq!(b["success"], false);
        } else {
            assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        }
    }
    assert_eq!(refused, 4);
}

/// Host allow-list: the absolute form of a request target names the host (RFC 9112 §3.2.2),
/// so `GET http://evil.example/ HTTP/1.1` with a good Host is refused, and so are a
/// trailing-dot name and a port not served; a good absolute target with an evil Host is the
/// target's host (served, as RFC 9112 says), not a bypass of DNS rebinding (browsers never
/// send the absolute form to an origin server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_host_variants() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(Settings::default()).await;
    let addr = served.addr;
    let port = addr.port();
    let get = |target: String, host: Option<String>| async move {
        let mut text = format!("GET {target} HTTP/1.1\r\n");
        if let Some(host) = host {
            text.push_str(&format!("Host: {host}\r\n"));
        }
        text.push_str("\r\n");
        raw_answer(addr, text.as_bytes()).await
    };
    for (target, host) in [
        (
            "http://evil.example/healthz".to_string(),
            Some(addr.to_string()),
        ),
        (
            format!("http://evil.example:{port}/healthz"),
            Some(addr.to_string()),
        ),
        (
            "/healthz".to_string(),
            Some(format!("evil.example.:{port}")),
        ),
        ("/healthz".to_string(), Some(format!("localhost.:{port}"))),
        ("/healthz".to_string(), Some("127.0.0.1".to_string())),
        (
            "/healthz".to_string(),
            Some(format!("127.0.0.1:{port}@evil.example")),
        ),
        (
            "/healthz".to_string(),
            Some(format!("evil.example:{port}, 127.0.0.1:{port}")),
        ),
    ] {
        let answer = get(target.clone(), host.clone()).await;
        assert!(
            answer.status == 421 || answer.status == 400,
            "{target} {host:?}: {answer:?}"
        );
        assert_eq!(
            answer.body["success"], false,
            "{target} {host:?}: {answer:?}"
        );
    }
    let answer = get(
        format!("http://127.0.0.1:{port}/healthz"),
        Some("evil.example".to_string()),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Two Host headers (RFC 9112 §3.2: a server MUST answer 400): the check read only the
/// first, so `Host: <ours>` then `Host: evil.example` was served. No browser sends two, so it
/// was no DNS-rebinding hole; but a proxy in front that routes on the last one would disagree
/// with the check. Now 400, as JSON; and HTTP/1.0 with two is refused alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_two_host_headers_are_refused() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(Settings::default()).await;
    let addr = served.addr;
    let answer = raw_answer(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\n\r\n").as_bytes(),
    )
    .await;
    answer.assert_json_refusal(400);
    let answer = raw_answer(
        addr,
        format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await;
    answer.assert_json_refusal(400);
}

/// HTTP/1.1 without a Host: RFC 9112 §3.2 says a server MUST answer 400. The allow-list let
/// it through (no browser sends it, so it was no DNS-rebinding hole, but it was a request the
/// check never judged); now 400 as JSON, also with an absolute target. HTTP/1.0, which has no
/// Host of its own, is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_http11_without_host_is_refused() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(Settings::default()).await;
    let addr = served.addr;
    let answer = raw_answer(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
    answer.assert_json_refusal(400);
    let answer = raw_answer(
        addr,
        format!("GET http://{addr}/healthz HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    answer.assert_json_refusal(400);
    let answer = raw_answer(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Slow clients: a header trickled a byte at a time under the header timeout, a chunked
/// body that never ends, a body announced with `Expect: 100-continue` that never comes, and
/// a pipeline of requests whose answers are never read. Each is closed near its timeout with
/// the API's JSON where an answer is due, and the server serves afterwards. (Each from its own
/// address: one address gets an eighth of the connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_slow_clients_are_closed_in_time() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(limits(1, 1, 2, 16)).await;
    let addr = served.addr;
    let began = Instant::now();
    // Slowloris: a byte every 300 ms.
    let trickle = tokio::spawn(async move {
        let mut stream = connect_from("127.0.0.21", addr).await;
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-A: aaaaaaaaaaaaaaaaaaaaaa");
        for byte in head.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        began.elapsed()
    });
    // A chunked body that never ends.
    let mut chunked = connect_from("127.0.0.22", addr).await;
    chunked
        .write_all(
            format!(
                "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let drip = tokio::spawn(async move {
        for _ in 0..20 {
            if chunked.write_all(b"1\r\n \r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let answer = read_answer(&mut chunked, Duration::from_secs(5)).await;
        (answer, began.elapsed())
    });
    // 100-continue, and the body never sent.
    let mut expect = connect_from("127.0.0.23", addr).await;
    expect
        .write_all(
            format!(
                "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Expect: 100-continue\r\nContent-Length: 50\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let expected = read_to_close(&mut expect, Duration::from_secs(6)).await;
    let expected = String::from_utf8_lossy(&expected).into_owned();
    assert!(expected.contains(" 408 "), "{expected:?}");
    assert!(expected.contains("\"success\":false"), "{expected:?}");
    assert!(began.elapsed() < Duration::from_secs(5));
    let (answer, at) = drip.await.unwrap();
    let answer = answer.expect("a 408 for the endless chunked body");
    answer.assert_json_refusal(408);
    assert!(at < Duration::from_secs(7), "{at:?}");
    let trickled = trickle.await.unwrap();
    assert!(
        trickled < Duration::from_secs(4),
        "a trickled head was kept {trickled:?}"
    );
    // Pipelined requests never read: the connection ends (write or idle deadline).
    let mut pipeline = connect_from("127.0.0.24", addr).await;
    let one = wire::request(addr, "GET", "/api/openapi.json", &[], None);
    let mut sent = 0;
    let writing = Instant::now();
    while writing.elapsed() < Duration::from_secs(8) {
        match tokio::time::timeout(Duration::from_millis(500), pipeline.write_all(&one)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    assert!(
        closed_within(&mut pipeline, Duration::from_secs(6)).await,
        "a client that reads nothing kept its connection ({sent} requests sent)"
    );
    let answer = wire::exchange_from("127.0.0.1", addr, "GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200);
}

/// Odd but well-formed-looking inputs at the socket never give a 5xx or a body that is not
/// the API's JSON: a huge request line, bad chunk sizes, a `Content-Length` with
/// `Transfer-Encoding`, two lengths, a NUL in a header, HTTP/2's preface, an unknown version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_malformed_heads_are_json_4xx() {
    let t = common::app_only().await;
    let (served, _server) = t.listen_with(limits(2, 2, 2, 64)).await;
    let addr = served.addr;
    let h = format!("Host: {addr}\r\n");
    let cases: Vec<Vec<u8>> = vec![
        format!("GET /{} HTTP/1.1\r\n{h}\r\n", "a".repeat(70_000)).into_bytes(),
        format!("POST /api/login HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\n")
            .into_bytes(),
        format!(
            "POST /api/login HTTP/1.1\r\n{h}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .into_bytes(),
        format!("POST /api/login HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
            .into_bytes(),
        format!("GET /healthz HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n").into_bytes(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        format!("GET /healthz HTTP/9.9\r\n{h}\r\n").into_bytes(),
        format!("GET /healthz HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\n\r\n").into_bytes(),
        format!(
            "POST /api/login HTTP/1.1\r\n{h}Content-Type: application/json\r\nContent-Length: -1\r\n\r\n"
        )
        .into_bytes(),
    ];
    for bytes in cases {
        let mut stream = connect_from("127.0.0.1", addr).await;
        let _ = stream.write_all(&bytes).await;
        let all = read_to_close(&mut stream, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&all).into_owned();
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
        if text.is_empty() {
            continue; // closed without an answer: no leak, no 5xx
        }
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!((400..500).contains(&status), "{shown:?} -> {text:?}");
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        let body: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("{shown:?}: not JSON: {text:?}"));
        assert_eq!(body["success"], false, "{shown:?} -> {text:?}");
    }
    let answer = wire::exchange_from("127.0.0.1", addr, "GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200);
}
