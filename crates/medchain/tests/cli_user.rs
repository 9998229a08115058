//! `medchain user` as a person runs it: enrollment queued in the outbox while the validator is
//! not running, listed with its person id; a doctor needs a department and a public name.
mod common_cli;

use common_cli::{Consortium, medchain, text};

#[test]
fn user_add_queues_the_enrollment_until_the_validator_runs() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let d = net.dir.display().to_string();

    let out = medchain(
        &[
            "user",
            "add",
            "--role",
            "doctor",
            "--id",
            "d003",
            "--department",
            "Neurology",
            "--data-dir",
            &d,
        ],
        Some("long-password\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--name"), "{}", text(&out));

    let out = medchain(
        &[
            "user",
            "add",
            "--role",
            "doctor",
            "--id",
            "d003",
            "--department",
            "Neurology",
            "--name",
            "Ada Byron",
            "--data-dir",
            &d,
        ],
        Some("long-password\n"),
    );
    assert!(out.status.success(), "user add: {}", text(&out));
    let report = text(&out);
    assert!(report.contains("queued"), "{report}");
    let person = report
        .split("(person ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the person id is printed")
        .to_string();
    assert_eq!(person.len(), 32, "{report}");

    // The custodial key is sealed in app.db under the operator key (in DATA_DIR.keys by
    // default): no custody.key sits beside node.key any more.
    assert!(!net.dir.join("hospital/custody.key").exists());

    let out = medchain(&["user", "list", "--data-dir", &d], None);
    assert!(out.status.success(), "user list: {}", text(&out));
    let list = text(&out);
    let line = list
        .lines()
        .find(|l| l.starts_with("d003"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains(&person) && line.contains("hospital"),
        "{line}"
    );
    assert!(line.contains("enroll queued"), "{line}");

    // The login exists once: a second add is refused.
    let out = medchain(
        &[
            "user",
            "add",
            "--role",
            "patient",
            "--id",
            "d003",
            "--data-dir",
            &d,
        ],
        Some("long-password\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
}
