//! Issue 10 against a dishonest validator, at the process level (docs/SECURITY.md,
//! "Confidential records (issue 10)", §11, §7.2): the clinic (validator 1) runs `medchain node
//! --byzantine` with the key behaviours of `crates/node/src/byzantine.rs`: `ask-keys` (it asks
//! every validator for every sealed key and keeps whatever matches), `wrong-keys` (it answers
//! every key request with random keys), then, restarted, `keep-keys` (it deletes nothing at an
//! erasure). Its consensus is honest, so the network runs; what is tested is the key service
//! of the three correct validators: hospital (0, home of the demo patient p001, who is linked
//! at every node), pharmacy (2) and insurance (3).
//!
//! Run with `cargo test -p medchain --features byzantine --test byzantine_keys` (scripts/test.sh
//! does); without the feature this target is skipped.

mod common_net;

use common_net::confidential::{
    P001, WAIT, add_device, erase, holding, key_metrics, key_rows, keys_db_files, patient_session,
    pending_purpose, prepare, record_in, record_in_person, record_under, request_erasure,
    request_write, sealed_row, served_in_state, sign,
};
use common_net::secrets::Secret;
use common_net::{Net, wait_for};
use serde_json::{Value, json};

/// The Byzantine validator: the clinic.
const BYZANTINE: usize = 1;
const CORRECT: [usize; 3] = [0, 2, 3];

/// Waits until `counter` of node `i`'s key service (`/api/metrics`) is at least `at_least`:
/// its value.
fn counted(net: &Net, i: usize, counter: &str, at_least: u64) -> u64 {
    wait_for(WAIT, &format!("node {i} to count {counter}"), || {
        let value = key_metrics(net, i)[counter].as_u64()?;
        (value >= at_least).then_some(value)
    })
}

/// The clinic's key service lies in turn as `ask-keys`, `wrong-keys` and `keep-keys`; the
/// correct validators:
/// - give `ask-keys` nothing and count it: the home answers its request for the record
///   `NotEntitled` (`requests_not_entitled`), the others, which hold no key of it, `NotHeld`
///   (`requests_not_held`), and its `keys.db` holds no row of a record of p001 written at the
///   home, though it keeps any key that matches (the home holds it, p001 reads it there);
/// - refuse `wrong-keys`: the home counts every wrong key of a request the clinic sealed
///   (`refused_wrong`) and shows its purpose waiting, not broken; once the clinic answers
///   correctly (restarted without the behaviour) the purpose opens, p001 approves, and the
///   clinic's record under that grant opens at the home;
/// - show that record `erased` once the clinic itself answers p001's erasure request, the home
///   deleting its key (its sealed row in no file of its `keys.db`), while `keep-keys` still
///   holds its row and still serves the record: the documented limit (§7.2).
#[test]
fn correct_validators_give_ask_keys_nothing_refuse_wrong_keys_and_erase_despite_keep_keys() {
    let mut net = Net::setup(4);
    net.nodes[BYZANTINE].args = vec!["--byzantine".into(), "ask-keys,wrong-keys".into()];
    net.start_all();
    net.login_all();
    let p1 = patient_session(&net, 0, P001);
    let device = add_device(&net, 0, &p1);

    // ask-keys: a record written at the home, the home's and p001's only.
    let at_home = Secret::new("at home");
    let r1 = record_in_person(&net, &at_home);
    for i in CORRECT {
        common_net::confidential::committed_at(&net, i, &r1);
    }
    counted(&net, 0, "requests_not_entitled", 1);
    for i in CORRECT.into_iter().filter(|i| *i != 0) {
        counted(&net, i, "requests_not_held", 1);
    }
    assert_eq!(key_rows(&net, 0, &r1), 1, "the home holds the key");
    let home = served_in_state(&net, 0, &p1, &r1, "open");
    assert!(at_home.all_in(&home), "{home}");
    assert_eq!(key_rows(&net, BYZANTINE, &r1), 0, "ask-keys got the key");
    assert_eq!(key_metrics(&net, BYZANTINE)["received"], 0);
    let p1_clinic = patient_session(&net, BYZANTINE, P001);
    let at_clinic = served_in_state(&net, BYZANTINE, &p1_clinic, &r1, "elsewhere");
    assert!(!at_home.leaked_in(&at_clinic), "{at_clinic}");

    // wrong-keys: the clinic's doctor asks p001 for a write grant; the home wants the
    // purpose's key from the clinic, its sealer, and refuses every key it gets.
    let purpose = format!("Second opinion {}", hex::encode(rand::random::<[u8; 6]>()));
    let request = request_write(&net, BYZANTINE, &purpose);
    counted(&net, 0, "refused_wrong", 1);
    let (opens, notice) = pending_purpose(&net, &p1, &request).expect("the request is listed");
    assert!(!opens, "{notice}");
    assert_eq!(notice, "purpose waiting for its key from clinic");
    // The clinic answers correctly from now on (and keeps every key it has).
    assert!(net.stop(BYZANTINE).success());
    net.nodes[BYZANTINE].args = vec!["--byzantine".into(), "ask-keys,keep-keys".into()];
    net.start(BYZANTINE);
    let (_, opened) = wait_for(WAIT, "the purpose open at the home", || {
        pending_purpose(&net, &p1, &request).filter(|(opens, _)| *opens)
    });
    assert_eq!(opened, purpose);
    let prepared = prepare(
        &net,
        0,
        &p1.token,
        &device,
        &format!("/api/consents/{request}/approve"),
        json!({}),
    );
    let (status, approved) = sign(&net, 0, &p1.token, &device, &prepared);
    assert_eq!(status, 200, "{approved}");
    let grant = approved["grantTxId"].as_str().expect("grantTxId");
    common_net::confidential::committed_at(&net, BYZANTINE, grant);
    let written = Secret::new("by the clinic");
    let r2 = record_under(&net, BYZANTINE, grant, &written);
    let home = served_in_state(&net, 0, &p1, &r2, "open");
    assert!(written.all_in(&home), "{home}");

    // keep-keys: p001 asks to erase it; the clinic, its author, erases it.
    let home_row = sealed_row(&net, 0, &r2).expect("the home holds the key");
    let request = request_erasure(&net, 0, &p1.token, &r2);
    common_net::confidential::committed_at(&net, BYZANTINE, &request);
    erase(&net, BYZANTINE, &request);
    for i in CORRECT {
        let p1_here = patient_session(&net, i, P001);
        let history = served_in_state(&net, i, &p1_here, &r2, "erased");
        assert!(!written.leaked_in(&history), "node {i}: {history}");
    }
    assert_eq!(key_rows(&net, 0, &r2), 0);
    let files = keys_db_files(&net, 0);
    assert!(
        holding(&files, &home_row).is_empty(),
        "the home keeps the erased key's sealed row in {:?}",
        holding(&files, &home_row)
    );
    // The documented limit (§7.2): a dishonest validator keeps the copy it had; its operator
    // can open that row with the operator key. Its page, medchain's own code, still shows the
    // record erased, since the chain says so (red team of issue 10, round 4).
    assert_eq!(key_rows(&net, BYZANTINE, &r2), 1, "keep-keys kept its row");
    let kept: Value = served_in_state(&net, BYZANTINE, &p1_clinic, &r2, "erased");
    assert!(!written.leaked_in(&kept), "{kept}");
    assert!(record_in(&kept, &r2).is_some());

    net.stop_all();
    let out = net.verify();
    assert!(
        out.status.success(),
        "verify: {}",
        common_net::output_text(&out)
    );
}
