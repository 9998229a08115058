//! API tests of sessions and consent that need no chain: login, logout, expiry of sessions,
//! remote consent, malformed bodies, security headers.

mod common;

use axum::http::StatusCode;
use common::{Client, anon, body_of};
use serde_json::json;

#[tokio::test]
async fn login_seed_shape_and_wrong_credentials() {
    let t = common::app_only().await;
    let (s, b) = t
        .post(
            &anon(),
            "/api/login",
            json!({"role": "patient", "patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["userType"], "patient");
    assert_eq!(b["patientId"], "p001");
    assert!(b["token"].as_str().unwrap().len() >= 43);

    let (s, b) = t
        .post(
            &anon(),
            "/api/login",
            json!({"role": "doctor", "doctorId": "d001", "password": "doctor123"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["userType"], "doctor");
    assert_eq!(b["doctorId"], "d001");
    assert_eq!(b["department"], "Cardiology");

    for bad in [
        json!({"role": "patient", "patientId": "p001", "password": "wrong"}),
        json!({"role": "doctor", "doctorId": "p001", "password": "patient123"}),
        json!({"role": "patient", "patientId": "d001", "password": "doctor123"}),
        json!({"role": "patient", "patientId": "nobody", "password": "x"}),
    ] {
        let (s, b) = t.post(&anon(), "/api/login", bad).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            b,
            json!({"success": false, "message": "Invalid credentials"})
        );
    }
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_it() {
    let t = common::app_only().await;
    let res = t
        .raw(common::request(
            "POST",
            "/api/login",
            Some(json!({"role": "patient", "patientId": "p002", "password": "patient456"})),
            None,
            None,
        ))
        .await;
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // Named after this hospital's validator: two hospitals' sessions on one host never
    // overwrite each other.
    assert!(cookie.starts_with("medchain_hospital="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/")
    );
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let (_, body) = body_of(res).await;
    assert_eq!(body["token"], token.as_str());

    // Cookie works, bearer works.
    let by_cookie = Client::cookie(&token);
    let by_bearer = Client::bearer(&token);
    for c in [&by_cookie, &by_bearer] {
        let (s, b) = t.get(c, "/api/me").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["id"], "p002");
    }
    let (s, _) = t.post(&by_cookie, "/api/logout", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = t.get(&by_bearer, "/api/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["success"], false);
}

/// The login throttle's device cookie (OWASP's device cookies): set by a right password,
/// HttpOnly, SameSite=Strict, for `/api` only; a login that presents it gets the same device
/// back (renewed); a wrong password sets none.
#[tokio::test]
async fn login_sets_a_device_cookie_that_a_later_login_renews() {
    let t = common::app_only().await;
    let login = |password: &'static str, device: Option<String>| {
        let mut req = common::request(
            "POST",
            "/api/login",
            Some(json!({"role": "patient", "patientId": "p002", "password": password})),
            None,
            None,
        );
        if let Some(device) = device {
            req.headers_mut().insert("cookie", device.parse().unwrap());
        }
        t.raw(req)
    };
    let device_of = |res: &axum::http::Response<axum::body::Body>| {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("medchain_hospital_device="))
    };
    let res = login("patient456", None).await;
    let cookie = device_of(&res).expect("a device cookie");
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api;",
        "Max-Age=7776000",
    ] {
        assert!(cookie.contains(flag), "{flag}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let device = |pair: &str| pair.split(['=', '.']).nth(1).unwrap().to_string();
    let res = login("patient456", Some(pair.clone())).await;
    let renewed = device_of(&res).expect("renewed");
    assert_eq!(device(&renewed), device(&pair));
    // Another login of the same browser without it is another device.
    let res = login("patient456", None).await;
    assert_ne!(device(&device_of(&res).unwrap()), device(&pair));
    let res = login("wrong", Some(pair)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(device_of(&res).is_none());
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let t = common::app_only().await;
    let p = t.login("p001").await;
    t.advance(11 * 3600 * 1000).await;
    assert_eq!(t.get(&p, "/api/me").await.0, StatusCode::OK);
    t.advance(12 * 3600 * 1000 + 1).await;
    assert_eq!(t.get(&p, "/api/me").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_bodies_are_4xx_naming_the_field() {
    let t = common::app_only().await;
    let (s, b) = t
        .raw_text("POST", "/api/login", "{not json", Some("application/json"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["message"].as_str().unwrap().starts_with("Malformed JSON"),
        "{b}"
    );

    let (s, b) = t
        .post(
            &anon(),
            "/api/login",
            json!({"patientId": "p001", "password": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error_type"], "missing_field");
    assert_eq!(b["message"], "Missing required field: 'role'");

    let (s, b) = t
        .post(
            &anon(),
            "/api/login",
            json!({"role": 5, "patientId": "p001", "password": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["field"], "role");

    let (s, b) = t
        .post(
            &anon(),
            "/api/login",
            json!({"role": "nurse", "patientId": "p001", "password": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["field"], "role");

    let (s, b) = t.post(&anon(), "/api/login", json!([1, 2])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["success"], false);

    let (s, _) = t
        .raw_text(
            "POST",
            "/api/login",
            "role=patient",
            Some("application/x-www-form-urlencoded"),
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let big = "x".repeat(200 * 1024);
    let (s, b) = t
        .post(
            &anon(),
            "/api/login",
            json!({"role": "patient", "patientId": "p001", "password": big}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["success"], false);

    let (s, b) = t.get(&anon(), "/api/nothing-here").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["success"], false);
}

#[tokio::test]
async fn security_headers_and_no_cors() {
    let t = common::app_only().await;
    for path in ["/", "/app.js", "/api/me", "/healthz"] {
        let mut req = common::request("GET", path, None, None, None);
        req.headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        let res = t.raw(req).await;
        let h = res.headers();
        assert_eq!(h["content-security-policy"], medchain::http::CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
    }
    let res = t.raw(common::request("GET", "/", None, None, None)).await;
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let res = t
        .raw(common::request("GET", "/app.js", None, None, None))
        .await;
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let res = t
        .raw(common::request("GET", "/app.css", None, None, None))
        .await;
    assert_eq!(res.headers()["content-type"], "text/css; charset=utf-8");
    let res = t
        .raw(common::request("GET", "/api/me", None, None, None))
        .await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (s, b) = t.get(&anon(), "/healthz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["success"], true);
}

#[tokio::test]
async fn remote_consent_flow_and_its_rules() {
    let t = common::app_only().await;
    let d1 = t.login("d001").await;
    let d2 = t.login("d002").await;
    let p1 = t.login("p001").await;
    let p2 = t.login("p002").await;

    // Only doctors ask; only for a real patient; purpose required.
    assert_eq!(
        t.post(
            &anon(),
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "x"})
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.post(
            &p1,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "x"})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.post(
            &d1,
            "/api/consents/request",
            json!({"patientId": "d002", "purpose": "x"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (s, b) = t
        .post(&d1, "/api/consents/request", json!({"patientId": "p001"}))
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "Missing required field: 'purpose'")
    );

    let (s, b) = t
        .post(
            &d1,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Follow-up"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id1 = b["consent"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["consent"]["state"], "requested");
    let (_, b) = t
        .post(
            &d2,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Scan"}),
        )
        .await;
    let id2 = b["consent"]["id"].as_str().unwrap().to_string();
    // Requests live on chain: the patient sees them once their block commits.
    t.post(&d1, "/api/validate", json!({})).await;

    // The patient sees both, newest first, with who, department, purpose and time left.
    let (s, b) = t.get(&p1, "/api/consents/pending").await;
    assert_eq!(s, StatusCode::OK);
    let reqs = b["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2, "{b}");
    assert_eq!(reqs[1]["id"], id1.as_str());
    assert_eq!(reqs[1]["doctor_id"], "d001");
    assert_eq!(reqs[1]["doctor_name"], "Ada Byron");
    assert_eq!(reqs[1]["department"], "Cardiology");
    assert_eq!(reqs[1]["hospital"], "hospital");
    assert_eq!(reqs[1]["purpose"], "Follow-up");
    assert!(reqs[1]["time_left_ms"].as_u64().unwrap() > 0);
    assert_eq!(reqs[0]["id"], id2.as_str());
    assert_eq!(b["groups"][0]["hospital"], "hospital");
    assert_eq!(
        t.get(&p2, "/api/consents/pending").await.1["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        t.get(&d1, "/api/consents/pending").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.get(&anon(), "/api/consents/pending").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Another patient or a doctor cannot answer.
    assert_eq!(
        t.post(&p2, &format!("/api/consents/{id1}/approve"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.post(&d1, &format!("/api/consents/{id1}/approve"), json!({}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.post(&anon(), &format!("/api/consents/{id1}/deny"), json!({}))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Approving remotely needs the patient's device key; the grant needs no code.
    let (s, b) = t
        .post(&p1, &format!("/api/consents/{id1}/approve"), json!({}))
        .await;
    assert_eq!(
        (s, b["error_type"].clone()),
        (StatusCode::FORBIDDEN, json!("approve_on_device"))
    );
    let device = t.add_device(&p1).await;
    let (s, b) = t
        .post_signed(
            &p1,
            &device,
            &format!("/api/consents/{id1}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("otp").is_none(), "{b}");
    let grant = b["grantTxId"].as_str().unwrap().to_string();
    let (s, b) = t
        .post_signed(
            &p1,
            &device,
            &format!("/api/consents/{id1}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    // Denying at the home needs no device: the home signs for the patient.
    let (s, b) = t
        .post(&p1, &format!("/api/consents/{id2}/deny"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.post(&d1, "/api/validate", json!({})).await;

    // The doctors see the answers.
    let (_, b) = t.get(&d1, &format!("/api/consents/{id1}")).await;
    assert_eq!(b["consent"]["state"], "granted");
    assert_eq!(b["consent"]["answer"], grant.as_str());
    let (_, b) = t.get(&d2, &format!("/api/consents/{id2}")).await;
    assert_eq!(b["consent"]["state"], "denied");
    assert_eq!(
        t.get(&d2, &format!("/api/consents/{id1}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, b) = t.get(&d1, "/api/consents").await;
    let grants = b["consents"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{b}");
    assert_eq!(grants[0]["id"], grant.as_str());
    assert_eq!(grants[0]["attested"], "device");
    assert_eq!(grants[0]["state"], "active");
    assert!(
        t.get(&p1, "/api/consents/pending").await.1["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// The seed's application let d002 leave 100 requests, and the real one from d001 no longer
/// showed. A doctor has at most 3 pending requests to a patient (the 4th: 429, by the chain's
/// rule), and the patient's list shows the newest first, grouped by requesting hospital.
#[tokio::test]
async fn pending_requests_are_capped_per_doctor_and_the_newest_show() {
    let t = common::app_only().await;
    let d1 = t.login("d001").await;
    let d2 = t.login("d002").await;
    let p1 = t.login("p001").await;
    let ask = |purpose: String| json!({"patientId": "p001", "purpose": purpose});
    for i in 0..3 {
        let (s, b) = t
            .post(&d2, "/api/consents/request", ask(format!("flood {i}")))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    t.post(&d2, "/api/validate", json!({})).await;
    let (s, b) = t
        .post(&d2, "/api/consents/request", ask("flood 3".into()))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(
        b["message"],
        "too many pending requests from this doctor to this patient"
    );
    let (s, b) = t
        .post(&d1, "/api/consents/request", ask("The real one".into()))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.post(&d1, "/api/validate", json!({})).await;
    let (_, b) = t.get(&p1, "/api/consents/pending").await;
    let reqs = b["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 4, "{b}");
    assert_eq!(reqs[0]["purpose"], "The real one");
    assert_eq!(reqs[0]["doctor_id"], "d001");
}

#[tokio::test]
async fn in_person_consent_rules() {
    let t = common::app_only().await;
    let d1 = t.login("d001").await;
    let p1 = t.login("p001").await;
    let body = json!({"patientId": "p001", "password": "patient123"});
    assert_eq!(
        t.post(&anon(), "/api/request_consent", body.clone())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.post(&p1, "/api/request_consent", body.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["message"], "Invalid patient credentials");
    let (s, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "d002", "password": "doctor456"}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "Invalid patient credentials")
    );
    // The patient retypes (a right password within a second of a wrong one at the same desk
    // is a burst to the throttle, which then waits a second).
    t.advance(medchain::http::throttle::FIRST_DELAY_MS).await;
    let (s, b) = t.post(&d1, "/api/request_consent", body.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["success"], true);
    assert_eq!(b["expiry"], 300);
    let otp = b["otp"].as_str().unwrap();
    assert!(otp.len() == 6 && otp.bytes().all(|c| c.is_ascii_digit()));
    // Several at once; none replaces another.
    let (_, b2) = t.post(&d1, "/api/request_consent", body).await;
    assert_ne!(b2["consentId"], b["consentId"]);
    let (_, list) = t.get(&p1, "/api/consents").await;
    let grants = list["consents"].as_array().unwrap();
    assert_eq!(grants.len(), 2);
    assert!(
        grants.iter().all(|c| c["state"] == "active"
            && c["attested"] == "in_person"
            && c["scope"] == "write")
    );
    // The grant lives 5 minutes on chain.
    let left = grants[0]["time_left_ms"].as_u64().unwrap();
    // (A block time may be a few ms ahead of the manual clock: each is later than the last.)
    assert!(left > 290_000 && left <= 301_000, "{left}");
}

#[tokio::test]
async fn cross_origin_writes_are_refused_and_wrong_methods_are_json() {
    let t = common::app_only().await;
    let d1 = t.login("d001").await;
    let body = json!({"patientId": "p001", "purpose": "x"});
    let mut req = common::request(
        "POST",
        "/api/consents/request",
        Some(body.clone()),
        d1.bearer.as_deref(),
        None,
    );
    req.headers_mut()
        .insert("host", "127.0.0.1:5000".parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://127.0.0.1:8080".parse().unwrap());
    let (s, b) = body_of(t.raw(req).await).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b["success"], false);
    let mut req = common::request(
        "POST",
        "/api/consents/request",
        Some(body),
        d1.bearer.as_deref(),
        None,
    );
    req.headers_mut()
        .insert("host", "127.0.0.1:5000".parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://127.0.0.1:5000".parse().unwrap());
    assert_eq!(t.raw(req).await.status(), StatusCode::OK);

    let (s, b) = t.get(&d1, "/api/login").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(b["success"], false);
}

/// Wrong passwords for one id slow that id from that address (the throttle of
/// `medchain::http::throttle`, whose address tests are in api_limits.rs): the free attempts,
/// then 429 with Retry-After on every password path, doubling delays; other ids are
/// unaffected, and the right password after the delay starts afresh.
#[tokio::test]
async fn repeated_wrong_passwords_slow_the_id_for_a_while() {
    use medchain::http::throttle::{FIRST_DELAY_MS, FREE_ATTEMPTS};
    let t = common::app_only().await;
    let wrong = json!({"role": "patient", "patientId": "p001", "password": "guess"});
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(
            t.post(&anon(), "/api/login", wrong.clone()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let right = json!({"role": "patient", "patientId": "p001", "password": "patient123"});
    let refused = t
        .raw(common::request(
            "POST",
            "/api/login",
            Some(right.clone()),
            None,
            None,
        ))
        .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let (s, b) = body_of(refused).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["success"], false);
    // The seed's password paths count too; other accounts are unaffected.
    let (s, _) = t
        .post(
            &anon(),
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    t.login("p002").await;
    // After the delay, one more wrong guess: then twice the delay.
    t.advance(FIRST_DELAY_MS).await;
    assert_eq!(
        t.post(&anon(), "/api/login", wrong.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    t.advance(FIRST_DELAY_MS).await;
    assert_eq!(
        t.post(&anon(), "/api/login", right.clone()).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    t.advance(FIRST_DELAY_MS).await;
    assert_eq!(t.post(&anon(), "/api/login", right).await.0, StatusCode::OK);
    // The right password cleared the count: the free attempts again.
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(
            t.post(&anon(), "/api/login", wrong.clone()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}
