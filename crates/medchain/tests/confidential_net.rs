//! The confidentiality and erasure tests on a four-process testnet (docs/SECURITY.md,
//! "Confidential records (issue 10)", §7, §14 task E): real `medchain node` processes on
//! loopback TCP, their stores, key stores, WAL and shared-memory files, their log files and a
//! backup, searched byte by byte; an erasure while one validator is killed and another is
//! restored afterwards from a copy of its folder taken before it.
//!
//! Validators: 0 hospital (home of the demo patient p001, who is linked at every node), 1
//! clinic, 2 pharmacy, 3 insurance; each has its own home doctor `dr<i>` (Cardiology).

mod common_net;

use std::path::Path;

use common_net::confidential::{
    P001, Session, add_device, committed_at, copy_files, erase, holding, key_store_files,
    keys_db_files, patient_session, prepare, record_in, record_in_person, record_under,
    request_erasure, restore, sealed_row, served_in_state, sign, write_grant,
};
use common_net::secrets::{Secret, assert_nowhere, files_under, search};
use common_net::{Net, output_text, wait_for};
use serde_json::json;

/// What a search must have covered: every store, key store and log of a validator.
const EXPECTED_FILES: [&str; 7] = [
    "chain.db",
    "node.db",
    "keys.db",
    "app.db",
    "node-1.out.log",
    "node-1.err.log",
    "genesis.toml",
];

/// A text every validator stores in clear (a doctor's department, public metadata of every
/// record): the search's control.
const CONTROL: &str = "Cardiology";

/// Every secret of `secrets`, and `purpose`, as texts.
fn texts<'a>(secrets: &[&'a Secret], purpose: &'a str) -> Vec<&'a str> {
    let mut texts: Vec<&str> = secrets.iter().flat_map(|s| s.texts()).collect();
    texts.push(purpose);
    texts
}

/// p001's history at node `i` once it shows record `tx` open with all of `secret`.
fn opens(net: &Net, i: usize, session: &Session, tx: &str, secret: &Secret) {
    let history = served_in_state(net, i, session, tx, "open");
    assert!(
        secret.all_in(&history),
        "node {i} serves {tx} open: {history}"
    );
}

