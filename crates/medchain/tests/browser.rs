//! The page in headless Debian Chromium, driven through chromedriver.
//!
//! - The flow: a doctor asks for consent remotely; the patient, in a second browser
//!   session, sees and denies it; in person, the doctor adds a record (with an XSS payload),
//!   signed on the doctor's device, and cuts a block; the patient sees the record, as text,
//!   with who signed it, and their own read in the access log. Screenshots go to `docs/`.
//! - Device keys (docs/SECURITY.md, issue 9, §5.0, 5.3, 5.6-5.8) on two hospitals of one
//!   embedded cluster, each page on its own loopback host (hospital on 127.0.0.1, clinic on
//!   127.0.0.2): the doctor's WebCrypto key signs a record, after the page refused bytes that
//!   were not what the doctor typed; the patient approves remote requests and revokes a grant
//!   from their own session; a key made at the clinic's page is approved by its code on the
//!   hospital's page and then signs on chain. Every outcome is checked on chain through the API.
//! - The page's decoder of signing bytes against ledger's vectors (`tx_v2.json`).
//!
//! Chromium counts every `http://127.0.0.0/8` origin as a secure context (checked below for
//! 127.0.0.1 and 127.0.0.2), so WebCrypto and IndexedDB work there without TLS.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`). Without them the tests say so and pass, except under CI (`CI=true`),
//! where they fail.

mod common;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::records::{Secret, answer_erasure, record_in_person};
use common::{Client, Served, TestApp, eventually};
use ledger::tx::{Decision, Refusal};
use medchain::http::{AppState, Chain, Clock, Settings};
use serde_json::{Value, json};
use thirtyfour::error::WebDriverErrorInner;
use thirtyfour::prelude::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const XSS: &str = "<img src=x onerror=alert(1)>";
const XSS_NOTES: &str = "<script>alert(2)</script> & more";
const OK: StatusCode = StatusCode::OK;

/// One browser test at a time: each runs a cluster and a browser on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether Chromium and chromedriver are installed; under CI their absence fails the test.
fn chromium_installed() -> bool {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").ok().as_deref() != Some("true"),
        "CI needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
    );
    eprintln!("skipped: install chromium and chromium-driver to run the browser tests");
    false
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_chromedriver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Driver(child), port)
}

async fn browser(driver_port: u16, profile: &Path, width: u32, height: u32) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(CHROMIUM).unwrap();
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        &format!("--window-size={width},{height}"),
        &format!("--user-data-dir={}", profile.display()),
    ] {
        caps.add_arg(arg).unwrap();
    }
    WebDriver::new(format!("http://127.0.0.1:{driver_port}"), caps)
        .await
        .expect("start a browser session")
}

/// What the page last said: its toast and any refusal to sign, for failure messages.
async fn page_says(d: &WebDriver) -> String {
    d.execute(
        "return ['toast', 'sign-error'].map((id) => document.getElementById(id).textContent).join(' | ')",
        Vec::new(),
    )
    .await
    .ok()
    .and_then(|r| r.convert::<String>().ok())
    .unwrap_or_default()
}

