//! `medchain user` as a person runs it: enrollment queued in the outbox while the validator is
//! not running, listed with its person id; a doctor needs a department and a public name.
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn medchain(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medchain"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run medchain");
    if let Some(text) = stdin {
        // A command refused before it reads its password closes stdin: not an error here.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn user_add_queues_the_enrollment_until_the_validator_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let out = medchain(&["init", "--validators", "4", "--dir", &d], None);
    assert!(out.status.success(), "init: {}", text(&out));

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

    // The custody key was made beside node.key, for its owner only.
    let key = dir.path().join("hospital/custody.key");
    assert!(key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

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
