//! Third red-team round on issue 10 (confidential records), through the product's commands and
//! API: `medchain backup` and `medchain restore` on the embedded cluster of the node tests
//! (their `World`, shared by path), and hostile API clients against erasure and the per-grant
//! key status. `red_team_held_*` tests pass: a defence that held; `#[ignore = "BREAK: .."]`
//! tests fail on the code as it is (run them with `--ignored`).

mod common;
#[allow(dead_code)]
#[path = "../../node/tests/common/mod.rs"]
mod node_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use axum::http::StatusCode;
use common::eventually;
use common::records::{Secret, aged_home_key, granted, read_until_open, record_in_person};
use ledger::TxId;
use node::OpenState;
use node::load::Person;
use node_common::world::{CLINIC, World, diagnosis, wait_until};
use serde_json::json;

fn medchain(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medchain"))
        .args(args)
        .output()
        .expect("run medchain")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `medchain backup --data-dir FOLDER --to FILE` of one validator's folder (it may run).
fn backup(folder: &Path, file: &Path) {
    let out = medchain(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        folder.as_os_str(),
        "--to".as_ref(),
        file.as_os_str(),
    ]);
    assert!(out.status.success(), "backup: {}", text(&out));
}

/// `medchain restore --from FILE --data-dir FOLDER [extra..]` into a stopped validator's
/// folder: what it printed.
fn restore(folder: &Path, file: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "restore".as_ref(),
        "--from".as_ref(),
        file.as_os_str(),
        "--data-dir".as_ref(),
        folder.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = medchain(&args);
    assert!(out.status.success(), "restore: {}", text(&out));
    text(&out)
}

/// Waits until validator `at` has applied the head the hospital has now.
fn caught_up(w: &World, at: u32) {
    let head = w.node(0).status().height;
    wait_until("the restored validator to catch up", || {
        w.node(at).status().height >= head && w.node(at).key_status().processed_height >= head
    });
}

/// The embedded cluster with a patient of the clinic and their doctor there, and a backup of
/// the clinic's folder taken once a first record of theirs (`before`) was open at the clinic.
struct BackedUp {
    w: World,
    patient: Person,
    author: Person,
    before: TxId,
    folder: PathBuf,
    /// `<test dir>.<name>.tar`.
    file: PathBuf,
}

impl BackedUp {
    fn new(name: &str) -> Self {
        let w = World::new();
        let patient = Person::patient(CLINIC);
        let author = Person::doctor(CLINIC, "Oncology", "Dr Clinic");
        w.enroll(&[&patient, &author]);
        let before = open_record(&w, &author, &patient, "Ewing sarcoma 3f9a");
        let folder = w.dir.path().join("clinic");
        let file = w.dir.path().with_extension(format!("{name}.tar"));
        backup(&folder, &file);
        BackedUp {
            w,
            patient,
            author,
            before,
            folder,
            file,
        }
    }

    fn record(&self, diagnosis: &str) -> TxId {
        open_record(&self.w, &self.author, &self.patient, diagnosis)
    }
}

/// A record by `author` in `patient`'s history, committed and open at the clinic.
fn open_record(w: &World, author: &Person, patient: &Person, diagnosis: &str) -> TxId {
    let record = w.record(author, patient, diagnosis);
    w.wait_state(CLINIC, &record, OpenState::Open);
    record
}

/// Was a BREAK (3: a restore destroyed the newer key store, and with it acknowledged records),
/// fixed by `medchain restore` keeping a `keys.db` in place that belongs to the chain and has
/// processed it at least as far as the backup's (`keys_choice` in `cli/backup.rs`), and by the
/// key service waiting for a chain restored behind its `keys.db` before it gives any key
/// (docs/SECURITY.md §5.6). The README's restore "puts the stores back" and the restored
/// validator "fetches what it missed"; §5.6 says a record a home's doctor wrote for a home
/// patient has one key holder, the home. `restore` replaced `keys.db` with the backup's
/// whatever the store in place held: a validator restored because its `chain.db` or `node.db`
/// was damaged, its `keys.db` intact, lost the key of every record it sealed after the backup.
/// The chain brings those records back (state transfer), the key nobody else holds did not:
/// they showed `waiting` at their home for good. Here the clinic is home to a patient and
/// their doctor; a record written after the backup, committed and open, opens again after the
/// restore, and the restore says it kept keys.db and why.
#[test]
fn red_team_held_a_restore_keeps_the_newer_key_store_and_its_acknowledged_records() {
    let clinic = BackedUp::new("clinic");
    // Written, committed and open at its home after the backup: acknowledged.
    let after = clinic.record("Osteosarcoma 8b21");
    let BackedUp {
        mut w,
        before,
        folder,
        file,
        ..
    } = clinic;
    assert!(w.key_rows(CLINIC).contains(&after));

    // The clinic is stopped and restored from the backup (say its chain.db was damaged).
    w.cluster.stop(CLINIC);
    let said = restore(&folder, &file, &[]);
    assert!(
        said.contains("kept the keys.db in place") && said.contains("restored node.db, chain.db"),
        "{said}"
    );
    assert!(w.key_rows(CLINIC).contains(&after));
    w.cluster.restart(CLINIC).unwrap();
    caught_up(&w, CLINIC);
    w.wait_state(CLINIC, &before, OpenState::Open);
    let opened = w.wait_state(CLINIC, &after, OpenState::Open);
    assert_eq!(diagnosis(&opened), "Osteosarcoma 8b21");
}