async fn wait_text(d: &WebDriver, css: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Ok(e) = d.find(By::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if want(&t) {
                return t;
            }
            last = t;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {css} (last text: {last:?}; the page says: {})",
                page_says(d).await
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn wait_shown(d: &WebDriver, css: &str) -> WebElement {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = d.find(By::Css(css)).await
            && e.is_displayed().await.unwrap_or(false)
        {
            return e;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {css} to show (the page says: {})",
                page_says(d).await
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn fill(d: &WebDriver, id: &str, text: &str) {
    let e = d.find(By::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Clicks `css` once it shows; the page redraws its lists every few seconds, so an element
/// gone stale between finding and clicking is found again.
async fn click(d: &WebDriver, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match wait_shown(d, css).await.click().await {
            Ok(()) => return,
            Err(e)
                if matches!(*e, WebDriverErrorInner::StaleElementReference(..))
                    && Instant::now() < deadline => {}
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

/// Clicks the patient's Refresh until `css` shows (the chain's state reaches the page). The
/// page is scrolled to its top first: scrolled down, the sticky top bar covers the button.
async fn refresh_until(d: &WebDriver, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.find_all(By::Css(css)).await.unwrap().is_empty() {
        if Instant::now() >= deadline {
            panic!("{css} never showed (the page says: {})", page_says(d).await);
        }
        let _ = d.execute("window.scrollTo(0, 0);", Vec::new()).await;
        click(d, "#refresh").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// The pending request `request` as the page lists it.
fn pending_item(request: &str) -> String {
    format!("[data-test=pending-request][data-id='{request}']")
}

/// Approves the pending request `request` on the page's device (once the page lists it).
async fn approve_on_page(d: &WebDriver, request: &str) {
    let item = pending_item(request);
    refresh_until(d, &item).await;
    click(d, &format!("{item} [data-test=approve]")).await;
    wait_text(d, "#approved-doctor", |t| t == "Dr Ada Byron").await;
}

async fn text_of(d: &WebDriver, css: &str) -> String {
    d.find(By::Css(css)).await.unwrap().text().await.unwrap()
}

async fn login(d: &WebDriver, base: &str, role: &str, id: &str, password: &str) {
    d.goto(base).await.unwrap();
    wait_shown(d, "#login-view").await;
    d.find(By::Css(format!("[data-test=role-{role}]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(d, "login-id", id).await;
    fill(d, "login-password", password).await;
    d.find(By::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_shown(d, &format!("#{role}-view")).await;
}

/// Waits until this page's device key has `status` (`live`, `asked`, ...), as the page shows
/// it, and returns the key (64 hex digits) the page keeps in IndexedDB.
async fn device_key(d: &WebDriver, status: &str) -> String {
    wait_shown(d, &format!("#key-badge[data-status={status}]")).await;
    let key = d
        .execute(
            "return (async () => {
               const db = await new Promise((ok, no) => {
                 const r = indexedDB.open('medchain-device-keys'); r.onsuccess = () => ok(r.result); r.onerror = no; });
               const all = await new Promise((ok, no) => {
                 const r = db.transaction('keys').objectStore('keys').getAll(); r.onsuccess = () => ok(r.result); r.onerror = no; });
               db.close();
               return all.length === 1 ? all[0].publicKey : `${all.length} keys`;
             })()",
            Vec::new(),
        )
        .await
        .unwrap();
    let key: String = key.convert().unwrap();
    assert_eq!(key.len(), 64, "one key in this origin's IndexedDB: {key}");
    key
}

/// Waits for the toast to go, so that screenshots show the page.
/// Before a screenshot: no toast over the page, no request in flight.
async fn settle(d: &WebDriver) {
    let _ = d
        .execute(
            "document.getElementById('toast').hidden = true;",
            Vec::new(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let busy = d
            .find_all(By::Css(
                "button:disabled#cut-block, button:disabled#ar-submit",
            ))
            .await
            .map(|v| !v.is_empty())
            .unwrap_or(false);
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Cuts a block at `at` (as a doctor may), or finds nothing pending.
async fn cut(at: &TestApp, doctor: &Client) {
    let (s, b) = at.post(doctor, "/api/validate", json!({})).await;
    assert!(
        s == OK || b["message"] == "No pending records to validate",
        "{s} {b}"
    );
}

/// `who`'s key `public` as the chain shows it at `at` (`/api/identity`).
async fn chain_key(at: &TestApp, who: &Client, public: &str) -> Option<Value> {
    let (s, b) = at.get(who, "/api/identity").await;
    assert_eq!(s, OK, "{b}");
    b["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["publicKey"] == public)
        .cloned()
}

/// A signed-in patient's grants, from the chain (`/api/consents`).
async fn grants_of(at: &TestApp, patient: &Client) -> Vec<Value> {
    let (s, b) = at.get(patient, "/api/consents").await;
    assert_eq!(s, OK, "{b}");
    b["consents"].as_array().unwrap().clone()
}

fn grant_for_request(grants: &[Value], request: &str) -> Option<Value> {
    grants.iter().find(|g| g["request"] == request).cloned()
}

/// A doctor's remote request (signed by the hospital for them), on chain once `cut`.
async fn remote_request(at: &TestApp, doctor: &Client, purpose: &str) -> String {
    let (s, b) = at
        .post(
            doctor,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": purpose}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    b["consent"]["id"].as_str().unwrap().to_string()
}

/// The turn of a browser test: `None` (skip) without Chromium.
async fn browser_turn() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if !chromium_installed() {
        return None;
    }
    Some(ONE_AT_A_TIME.lock().await)
}

/// One hospital's page on 127.0.0.1 over an embedded cluster, and its address.
async fn one_page() -> (TestApp, Served, String) {
    let t = common::app_only().await;
    let served = t.listen_on("127.0.0.1").await;
    let base = format!("http://{}/", served.addr);
    (t, served, base)
}

/// Runs `flow` with a chromedriver; the browsers it opens are closed by it.
async fn with_chromedriver<F, Fut>(flow: F)
where
    F: FnOnce(u16, PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (_chromedriver, port) = start_chromedriver();
    let profiles = tempfile::tempdir().unwrap();
    flow(port, profiles.path().to_path_buf()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_record_block_and_access_log_in_two_browsers() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    // The service on a real socket, real clock, a 3 s batch window.
    let dir = tempfile::tempdir().unwrap();
    let timing = node::Timing {
        batch_window: Duration::from_secs(3),
        ..node::Timing::default()
    };
    let chain_dir = dir.path().join("chain");
    let cluster = tokio::task::spawn_blocking(move || node::Cluster::open(&chain_dir, timing))
        .await
        .unwrap()
        .unwrap();
    let handles = cluster.handles();
    let flows = common::demo_flows(dir.path(), &cluster, Clock::System).await;
    let chain = Chain::new(handles[0].clone(), handles, Duration::from_secs(3));
    let state = AppState::new(flows, chain, Settings::default(), Clock::System);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medchain::http::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let (_chromedriver, port) = start_chromedriver();
    let profiles = tempfile::tempdir().unwrap();
    let doctor = browser(port, &profiles.path().join("doctor"), 1440, 1800).await;
    let patient = browser(port, &profiles.path().join("patient"), 1280, 1400).await;
    let result = flow(&doctor, &patient, &base).await;
    let _ = doctor.quit().await;
    let _ = patient.quit().await;
    let _ = stop.send(());
    let _ = server.await;
    drop(cluster);
    result.unwrap();
}

async fn flow(doctor: &WebDriver, patient: &WebDriver, base: &str) -> WebDriverResult<()> {
    login(doctor, base, "doctor", "d001", "doctor123").await;
    assert_eq!(
        doctor
            .find(By::Id("ar-department"))
            .await?
            .value()
            .await?
            .as_deref(),
        Some("Cardiology")
    );
    // At the doctor's home, the page's new key is added at once.
    device_key(doctor, "live").await;
    login(patient, base, "patient", "p001", "patient123").await;
    device_key(patient, "live").await;

    // 1. The doctor asks remotely (signed on the doctor's device); the request is on chain
    // once its block commits.
    doctor.find(By::Id("tab-remote")).await?.click().await?;
    fill(doctor, "rc-patient", "p001").await;
    fill(doctor, "rc-purpose", "Follow-up of blood tests").await;
    doctor.find(By::Id("rc-submit")).await?.click().await?;
    wait_shown(doctor, "[data-test=rc-item]").await;
    doctor.find(By::Id("cut-block")).await?.click().await?;
    wait_text(doctor, "#cut-result", |t| {
        t.contains("committed") || t.contains("No pending")
    })
    .await;

    // 2. The patient sees who, department, purpose and time left (from the chain), and
    // denies it on their device.
    refresh_until(patient, "[data-test=pending-request]").await;
    assert_eq!(
        wait_text(patient, "[data-test=pending-doctor]", |t| !t.is_empty()).await,
        "d001"
    );
    assert_eq!(
        text_of(patient, "[data-test=pending-department]").await,
        "Cardiology"
    );
    assert_eq!(
        text_of(patient, "[data-test=pending-purpose]").await,
        "Follow-up of blood tests"
    );
    wait_text(
        patient,
        "[data-test=pending-request] [data-countdown]",
        |t| t.contains("min"),
    )
    .await;
    settle(patient).await;
    patient
        .screenshot(&docs_dir().join("screenshot-patient-request.png"))
        .await?;
    patient
        .find(By::Css("[data-test=pending-request] [data-test=deny]"))
        .await?
        .click()
        .await?;
    wait_text(patient, "#toast", |t| t.contains("denied")).await;

    // 3. In person: the patient's password on the doctor's screen gives a code once the grant
    // is on chain; the doctor adds a record with it (the diagnosis is an XSS payload), signed
    // on the doctor's device, and cuts.
    doctor.find(By::Id("tab-inperson")).await?.click().await?;
    fill(doctor, "ip-patient", "p001").await;
    fill(doctor, "ip-password", "patient123").await;
    doctor.find(By::Id("ip-submit")).await?.click().await?;
    let code = wait_text(doctor, "#ip-code", |t| t.len() == 6).await;
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    fill(doctor, "ar-patient", "p001").await;
    fill(doctor, "ar-otp", &code).await;
    fill(doctor, "ar-diagnosis", XSS).await;
    fill(doctor, "ar-prescription", "Aspirin 75 mg daily").await;
    fill(doctor, "ar-notes", XSS_NOTES).await;
    doctor.find(By::Id("ar-submit")).await?.click().await?;
    wait_text(doctor, "#ar-result", |t| {
        t.contains("Record added to batch")
    })
    .await;
    doctor.find(By::Id("cut-block")).await?.click().await?;
    // The 3 s batch window may have cut the block already: then nothing is pending.
    let cut = wait_text(doctor, "#cut-result", |t| {
        t.contains("committed") || t.contains("No pending")
    })
    .await;
    assert!(
        cut.contains("validators approved") || cut.contains("No pending"),
        "{cut}"
    );
    wait_shown(doctor, "[data-test=block-row]").await;
    wait_text(doctor, "[data-test=validator] [data-test=primary]", |t| {
        t.eq_ignore_ascii_case("primary")
    })
    .await;
    assert_eq!(
        doctor
            .find_all(By::Css("[data-test=validator]"))
            .await?
            .len(),
        4
    );
    settle(doctor).await;
    doctor
        .screenshot(&docs_dir().join("screenshot-doctor.png"))
        .await?;

    // 4. The patient sees the record, as text, with its block, its grant and who signed it,
    // and their own read, served here. Refresh until that read is committed (the batch window
    // is 3 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        patient.find(By::Id("refresh")).await?.click().await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut seen = false;
        for r in patient
            .find_all(By::Css("[data-test=access-reader]"))
            .await?
        {
            seen |= r.text().await? == "p001";
        }
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the patient's own read never showed in the access log"
        );
    }
    assert_eq!(
        wait_text(patient, "#history-list [data-test=r-diagnosis]", |t| !t
            .is_empty())
        .await,
        XSS
    );
    assert_eq!(
        text_of(patient, "#history-list [data-test=r-notes]").await,
        XSS_NOTES
    );
    assert_eq!(
        text_of(patient, "#history-list [data-test=r-signer]").await,
        "signed on Dr Ada Byron's device (key made at hospital's page)"
    );
    assert_eq!(
        text_of(patient, "#history-list [data-test=r-attested]").await,
        "consent attested in person"
    );
    assert!(
        text_of(patient, "#history-list [data-test=r-height]")
            .await
            .parse::<u64>()
            .is_ok()
    );
    assert!(
        text_of(patient, "#history-list [data-test=r-consent]")
            .await
            .len()
            > 10
    );
    assert!(
        patient
            .find_all(By::Css("#history-list img, #history-list script"))
            .await?
            .is_empty(),
        "markup was rendered"
    );
    wait_text(patient, "[data-test=access-reader]", |t| t == "p001").await;
    assert_eq!(
        text_of(patient, "[data-test=access-served]").await,
        "hospital"
    );
    assert!(patient.get_alert_text().await.is_err(), "an alert ran");
    assert!(doctor.get_alert_text().await.is_err(), "an alert ran");
    settle(patient).await;
    patient
        .screenshot(&docs_dir().join("screenshot-patient.png"))
        .await?;

    // 5. The patient's dashboard on a phone.
    patient.set_window_rect(0, 0, 390, 844).await?;
    patient.find(By::Id("refresh")).await?.click().await?;
    wait_text(patient, "#history-list [data-test=r-diagnosis]", |t| {
        t == XSS
    })
    .await;
    settle(patient).await;
    patient
        .screenshot(&docs_dir().join("screenshot-patient-phone.png"))
        .await?;

    // 6. Log out ends the session.
    patient.find(By::Id("logout")).await?.click().await?;
    wait_shown(patient, "#login-view").await;
    Ok(())
}

/// Two hospitals of one embedded cluster, each page on its own loopback host: hospital
/// (validator 0, home of the demo people) on 127.0.0.1, clinic (validator 1, the demo logins
/// linked) on 127.0.0.2.
struct TwoPages {
    hospital: TestApp,
    clinic: TestApp,
    hospital_url: String,
    clinic_url: String,
    _served: (Served, Served),
}

async fn two_pages() -> TwoPages {
    let (hospital, clinic) = common::two_hospitals().await;
    let h = hospital.listen_on("127.0.0.1").await;
    let c = clinic.listen_on("127.0.0.2").await;
    TwoPages {
        hospital_url: format!("http://{}/", h.addr),
        clinic_url: format!("http://{}/", c.addr),
        hospital,
        clinic,
        _served: (h, c),
    }
}

async fn is_secure_context(d: &WebDriver) -> bool {
    d.execute("return window.isSecureContext", Vec::new())
        .await
        .unwrap()
        .convert()
        .unwrap()
}

/// Makes the page see the bytes it is asked to sign with `from` replaced by `to` (hex), once,
/// as a node that asks for something else than what the user typed would; counts the page's
/// posts of signatures in `window.signaturesPosted`.
async fn tamper_once(d: &WebDriver, from: &str, to: &str) {
    d.execute(
        "const [from, to] = arguments;
         const real = window.fetch;
         window.signaturesPosted = 0;
         let armed = true;
         window.fetch = async (url, opts) => {
           if (String(url).startsWith('/api/sign/')) window.signaturesPosted += 1;
           const res = await real(url, opts);
           if (res.status !== 202 || !armed) return res;
           const data = await res.clone().json();
           armed = false;
           data.signingBytes = data.signingBytes.replace(from, to);
           return new Response(JSON.stringify(data), { status: 202, headers: { 'Content-Type': 'application/json' } });
         };",
        vec![json!(from), json!(to)],
    )
    .await
    .unwrap();
}

async fn signatures_posted(d: &WebDriver) -> u64 {
    d.execute("return window.signaturesPosted", Vec::new())
        .await
        .unwrap()
        .convert()
        .unwrap()
}

/// (1) The doctor's device key signs a record in Chromium, and the chain shows a device
/// signature for it. Before that, the page refuses bytes whose department is not the one the
/// doctor typed, and posts no signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctors_device_key_signs_a_record_in_chromium() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    let (t, _served, base) = one_page().await;
    let d1 = t.login("d001").await;
    let p1 = t.login("p001").await;
    with_chromedriver(|port, profiles| async move {
        let doctor = browser(port, &profiles.join("doctor"), 1440, 1400).await;
        login(&doctor, &base, "doctor", "d001", "doctor123").await;
        assert!(is_secure_context(&doctor).await, "http://127.0.0.1 is a secure context");

        // The key: made here, not extractable, added by the doctor's home, live on chain.
        let key = device_key(&doctor, "live").await;
        let extractable: Value = doctor
            .execute(
                "return (async () => {
                   const db = await new Promise((ok) => { const r = indexedDB.open('medchain-device-keys'); r.onsuccess = () => ok(r.result); });
                   const rec = await new Promise((ok) => { const r = db.transaction('keys').objectStore('keys').getAll(); r.onsuccess = () => ok(r.result[0]); });
                   let exported = true;
                   try { await crypto.subtle.exportKey('pkcs8', rec.privateKey); } catch (e) { exported = false; }
                   return { extractable: rec.privateKey.extractable, exported, algorithm: rec.privateKey.algorithm.name };
                 })()",
                Vec::new(),
            )
            .await
            .unwrap()
            .json()
            .clone();
        assert_eq!(
            extractable,
            json!({"extractable": false, "exported": false, "algorithm": "Ed25519"})
        );
        let on_chain = chain_key(&t, &d1, &key).await.expect("the page's key on chain");
        assert_eq!(on_chain["kind"], "device");
        assert_eq!(on_chain["status"], "live");
        assert_eq!(on_chain["origin"], "hospital");
        assert_eq!(on_chain["addedBy"], "custodial", "added by the home");
        wait_shown(&doctor, &format!("[data-test=key][data-key='{key}'] [data-test=this-browser]")).await;

        // In person: the code, then a record whose bytes the page checks.
        fill(&doctor, "ip-patient", "p001").await;
        fill(&doctor, "ip-password", "patient123").await;
        click(&doctor, "#ip-submit").await;
        let code = wait_text(&doctor, "#ip-code", |t| t.len() == 6).await;
        fill(&doctor, "ar-patient", "p001").await;
        fill(&doctor, "ar-otp", &code).await;
        fill(&doctor, "ar-diagnosis", "Atrial fibrillation").await;
        fill(&doctor, "ar-prescription", "Apixaban 5 mg twice daily").await;

        // A node that asks for another department than the doctor's: refused, nothing signed.
        tamper_once(&doctor, &hex::encode("Cardiology"), &hex::encode("Psychiatry")).await;
        click(&doctor, "#ar-submit").await;
        let refusal = wait_text(&doctor, "#sign-error", |t| !t.is_empty()).await;
        assert_eq!(
            refusal,
            "Refused to sign: its department is not the one you asked for."
        );
        assert_eq!(signatures_posted(&doctor).await, 0);
        assert!(
            text_of(&doctor, "#ar-result").await.is_empty(),
            "no record was added"
        );

        // The same form again: the bytes are what the doctor typed; signed and posted once.
        click(&doctor, "#ar-submit").await;
        let added = wait_text(&doctor, "#ar-result", |t| t.contains("Record added to batch")).await;
        assert_eq!(signatures_posted(&doctor).await, 1);
        assert!(!doctor.find(By::Id("sign-error")).await.unwrap().is_displayed().await.unwrap());
        cut(&t, &d1).await;

        // On chain: the record, signed on the doctor's device.
        let record = eventually("the record is committed", || async {
            let (s, b) = t.post(&p1, "/api/patient_records", json!({})).await;
            assert_eq!(s, OK, "{b}");
            b["records"].as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(record["diagnosis"], "Atrial fibrillation");
        assert_eq!(record["signerKind"], "device");
        assert_eq!(record["origin"], "hospital");
        assert_eq!(record["doctorName"], "Ada Byron");
        assert_eq!(record["attested"], "in_person");
        let tx = record["tx_id"].as_str().unwrap();
        assert!(added.contains(&tx[..12]), "{added} names {tx}");
        let (_, status) = t.get(&d1, &format!("/api/tx/{tx}")).await;
        assert_eq!(status["status"], "committed", "{status}");
        // The only device key of the doctor is the page's.
        let (_, identity) = t.get(&d1, "/api/identity").await;
        let devices: Vec<&Value> = identity["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kind"] == "device")
            .collect();
        assert_eq!(devices.len(), 1, "{identity}");
        assert_eq!(devices[0]["publicKey"], key.as_str());
        let _ = doctor.quit().await;
    })
    .await;
}

/// (2) The patient approves remote requests and revokes a grant from their own browser
/// session, each signed on their device; the chain shows the grants attested `device` and the
/// revoked one revoked (a record under it is refused). The dashboard shows how each grant was
/// given and who signed each record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_approves_a_request_and_revokes_a_grant_from_their_browser() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    let (t, _served, base) = one_page().await;
    let d1 = t.login("d001").await;
    let p1 = t.login("p001").await;
    let r1 = remote_request(&t, &d1, "Review of the ECG").await;
    let r2 = remote_request(&t, &d1, "Second opinion").await;
    cut(&t, &d1).await;
    with_chromedriver(|port, profiles| async move {
        let patient = browser(port, &profiles.join("patient"), 1280, 1400).await;
        login(&patient, &base, "patient", "p001", "patient123").await;
        let key = device_key(&patient, "live").await;

        // Both requests show; the patient approves each on this device.
        for (request, purpose) in [(&r1, "Review of the ECG"), (&r2, "Second opinion")] {
            let item = pending_item(request);
            refresh_until(&patient, &item).await;
            assert_eq!(
                text_of(&patient, &format!("{item} [data-test=pending-purpose]")).await,
                purpose
            );
            approve_on_page(&patient, request).await;
            let grant = eventually("the approval is on chain", || async {
                grant_for_request(&grants_of(&t, &p1).await, request)
            })
            .await;
            assert_eq!(grant["attested"], "device", "{grant}");
            assert_eq!(grant["state"], "active", "{grant}");
            assert_eq!(grant["scope"], "write");
        }
        assert!(
            !patient
                .find(By::Id("sign-error"))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap()
        );
        let grants = grants_of(&t, &p1).await;
        let g1 = grant_for_request(&grants, &r1).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let g2 = grant_for_request(&grants, &r2).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();

        // The second grant, revoked from this session (two clicks), then ordered by a block.
        let revoke = format!("[data-test=grant][data-id='{g2}'] [data-test=revoke-grant]");
        wait_text(
            &patient,
            &format!("[data-test=grant][data-id='{g2}'] [data-test=grant-attested]"),
            |t| t == "approved on your device",
        )
        .await;
        click(&patient, &revoke).await;
        click(&patient, &revoke).await;
        wait_text(&patient, "#toast", |t| t.contains("Revocation")).await;
        cut(&t, &d1).await;
        let revoked = eventually("the revocation is on chain", || async {
            let g = grant_for_request(&grants_of(&t, &p1).await, &r2)?;
            (g["state"] == "revoked").then_some(g)
        })
        .await;
        let revocation = revoked["revoked_by"].as_str().unwrap();
        let (_, status) = t.get(&p1, &format!("/api/tx/{revocation}")).await;
        assert_eq!(status["status"], "committed", "{status}");
        assert_eq!(
            grant_for_request(&grants_of(&t, &p1).await, &r1).unwrap()["state"],
            "active",
            "the first grant stays live"
        );
        wait_text(
            &patient,
            &format!("[data-test=grant][data-id='{g2}'] [data-test=grant-state]"),
            |t| t.eq_ignore_ascii_case("revoked"),
        )
        .await;

        // A record under the revoked grant is refused; one under the first grant, signed on
        // the doctor's device, and one under an in-person grant, signed by the hospital.
        let record = |grant: &str| {
            json!({"patientId": "p001", "grantId": grant,
                   "medical_data": {"diagnosis": "Hypertension", "prescription": "Ramipril 5 mg"}})
        };
        let (s, b) = t.post(&d1, "/api/add_record", record(&g2)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let doctor_device = t.add_device(&d1).await;
        let (s, b) = t
            .post_signed(&d1, &doctor_device, "/api/add_record", record(&g1))
            .await;
        assert_eq!(s, OK, "{b}");
        let otp = t.in_person_code(&d1, "p001").await;
        let (s, b) = t
            .post(
                &d1,
                "/api/add_record",
                json!({"patientId": "p001", "otp": otp,
                       "medical_data": {"diagnosis": "Angina", "prescription": "Nitroglycerin"}}),
            )
            .await;
        assert_eq!(s, OK, "{b}");
        cut(&t, &d1).await;

        let deadline = Instant::now() + Duration::from_secs(20);
        let signers = loop {
            click(&patient, "#refresh").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut texts = Vec::new();
            for e in patient
                .find_all(By::Css("#history-list [data-test=r-signer]"))
                .await
                .unwrap()
            {
                texts.push(e.text().await.unwrap());
            }
            if texts.len() == 2 {
                break texts;
            }
            assert!(
                Instant::now() < deadline,
                "the records never showed: {texts:?}"
            );
        };
        assert!(
            signers.contains(
                &"signed on Dr Ada Byron's device (key made at hospital's page)".to_string()
            ),
            "{signers:?}"
        );
        assert!(
            signers.contains(&"signed by hospital for Dr Ada Byron".to_string()),
            "{signers:?}"
        );
        let in_person = grants_of(&t, &p1)
            .await
            .into_iter()
            .find(|g| g["attested"] == "in_person")
            .expect("the in-person grant");
        assert_eq!(in_person["state"], "used");
        wait_text(
            &patient,
            &format!(
                "[data-test=grant][data-id='{}'] [data-test=grant-attested]",
                in_person["id"].as_str().unwrap()
            ),
            |t| t == "attested in person at hospital",
        )
        .await;
        // Still this browser's one key; the patient's identity lists it live.
        assert_eq!(chain_key(&t, &p1, &key).await.unwrap()["status"], "live");
        let _ = patient.quit().await;
    })
    .await;
}

/// (3) A key made at the clinic's page (a second origin in the same browser) is added by the
/// code the clinic shows, approved on the hospital's page, which already holds a key of the
/// patient's. The key is then live on chain, made at the clinic, added by a device, and signs
/// at the clinic: a denial (an approval of a request whose purpose the clinic cannot open is
/// sent to the patient's home).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_the_second_hospitals_page_is_approved_by_code_on_the_first() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    let pages = two_pages().await;
    let TwoPages {
        hospital, clinic, ..
    } = &pages;
    let p1_home = hospital.login("p001").await;
    let p1_clinic = clinic.login("p001").await;
    let d1 = hospital.login("d001").await;
    let (hospital_url, clinic_url) = (pages.hospital_url.clone(), pages.clinic_url.clone());
    with_chromedriver(|port, profiles| async move {
        let d = browser(port, &profiles.join("patient"), 1280, 1400).await;
        // The first page: the patient's home, where the key is added at once.
        login(&d, &hospital_url, "patient", "p001", "patient123").await;
        let home_key = device_key(&d, "live").await;
        let first = d.window().await.unwrap();

        // The second page, in a new tab: the clinic asks, and shows a code.
        let second = d.new_tab().await.unwrap();
        d.switch_to_window(second.clone()).await.unwrap();
        login(&d, &clinic_url, "patient", "p001", "patient123").await;
        assert!(
            is_secure_context(&d).await,
            "http://127.0.0.2 is a secure context"
        );
        let clinic_key = device_key(&d, "asked").await;
        assert_ne!(clinic_key, home_key, "one key per origin");
        let code = wait_text(&d, "#device-code", |t| t.len() == 6).await;
        assert_eq!(
            chain_key(clinic, &p1_clinic, &clinic_key).await,
            None,
            "not a key before it is approved"
        );
        // The ask is on chain at the hospital's validator too.
        eventually("the ask reaches the hospital", || async {
            let (_, b) = hospital.get(&p1_home, "/api/asks").await;
            b["asks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["code"] == code.as_str())
                .then_some(())
        })
        .await;

        // The first page: a wrong code finds nothing; the right one states its effect, and
        // the patient approves it there, signed with the home page's key.
        d.switch_to_window(first).await.unwrap();
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        fill(&d, "ask-code", &wrong).await;
        click(&d, "#ask-find").await;
        wait_text(&d, "#ask-result", |t| {
            t.starts_with("No request to approve has this code")
        })
        .await;
        fill(&d, "ask-code", &code).await;
        click(&d, "#ask-find").await;
        assert_eq!(
            wait_text(&d, "#ask-sentence", |t| !t.is_empty()).await,
            "Let a browser at clinic's page sign as you."
        );
        click(&d, "#ask-approve").await;
        wait_text(&d, "#ask-result", |t| {
            t == "The browser at clinic's page now signs for you."
        })
        .await;

        // On chain, at both validators: the clinic page's key, live, made at the clinic, added
        // by a device.
        for (at, who) in [(clinic, &p1_clinic), (hospital, &p1_home)] {
            let key = eventually("the key is live", || async {
                chain_key(at, who, &clinic_key)
                    .await
                    .filter(|k| k["status"] == "live")
            })
            .await;
            assert_eq!(key["kind"], "device");
            assert_eq!(key["origin"], "clinic");
            assert_eq!(key["addedBy"], "device");
        }

        // The second page sees its key live, and signs with it. The clinic holds no key of
        // the hospital doctor's request (its purpose is sealed for the doctor's home and the
        // patient's): approving it there sends the patient home (docs/SECURITY.md §16.15),
        // and the clinic's key denies it instead.
        d.switch_to_window(second).await.unwrap();
        device_key(&d, "live").await;
        let request = remote_request(hospital, &d1, "Cardiology follow-up").await;
        cut(hospital, &d1).await;
        let item = pending_item(&request);
        refresh_until(&d, &item).await;
        assert_eq!(
            text_of(&d, &format!("{item} [data-test=pending-purpose]")).await,
            "purpose readable at your home hospital, hospital"
        );
        click(&d, &format!("{item} [data-test=approve]")).await;
        wait_text(&d, "#toast", |t| {
            t.contains("approve this at your home hospital, hospital")
        })
        .await;
        click(&d, &format!("{item} [data-test=deny]")).await;
        wait_text(&d, "#toast", |t| t.contains("denied")).await;
        let d1_at_clinic = clinic.login("d001").await;
        cut(clinic, &d1_at_clinic).await;
        let denied = eventually("the clinic's denial is on chain", || async {
            let (s, b) = hospital
                .get(&p1_home, &format!("/api/consents/{request}"))
                .await;
            assert_eq!(s, OK, "{b}");
            (b["consent"]["state"] == "denied").then_some(b)
        })
        .await;
        assert!(grant_for_request(&grants_of(hospital, &p1_home).await, &request).is_none());
        assert!(denied["consent"]["answer"].is_string(), "{denied}");
        let _ = d.quit().await;
    })
    .await;
}

/// The page's decoder reads every kind of ledger's vectors (`tx_v2.json`) exactly as the
/// ledger wrote them, reads their bodies, builds the proof-of-possession bytes and the ask
/// codes as the node does, and refuses bytes cut short, lengthened or of an unknown kind.
/// The patient's erasure requests and a key added with their password, on the home's page
/// (docs/SECURITY.md, issue 10, §4.2, §7): the page tells of a key added with the password,
/// when it may share the history, and what to do if it was not them; the patient asks on a
/// record for its erasure, sees the hospital's refusal with its reason, asks again, and sees
/// the record erased "at the patient's request" with the date, its content gone from the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_asks_for_an_erasure_and_is_told_of_a_key_added_with_their_password() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    let (t, _served, base) = one_page().await;
    let d1 = t.login("d001").await;
    let p1 = t.login("p001").await;
    let secret = Secret::new("page");
    let record = record_in_person(&t, &d1, "p001", &secret).await;
    // A key added with p001's password at the home (custodially), in no browser of theirs.
    let other = t.add_device(&p1).await.public_hex();
    let young_until = chain_key(&t, &p1, &other).await.unwrap()["youngUntilMs"]
        .as_u64()
        .expect("a key added with the password is young");
    with_chromedriver(|port, profiles| async move {
        let patient = browser(port, &profiles.join("patient"), 1280, 1600).await;
        login(&patient, &base, "patient", "p001", "patient123").await;
        device_key(&patient, "live").await;

        // The notice of the key added with the password.
        let notice = format!("[data-test=young-key-notice][data-key='{other}']");
        wait_shown(&patient, &notice).await;
        let until = patient
            .find(By::Css(&notice))
            .await
            .unwrap()
            .attr("data-until")
            .await
            .unwrap();
        assert_eq!(until, Some(young_until.to_string()));
        assert!(
            text_of(&patient, &format!("{notice} [data-test=young-key-added]"))
                .await
                .contains("added for you at hospital"),
        );
        assert!(
            text_of(&patient, &format!("{notice} [data-test=young-key-added]"))
                .await
                .ends_with("with your password.")
        );
        assert!(
            text_of(&patient, &format!("{notice} [data-test=young-key-until]"))
                .await
                .starts_with("It cannot share your history with another hospital")
        );
        assert!(
            text_of(&patient, &format!("{notice} [data-test=young-key-not-you]"))
                .await
                .starts_with("Not you? Revoke it now")
        );

        // An erasure requested on the record (two clicks), waiting for the hospital.
        let item = format!("[data-test=record][data-tx='{record}']");
        let button = format!("{item} [data-test=request-erasure]");
        refresh_until(&patient, &button).await;
        click(&patient, &button).await;
        click(&patient, &button).await;
        wait_text(&patient, "#toast", |t| t.contains("Erasure requested")).await;
        let listed = format!("[data-test=erasure][data-tx='{record}']");
        wait_text(
            &patient,
            &format!("{listed} [data-test=erasure-notice]"),
            |t| t.starts_with("waiting for hospital's answer since"),
        )
        .await;
        wait_text(&patient, &format!("{item} [data-test=r-erasure]"), |t| {
            t.starts_with("Erasure requested: waiting for hospital's answer")
        })
        .await;
        let first = erasures_of(&t, &p1).await[0]["id"]
            .as_str()
            .unwrap()
            .to_string();

        // Refused, with its reason; the record stays, and may be asked for again.
        answer_erasure(
            &t,
            &first,
            Decision::Refuse {
                reason: Refusal::RetentionPeriod,
                until_ms: Some(2_051_222_400_000),
            },
        );
        let refused = format!("[data-test=erasure][data-id='{first}']");
        wait_text(
            &patient,
            &format!("{refused} [data-test=erasure-state]"),
            |t| t.eq_ignore_ascii_case("refused"),
        )
        .await;
        assert!(
            text_of(&patient, &format!("{refused} [data-test=erasure-notice]"))
                .await
                .ends_with(": a legal retention period, until 2035-01-01")
        );
        click(&patient, &button).await;
        click(&patient, &button).await;
        let second = eventually("the second request", || async {
            let all = erasures_of(&t, &p1).await;
            (all.len() == 2).then(|| all[0]["id"].as_str().unwrap().to_string())
        })
        .await;

        // Erased: the list says so, and the record, read again, shows the notice only.
        answer_erasure(&t, &second, Decision::Erase);
        let erased = format!("[data-test=erasure][data-id='{second}']");
        let said = wait_text(
            &patient,
            &format!("{erased} [data-test=erasure-notice]"),
            |t| t.starts_with("erased at the patient's request on"),
        )
        .await;
        let erased_record = format!("{item}[data-state=erased]");
        refresh_until(&patient, &erased_record).await;
        assert_eq!(
            text_of(
                &patient,
                &format!("{erased_record} [data-test=r-diagnosis]")
            )
            .await,
            said
        );
        assert!(
            !patient
                .find(By::Css(format!("{erased_record} .r-actions")))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap(),
            "an erased record offers no erasure"
        );
        let page = patient.source().await.unwrap();
        assert!(
            secret.texts().iter().all(|s| !page.contains(s)),
            "the erased record's content is on the page"
        );
        let _ = patient.quit().await;
    })
    .await;
}

/// A signed-in patient's erasure requests, newest first (`/api/erasures`).
async fn erasures_of(at: &TestApp, patient: &Client) -> Vec<Value> {
    let (s, b) = at.get(patient, "/api/erasures").await;
    assert_eq!(s, OK, "{b}");
    b["erasures"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reads_signing_bytes_as_the_ledger_vectors_say() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    // The page alone: the UI's files on a loopback socket (nothing else is called).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, medchain::web::router::<()>()).await });
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../ledger/tests/vectors/tx_v2.json"),
        )
        .unwrap(),
    )
    .unwrap();
    with_chromedriver(|port, profiles| async move {
        let d = browser(port, &profiles.join("vectors"), 800, 600).await;
        d.goto(&base).await.unwrap();
        wait_shown(&d, "#login-view").await;
        let call = |script: &'static str, args: Vec<Value>| {
            let d = d.clone();
            async move { d.execute(script, args).await.map(|r| r.json().clone()) }
        };
        let genesis = vectors["genesis_hash_hex"].as_str().unwrap();
        let mut kinds = Vec::new();
        for v in vectors["kinds"].as_array().unwrap().iter().chain(vectors["transactions"].as_array().unwrap()) {
            let bytes = v["signing_bytes_hex"].as_str().unwrap();
            let decoded = call("return medchainTx.decode(arguments[0])", vec![json!(bytes)]).await.unwrap();
            assert_eq!(decoded["genesis"], genesis);
            assert_eq!(decoded["header"], numbers_as_text(&v["header"]), "kind {}", v["kind"]);
            kinds.push(v["kind"].as_str().unwrap().to_string());
            // A sealed kind's content is what the page reads (as `plain`), never its sealed body.
            let content = if v["sealed"].is_object() { &v["sealed"]["content_hex"] } else { &v["body_hex"] };
            let body = call("return medchainTx.body(arguments[0], arguments[1])", vec![v["kind"].clone(), content.clone()])
                .await
                .unwrap();
            let raw = hex::decode(content.as_str().unwrap()).unwrap();
            let want = match v["kind"].as_str().unwrap() {
                "add_record" => serde_json::to_value(ledger::tx::RecordBody::from_bytes(&raw).unwrap()).unwrap(),
                "grant" | "request_grant" => serde_json::to_value(ledger::tx::PurposeBody::from_bytes(&raw).unwrap()).unwrap(),
                _ => json!({}),
            };
            assert_eq!(body, want, "body of {}", v["kind"]);
            // The node's code for an ask with this id.
            let id: [u8; 32] = hex::decode(v["id_hex"].as_str().unwrap()).unwrap().try_into().unwrap();
            let code = call("return medchainTx.askCode(arguments[0])", vec![v["id_hex"].clone()]).await.unwrap();
            assert_eq!(code, medchain::app::ask_code(&id));
            // Cut short, lengthened: refused.
            for bad in [&bytes[..bytes.len() - 2], &format!("{bytes}00")] {
                let refused = call(
                    "try { medchainTx.decode(arguments[0]); return 'read'; } catch (e) { return 'refused'; }",
                    vec![json!(bad)],
                )
                .await
                .unwrap();
                assert_eq!(refused, "refused", "{} changed", v["kind"]);
            }
        }
        let mut every: Vec<String> = ledger::Meta::KINDS.iter().map(|k| k.to_string()).collect();
        every.sort();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, every, "a vector of every kind");
        // An unknown kind byte (13, one past the last), and another tag.
        let enroll = vectors["kinds"][0]["signing_bytes_hex"].as_str().unwrap();
        assert_eq!(ledger::Meta::KINDS.len(), 13);
        let unknown = format!("{}0d{}", &enroll[..92], &enroll[94..]);
        let other_tag = enroll.replacen(&hex::encode("medchain/tx/v2"), &hex::encode("medchain/tx/v3"), 1);
        for bad in [unknown, other_tag] {
            let refused = call(
                "try { medchainTx.decode(arguments[0]); return 'read'; } catch (e) { return e.message; }",
                vec![json!(bad)],
            )
            .await
            .unwrap();
            assert_ne!(refused, "read");
        }
        let pop = &vectors["key_pop"];
        let bytes = call(
            "return medchainTx.popBytes(arguments[0], arguments[1], arguments[2], arguments[3], arguments[4])",
            vec![
                json!(genesis),
                pop["person_hex"].clone(),
                pop["key_hex"].clone(),
                pop["kind"].clone(),
                pop["origin"].clone(),
            ],
        )
        .await
        .unwrap();
        assert_eq!(bytes, pop["signed_bytes_hex"]);
        let _ = d.quit().await;
    })
    .await;
}

/// The vectors' JSON with every number as decimal text, as the page reports them (a u64 does
/// not fit a JavaScript number).
fn numbers_as_text(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_text).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), numbers_as_text(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Issue 11, "Observability": the doctor's system status draws committed transactions per
/// second and commit latency (inline SVG the page draws from `/api/status/series`, the
/// validator's per-second samples), and a table of each validator's view, height and last
/// contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_card_charts_throughput_and_latency_and_lists_each_validator() {
    let Some(_turn) = browser_turn().await else {
        return;
    };
    let (t, _served, base) = one_page().await;
    let doctor = t.login("d001").await;
    for i in 0..3 {
        record_in_person(&t, &doctor, "p001", &Secret::new(&format!("chart {i}"))).await;
        cut(&t, &doctor).await;
    }
    let (s, status) = t.get(&doctor, "/api/status").await;
    assert_eq!(s, OK, "{status}");
    let height = status["height"].as_u64().unwrap();
    assert!(height >= 6, "a grant and a record each time: {status}");
    with_chromedriver(|port, profiles| async move {
        let d = browser(port, &profiles.join("doctor"), 1280, 1600).await;
        login(&d, &base, "doctor", "d001", "doctor123").await;
        // The lowest point of a chart's line (the y axis points down: the highest value),
        // once the page has drawn one with at least two points.
        let lowest_y = |series: &'static str| {
            let d = d.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let y = d
                        .execute(
                            &format!(
                                "const ys = [...document.querySelectorAll('[data-test={series}]')]
                                   .flatMap((p) => p.getAttribute('points').trim().split(' '))
                                   .filter((p) => p).map((p) => Number(p.split(',')[1]));
                                 return ys.length >= 2 ? Math.min(...ys) : null;"
                            ),
                            Vec::new(),
                        )
                        .await
                        .unwrap()
                        .json()
                        .as_f64();
                    if let Some(y) = y {
                        return y;
                    }
                    assert!(Instant::now() < deadline, "no {series} line drawn");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // The charts' baseline is y = 102 (a 120 high box, 18 for the time axis): the committed
        // blocks rise above it.
        let tps = lowest_y("series-tps").await;
        assert!(tps < 102.0, "throughput drawn flat at zero: {tps}");
        let latency = lowest_y("series-max").await;
        assert!(latency < 102.0, "latency drawn flat at zero: {latency}");
        for chart in ["chart-tps", "chart-latency"] {
            let svg = d
                .find(By::Css(format!("svg[data-test={chart}]")))
                .await
                .unwrap();
            assert!(svg.is_displayed().await.unwrap(), "{chart} is hidden");
            assert!(!svg.find_all(By::Css("polyline")).await.unwrap().is_empty());
        }
        let now = text_of(&d, "[data-test=chart-tps-now]").await;
        assert!(now.ends_with("tx/s"), "{now}");

        // One row per validator, each with its view, height and last contact.
        wait_text(&d, "[data-test=validator] [data-test=primary]", |t| {
            t.eq_ignore_ascii_case("primary")
        })
        .await;
        let rows = d.find_all(By::Css("[data-test=validator]")).await.unwrap();
        assert_eq!(rows.len(), 4);
        let mut names = Vec::new();
        for row in rows {
            let cell = |name: &'static str| {
                let row = row.clone();
                async move {
                    row.find(By::Css(format!("[data-test=validator-{name}]")))
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap()
                }
            };
            let view: u64 = cell("view").await.parse().expect("a view");
            let row_height: u64 = cell("height").await.parse().expect("a height");
            let contact = cell("contact").await;
            names.push(
                row.find(By::Css("strong"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            );
            assert_eq!(view, 0);
            assert!(row_height >= height, "{row_height} < {height}");
            assert!(
                contact == "this validator" || contact.ends_with(" ago"),
                "{contact}"
            );
        }
        assert_eq!(
            names.iter().map(|n| n.to_lowercase()).collect::<Vec<_>>(),
            ["hospital", "clinic", "pharmacy", "insurance"]
        );
        settle(&d).await;
        d.find(By::Id("status-card"))
            .await
            .unwrap()
            .screenshot(&docs_dir().join("screenshot-status.png"))
            .await
            .unwrap();
        let _ = d.quit().await;
    })
    .await;
}
