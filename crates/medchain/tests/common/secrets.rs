//! Secrets a test plants through the API, and where they must never be (docs/SECURITY.md,
//! "Confidential records (issue 10)", §14 task E): a byte search of every file under a
//! validator's directories for each secret, as its UTF-8 bytes and as their lowercase hex.
//! Shared by the embedded tests (`common`) and the process tests (`common_net`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// A record's three fields, unique to one test run, so that a search for them in any answer
/// or file finds only what the API really served or stored.
pub struct Secret {
    pub diagnosis: String,
    pub prescription: String,
    pub notes: String,
}

impl Secret {
    pub fn new(tag: &str) -> Self {
        let nonce = hex::encode(rand::random::<[u8; 6]>());
        Secret {
            diagnosis: format!("Lymphoma {tag} {nonce}"),
            prescription: format!("R-CHOP {tag} {nonce}"),
            notes: format!("Stage II {tag} {nonce}"),
        }
    }

    pub fn medical_data(&self) -> Value {
        json!({"diagnosis": self.diagnosis, "prescription": self.prescription,
               "notes": self.notes})
    }

    /// The three fields.
    pub fn texts(&self) -> [&str; 3] {
        [&self.diagnosis, &self.prescription, &self.notes]
    }

    /// Whether any of the three is in `answer`.
    pub fn leaked_in(&self, answer: &Value) -> bool {
        let text = answer.to_string();
        self.texts().iter().any(|s| text.contains(s))
    }

    /// Whether all three are in `answer` (what a reader entitled to the record is served).
    pub fn all_in(&self, answer: &Value) -> bool {
        let text = answer.to_string();
        self.texts().iter().all(|s| text.contains(s))
    }
}

/// One place a text was found: the file, the text, and in which form (`plain` or `hex`).
#[derive(Debug)]
pub struct Found {
    pub file: PathBuf,
    pub text: String,
    pub form: &'static str,
}

/// Every regular file under `roots`, recursively (symbolic links are not followed).
pub fn files_under(roots: &[&Path]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = roots.iter().map(|root| root.to_path_buf()).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => dirs.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

/// Copies the folder `from` into `to`, its folders too (a validator's `acknowledged/`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Where each of `texts` occurs, as its UTF-8 bytes or as their lowercase hex, in the raw bytes
/// of `files` (a file gone in the meantime, as a WAL after a checkpoint, is skipped).
pub fn search(files: &[PathBuf], texts: &[&str]) -> Vec<Found> {
    let needles: Vec<(String, &'static str, Vec<u8>)> = texts
        .iter()
        .flat_map(|text| {
            [
                (text.to_string(), "plain", text.as_bytes().to_vec()),
                (text.to_string(), "hex", hex::encode(text).into_bytes()),
            ]
        })
        .collect();
    let mut found = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for (text, form, needle) in &needles {
            if contains(&bytes, needle) {
                found.push(Found {
                    file: file.clone(),
                    text: text.clone(),
                    form,
                });
            }
        }
    }
    found
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The names of `files` (the last path component), for checking what a search covered.
pub fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|file| file.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// Panics, naming each file and what it holds, if any of `secrets` is in any file under
/// `roots`; before that, checks the search itself: `control` (a text known to be stored in
/// clear, such as a record's department) must be found, and every file named in `expected`
/// must have been searched. Returns the files searched.
pub fn assert_nowhere(
    when: &str,
    roots: &[&Path],
    secrets: &[&str],
    control: &str,
    expected: &[&str],
) -> Vec<PathBuf> {
    let files = files_under(roots);
    let searched = names(&files);
    for name in expected {
        assert!(
            searched.iter().any(|searched| searched == name),
            "{when}: no file named {name} was searched: {searched:?}"
        );
    }
    let controls = search(&files, &[control]);
    assert!(
        controls.iter().any(|found| found.form == "plain"),
        "{when}: the control {control:?} is stored in clear, yet the search did not find it in \
         any of {} files",
        files.len()
    );
    let leaks = search(&files, secrets);
    assert!(
        leaks.is_empty(),
        "{when}: LEAK: {} (of {} files searched)",
        leaks
            .iter()
            .map(|found| format!(
                "{} holds {:?} ({})",
                found.file.display(),
                found.text,
                found.form
            ))
            .collect::<Vec<_>>()
            .join("; "),
        files.len()
    );
    files
}