/// A unique diagnosis, prescription and note of each of three records, and a request's purpose,
/// added through the API of the processes, are in no file of the network's directory or key
/// directory (chains, stores, key stores, WAL and SHM files, every log), while the validators
/// run, while a device-signed record's envelope waits unsigned (red team finding 3: the 202
/// answer's `tx.plain` is nowhere on disk), and after they stopped, a backup included; each
/// is served at p001's home all the same. Then an erasure: p001 asks at home; the home is
/// killed (SIGKILL); the clinic, the record's author, erases it with `medchain erasure
/// answer`; the clinic is then restored from a copy of its folder taken before the erasure
/// (stores without the incarnation marker). Back up, both serve the record `erased`, and
/// neither holds its key: its sealed row, which each held, is in no file of its `keys.db`
/// (the backup still holds the clinic's). The chain still verifies offline.
#[test]
fn records_are_in_no_file_of_a_testnet_and_erasure_survives_a_crash_and_a_restore() {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let p1 = patient_session(&net, 0, P001);
    let device = add_device(&net, 0, &p1);

    // In person at home, by the home's doctor.
    let in_person = Secret::new("in person");
    let r1 = record_in_person(&net, &in_person);
    // By the clinic's doctor under a write grant p001 approved on their device at home: its
    // purpose is sealed too, and the record's key travels from the clinic to the home.
    let purpose = format!("Second opinion {}", hex::encode(rand::random::<[u8; 6]>()));
    let grant = write_grant(&net, 1, (&p1, &device), &purpose);
    let remote = Secret::new("remote");
    let r2 = record_under(&net, 1, &grant, &remote);
    opens(&net, 0, &p1, &r1, &in_person);
    opens(&net, 0, &p1, &r2, &remote);
    // The clinic, p001's linked hospital, opens what its doctor wrote, and only that.
    let p1_clinic = patient_session(&net, 1, P001);
    opens(&net, 1, &p1_clinic, &r2, &remote);
    let at_clinic = served_in_state(&net, 1, &p1_clinic, &r1, "elsewhere");
    assert!(!in_person.leaked_in(&at_clinic), "{at_clinic}");

    // Signed on the home doctor's device: the envelope waits, its plain text in the answer
    // only.
    let doctor = Session {
        token: net.tokens[0].clone(),
        person: net.person("dr0").to_string(),
    };
    let doctor_device = add_device(&net, 0, &doctor);
    let on_device = Secret::new("on device");
    let (_, otp) = common_net::consent(net.nodes[0].api, &net.tokens[0], P001);
    let prepared = prepare(
        &net,
        0,
        &doctor.token,
        &doctor_device,
        "/api/add_record",
        json!({"patientId": P001.0, "otp": otp, "medical_data": on_device.medical_data()}),
    );
    assert!(
        on_device.all_in(&prepared["tx"]["plain"]),
        "the answer echoes what was typed: {prepared}"
    );

    let root = net.root.path().to_path_buf();
    let roots = [root.as_path()];
    let secrets = texts(&[&in_person, &remote, &on_device], &purpose);
    assert_nowhere(
        "running, an envelope unsigned",
        &roots,
        &secrets,
        CONTROL,
        &EXPECTED_FILES,
    );

    let (status, signed) = sign(&net, 0, &doctor.token, &doctor_device, &prepared);
    assert_eq!(status, 200, "{signed}");
    let r3 = signed["txId"].as_str().expect("txId").to_string();
    committed_at(&net, 0, &r3);
    opens(&net, 0, &p1, &r3, &on_device);

    // Erasure of the clinic's record. Both parties hold its key.
    let home_row = sealed_row(&net, 0, &r2).expect("the home holds the key");
    let clinic_row = sealed_row(&net, 1, &r2).expect("the clinic holds the key");
    // The clinic's backup: a copy of its stopped folder.
    let backup = root.join("clinic-backup");
    assert!(net.stop(1).success());
    copy_files(&net.nodes[1].dir, &backup, |_| false);
    net.start(1);

    let request = request_erasure(&net, 0, &p1.token, &r2);
    committed_at(&net, 1, &request);
    net.kill(0);
    erase(&net, 1, &request);
    let head = net.wait_converged_among(&[1, 2, 3], common_net::confidential::WAIT);

    assert!(net.stop(1).success());
    restore(&net, 1, &backup);
    assert!(
        !holding(&key_store_files(&net.nodes[1].dir), &clinic_row).is_empty(),
        "the restored clinic holds the key again, before it starts"
    );
    net.start(0);
    wait_for(
        common_net::confidential::WAIT,
        "the home to catch up",
        || (net.status(0)?["height"].as_u64()? >= head.0).then_some(()),
    );
    net.start(1);
    wait_for(
        common_net::confidential::WAIT,
        "the clinic to catch up",
        || (net.status(1)?["height"].as_u64()? >= head.0).then_some(()),
    );

    let p1 = patient_session(&net, 0, P001);
    let p1_clinic = patient_session(&net, 1, P001);
    for (i, session) in [(0, &p1), (1, &p1_clinic)] {
        let history = served_in_state(&net, i, session, &r2, "erased");
        let shown = record_in(&history, &r2).expect("listed");
        assert!(
            shown["notice"]
                .as_str()
                .is_some_and(|n| n.starts_with("erased at the patient's request on")),
            "node {i}: {history}"
        );
        assert!(!remote.leaked_in(&history), "node {i}: {history}");
    }
    // The record written in person stays open at home.
    opens(&net, 0, &p1, &r1, &in_person);
    for (i, row) in [(0, &home_row), (1, &clinic_row)] {
        assert_eq!(common_net::confidential::key_rows(&net, i, &r2), 0);
        let files = keys_db_files(&net, i);
        assert!(
            holding(&files, row).is_empty(),
            "node {i} keeps the erased key's sealed row in {:?}",
            holding(&files, row)
        );
    }
    assert!(
        !holding(&key_store_files(&backup), &clinic_row).is_empty(),
        "the backup taken before the erasure still holds the clinic's row (the search finds \
         one)"
    );

    net.stop_all();
    let files = assert_nowhere("stopped", &roots, &secrets, CONTROL, &EXPECTED_FILES);
    assert!(
        files.iter().any(|file| file.starts_with(&backup)),
        "the backup was searched"
    );
    assert_logs_searched(&root);
    let out = net.verify();
    assert!(out.status.success(), "verify: {}", output_text(&out));
}

/// The logs searched are the nodes' real logs: each says its key service started.
fn assert_logs_searched(root: &Path) {
    let logs: Vec<_> = files_under(&[root])
        .into_iter()
        .filter(|file| file.extension().is_some_and(|ext| ext == "log"))
        .collect();
    assert!(
        search(&logs, &["key service ready"]).len() >= 4,
        "every node logged its key service: {logs:?}"
    );
}