/// `medchain restore` replaces the `keys.db` in place when the operator says `--replace-keys`,
/// when it is older than the backup's, damaged, or missing, and says why each time; it keeps
/// one that is newer, also when it is another store of the same chain (it cannot tell without
/// the operator key whether that one opens, and says so). The clinic, restored in the end
/// from the newer backup, opens the record sealed between the two backups.
#[test]
fn a_restore_replaces_keys_db_when_told_or_older_and_says_why() {
    let clinic = BackedUp::new("older");
    let between = clinic.record("Osteosarcoma 8b21");
    let BackedUp {
        mut w,
        before,
        folder,
        file: older,
        ..
    } = clinic;
    let newer = w.dir.path().with_extension("newer.tar");
    backup(&folder, &newer);
    w.cluster.stop(CLINIC);
    let held = |w: &World| {
        let rows = w.key_rows(CLINIC);
        (rows.contains(&before), rows.contains(&between))
    };

    let said = restore(&folder, &older, &["--replace-keys"]);
    assert!(
        said.contains("restoring the backup's keys.db: --replace-keys"),
        "{said}"
    );
    assert_eq!(
        held(&w),
        (true, false),
        "the older backup's keys.db is in place"
    );
    let said = restore(&folder, &newer, &[]);
    assert!(said.contains("the one in place is older"), "{said}");
    assert_eq!(held(&w), (true, true));
    let said = restore(&folder, &older, &[]);
    assert!(said.contains("kept the keys.db in place"), "{said}");
    assert_eq!(held(&w), (true, true));

    // Another store of the same chain, newer (the hospital's, copied): kept, and said so.
    let keys_db = w.keys_db(CLINIC);
    let newer_height = node::KeyStoreFacts::read(&keys_db)
        .unwrap()
        .processed_height;
    wait_until(
        "the hospital's keys.db to record its processed height",
        || {
            node::KeyStoreFacts::read(&w.keys_db(0))
                .is_ok_and(|f| f.processed_height >= newer_height)
        },
    );
    let hospital = rusqlite::Connection::open_with_flags(
        w.keys_db(0),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    std::fs::remove_file(&keys_db).unwrap();
    hospital.backup(rusqlite::MAIN_DB, &keys_db, None).unwrap();
    drop(hospital);
    let said = restore(&folder, &newer, &[]);
    assert!(
        said.contains("kept the keys.db in place") && said.contains("not a copy of the backup's"),
        "{said}"
    );
    // Damaged, then missing: replaced.
    let mut bytes = std::fs::read(&keys_db).unwrap();
    let half = bytes.len() / 2;
    bytes.truncate(half);
    std::fs::write(&keys_db, bytes).unwrap();
    let said = restore(&folder, &newer, &[]);
    assert!(said.contains("the one in place does not open"), "{said}");
    assert_eq!(held(&w), (true, true));
    std::fs::remove_file(&keys_db).unwrap();
    let said = restore(&folder, &older, &[]);
    assert!(said.contains("there is none in place"), "{said}");
    assert_eq!(held(&w), (true, false));
    let said = restore(&folder, &newer, &[]);
    assert!(said.contains("the one in place is older"), "{said}");

    w.cluster.restart(CLINIC).unwrap();
    caught_up(&w, CLINIC);
    let opened = w.wait_state(CLINIC, &between, OpenState::Open);
    assert_eq!(diagnosis(&opened), "Osteosarcoma 8b21");
}

/// (b) Hostile API clients against erasure, the one API of issue 10 that changes what every
/// validator holds: nobody but the record's patient, signed in at their home, asks for it. The
/// record's own author (d001, a doctor of the home: finding 5, an author erasing its record
/// without the patient), another patient of the same home, and an anonymous caller are refused
/// before anything is signed; the other patient's list of erasures says nothing of p001's
/// request, and p001's record still opens at the home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_held_nobody_but_the_patient_at_home_asks_for_an_erasure() {
    let hospital = common::app_only().await;
    let d1 = hospital.login("d001").await;
    let p1 = hospital.login("p001").await;
    let p2 = hospital.login("p002").await;
    let secret = Secret::new("erasure-abuse");
    let record = record_in_person(&hospital, &d1, "p001", &secret).await;
    let path = format!("/api/records/{record}/erasure");

    let (s, b) = hospital.post(&common::anon(), &path, json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = hospital.post(&d1, &path, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the author: {b}");
    let (s, b) = hospital.post(&p2, &path, json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another patient: {b}");
    let (s, b) = hospital.get(&p2, "/api/erasures").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["erasures"], json!([]), "{b}");

    // p001's own request, in person at home, is listed to p001 only.
    let (s, b) = hospital.post(&p1, &path, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = hospital.get(&p2, "/api/erasures").await;
    assert_eq!(b["erasures"], json!([]), "p002 sees p001's request: {b}");
    let (_, b) = hospital.get(&d1, "/api/erasures").await;
    assert!(!b.to_string().contains(&record), "the doctor sees it: {b}");
    let (s, b) = hospital.get(&p1, "/api/erasures").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["erasures"][0]["tx"], record.as_str(), "{b}");
    assert_eq!(b["erasures"][0]["state"], "pending", "{b}");
    // Requested, not erased: the record still opens.
    let (s, b) = hospital.post(&p1, "/api/patient_records", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(secret.leaked_in(&b), "{b}");
}

/// WEAKNESS 4 (key counters to every doctor of the hospital). §16.14: "Key counters appear only
/// on `/api/metrics` (for operators)", because "a spike of keys pulled shows a history moving
/// after a grant". `/api/metrics` shows them to any doctor whose home is this hospital
/// (`chain.rs` `metrics`: `staff` is every doctor), and there is no operator role in the API.
/// A clinic doctor with no grant of anyone's watches `keys.received` step by the size of p001's
/// history when a colleague's read grant commits: whom the colleague treats is not on their
/// screen, but when and how much is, and beside the colleague's schedule it names the patient.
/// Low: a count, to staff of a hospital that is entitled. Fix: counters only to a role the
/// operator gives (or on the operator's own socket), or say "to the hospital's doctors".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "WEAKNESS: /api/metrics shows every doctor of a hospital the keys a colleague's grant pulled"]
async fn weakness_4_any_doctor_of_the_grantee_sees_how_many_keys_a_colleagues_grant_pulled() {
    let (hospital, clinic) = common::two_hospitals().await;
    let device = aged_home_key(&hospital).await;
    let d1 = hospital.login("d001").await;
    let p1 = hospital.login("p001").await;
    let records = [
        record_in_person(&hospital, &d1, "p001", &Secret::new("count-1")).await,
        record_in_person(&hospital, &d1, "p001", &Secret::new("count-2")).await,
        record_in_person(&hospital, &d1, "p001", &Secret::new("count-3")).await,
    ];
    let onlooker = clinic
        .new_doctor("c-onlooker", "Radiology", "Ada Byron")
        .await;
    let received = |b: &serde_json::Value| b["keys"]["received"].as_u64();
    let (s, b) = clinic.get(&onlooker, "/api/metrics").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = received(&b);

    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let hour = json!({"read": {"durationMs": 3_600_000}});
    granted(&clinic, &c_doc, hour, (&hospital, &p1, &device)).await;
    let ids: Vec<&str> = records.iter().map(String::as_str).collect();
    read_until_open(&clinic, &c_doc, &ids).await;
    let after = eventually("the onlooker's metrics", || async {
        let (s, b) = clinic.get(&onlooker, "/api/metrics").await;
        (s == StatusCode::OK).then(|| received(&b))
    })
    .await;
    assert!(
        before.is_none() && after.is_none(),
        "a doctor with no grant sees the keys the clinic received go from {before:?} to \
         {after:?}: the size of p001's history, when a colleague's grant committed"
    );
}
