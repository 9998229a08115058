//! The limits of issue 12 that keep one client from harming others: the login throttle
//! cannot be raced by a burst, slows an attacker from their address without locking out the
//! real person (or a doctor asking in person) from theirs, trusts a forwarded address only from
//! a configured proxy, and survives a restart; record reads are rate-limited per account, and
//! every read served still has its own access entry.
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::wire::{self, connect_from, read_answer};
use common::{anon, body_of};
use medchain::http::Settings;
use medchain::http::read_limit::READ_BURST;
use medchain::http::throttle::FREE_ATTEMPTS;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

const ATTACKER: &str = "203.0.113.66";

fn login_body(id: &str, password: &str) -> serde_json::Value {
    json!({"role": "patient", "patientId": id, "password": password})
}

/// p001's login with `password`, as a socket from `from` would send it: the status and body.
async fn login_from(
    t: &common::TestApp,
    from: &str,
    password: &str,
) -> (StatusCode, serde_json::Value) {
    t.call_from(
        from,
        &anon(),
        "POST",
        "/api/login",
        Some(login_body("p001", password)),
    )
    .await
}

/// The race of issue 12: 100 logins for one account on pre-opened connections, the last with
/// the right password, were all judged (99 answered 401, the right one 200, never a 429).
/// Now each attempt is counted before it queues for the hash: at most the free attempts of
/// wrong guesses are judged, the rest are 429; and the real person, from another address,
/// signs in. (The right password, if it happens to be counted first and judged before any
/// other is counted, clears the pair as it should: then it is judged beside the free
/// attempts. Judged amid the burst, it leaves the pair waiting the first delay.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_has_at_most_the_free_attempts_judged() {
    let t = common::app_only().await;
    let served = t.listen().await;
    let addr = served.addr;
    let mut connections = Vec::new();
    for _ in 0..100 {
        connections.push(connect_from("127.0.0.1", addr).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(connections.len()));
    let mut tasks = Vec::new();
    for (i, mut stream) in connections.into_iter().enumerate() {
        let password = if i == 99 { "patient123" } else { "guess" };
        let bytes = wire::request(
            addr,
            "POST",
            "/api/login",
            &[],
            Some(&login_body("p001", password)),
        );
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            stream.write_all(&bytes).await.unwrap();
            read_answer(&mut stream, Duration::from_secs(60))
                .await
                .expect("an answer")
                .status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let right = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        wrong <= FREE_ATTEMPTS as usize,
        "{wrong} wrong guesses judged: {statuses:?}"
    );
    assert!(wrong + right <= FREE_ATTEMPTS as usize + 1, "{statuses:?}");
    assert_eq!(wrong + right + refused, 100, "{statuses:?}");
    // The real person, from their own address, is not locked out by the burst.
    let answer = wire::exchange_from(
        "127.0.0.2",
        addr,
        "POST",
        "/api/login",
        &[],
        Some(&login_body("p001", "patient123")),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

/// "Anyone can lock anyone out" (issue 12): 10 wrong passwords for a patient gave the real
/// patient 429 on login and on their records, and refused a doctor's in-person consent. Now
/// the attacker's address is slowed (and the lockout logged with it), while the patient from
/// their address signs in and reads, and the doctor from the desk is granted consent.
#[tokio::test]
async fn the_attacker_is_slowed_from_their_address_and_no_one_else_is() {
    let log = common::LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let t = common::app_only().await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (s, b) = login_from(&t, ATTACKER, "guess").await;
        assert_eq!(b["success"], false);
        statuses.push(s);
    }
    let slowed = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(slowed, 10 - FREE_ATTEMPTS as usize, "{statuses:?}");
    let (s, _) = login_from(&t, ATTACKER, "patient123").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the attacker waits");
    let logged = log.text();
    let lockout = logged
        .lines()
        .find(|l| l.contains("login slowed"))
        .unwrap_or_else(|| panic!("no lockout logged: {logged}"));
    assert!(lockout.contains(ATTACKER), "{lockout}");

    // The patient, from home: signs in and reads (by session, and the seed's password way).
    let home = "198.51.100.10";
    let (s, b) = login_from(&t, home, "patient123").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let patient = common::Client::bearer(b["token"].as_str().unwrap());
    let (s, b) = t
        .call_from(
            home,
            &patient,
            "POST",
            "/api/patient_records",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = t
        .call_from(
            home,
            &anon(),
            "POST",
            "/api/patient_records",
            Some(json!({"patientId": "p001", "password": "patient123"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The doctor at the desk, the patient typing their password there.
    let doctor = t.login("d001").await;
    let (s, b) = t
        .call_from(
            "198.51.100.20",
            &doctor,
            "POST",
            "/api/request_consent",
            Some(json!({"patientId": "p001", "password": "patient123"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["otp"].is_string(), "{b}");
}

/// Behind the TLS proxy the README recommends, every request's peer is the proxy: the client
/// is the address the proxy forwards, trusted only from a configured proxy. A client that
/// forges the header from elsewhere is keyed on its own address.
#[tokio::test]
async fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
    let t = common::app_only().await;
    let proxy = "10.0.0.1";
    let router = medchain::http::router(t.with_settings(Settings {
        trusted_proxies: vec![proxy.parse().unwrap()],
        ..Settings::default()
    }));
    let login = |from: &str, forwarded: &str, password: &str| {
        let mut req = common::request(
            "POST",
            "/api/login",
            Some(login_body("p001", password)),
            None,
            None,
        );
        req.headers_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
        let peer = std::net::SocketAddr::new(from.parse().unwrap(), 443);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let router = router.clone();
        async move { body_of(router.oneshot(req).await.unwrap()).await.0 }
    };
    // Through the proxy, the attacker's forwarded address is slowed...
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(
            login(proxy, ATTACKER, "guess").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(proxy, ATTACKER, "guess").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...and the patient's, through the same proxy, is not.
    assert_eq!(
        login(proxy, "198.51.100.10", "patient123").await,
        StatusCode::OK
    );
    // A client that is not the proxy cannot borrow someone's address with the header: it is
    // keyed on its own.
    let forger = "192.0.2.50";
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(
            login(forger, "198.51.100.10", "guess").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(forger, "198.51.100.10", "guess").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login(proxy, "198.51.100.10", "patient123").await,
        StatusCode::OK,
        "the forged header slowed nothing of the address it named"
    );
}

/// The throttle's counts are in app.db: a restart gives the attacker no fresh attempts.
#[tokio::test]
async fn the_throttle_survives_a_restart() {
    let t = common::app_only().await;
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(
            login_from(&t, ATTACKER, "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let t = t.restart().await;
    let (s, b) = login_from(&t, ATTACKER, "patient123").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    let (s, b) = login_from(&t, "198.51.100.10", "patient123").await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// "Own reads flood the chain" (issue 12): 30 reads made 30 access transactions. Now reads
/// beyond the burst are 429 (with Retry-After), and each read served has its own entry.
#[tokio::test]
async fn reads_beyond_the_rate_are_429_and_each_read_served_has_its_entry() {
    let t = common::app_only().await;
    let p1 = t.login("p001").await;
    let mut served = 0;
    let mut refused = 0;
    for i in 0..30 {
        // The seed's password way and the session's, alike.
        let body = if i % 3 == 0 {
            json!({"patientId": "p001", "password": "patient123"})
        } else {
            json!({})
        };
        let client = if i % 3 == 0 { anon() } else { p1.clone() };
        let res = t
            .raw(common::request(
                "POST",
                "/api/patient_records",
                Some(body),
                client.bearer.as_deref(),
                None,
            ))
            .await;
        let retry = res.headers().get("retry-after").cloned();
        let (s, b) = body_of(res).await;
        match s {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(b["success"], false);
                assert!(retry.is_some(), "429 without Retry-After");
            }
            other => panic!("read {i}: {other} {b}"),
        }
    }
    assert_eq!(served, READ_BURST as usize);
    assert_eq!(refused, 30 - READ_BURST as usize);
    let (s, b) = t.get(&p1, "/api/access_log").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let reads = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reader_id"] == "p001")
        .count();
    assert_eq!(reads, served, "one access entry per read served: {b}");
}
