//! The operator key and private files (docs/SECURITY.md, "Confidential records", §3.3, §8 and
//! §16.7, .9, .10, .22): a network made from public keys holds no secret; a validator's secrets
//! open only with its operator key, which is refused where a thief of the data would find it;
//! every folder is 0700 and every file 0600 whatever the umask.
mod common;
mod common_cli;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common_cli::{Consortium, NAMES, medchain, text};
use ledger::master::{self, MasterKey, Purpose};
use medchain::app::{AppDb, Custody};
use serde_json::json;

/// Every file and folder under `dir`, folders first.
fn walk(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read_dir").flatten() {
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                pending.push(path.clone());
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    (dirs, files)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Whether `needle` occurs in any file under `dir`, raw or in hex.
fn found_in(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let hex = hex::encode(needle);
    walk(dir)
        .1
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
                || bytes.windows(hex.len()).any(|w| w == hex.as_bytes())
        })
        .collect()
}

/// A free loopback port.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// A node.toml for validator `name` of `net` (no key_file: each test gives its key).
fn node_toml(net: &Consortium, name: &str) -> PathBuf {
    let config = node::NodeConfig {
        name: name.into(),
        data_dir: ".".into(),
        key_file: None,
        genesis: "../genesis.toml".into(),
        peer_addr: free_addr(),
        api_addr: free_addr(),
        peers: NAMES
            .iter()
            .filter(|other| **other != name)
            .map(|other| node::PeerConfig {
                name: (*other).into(),
                addr: free_addr(),
            })
            .collect(),
        batch_window: "10ms".into(),
        max_batch: 100,
        view_change_timeout: "1s".into(),
        demo: false,
        watts_per_core: 15.0,
        http: node::HttpConfig::default(),
    };
    let path = net.dir.join(name).join("node.toml");
    std::fs::write(&path, config.to_commented_toml()).expect("node.toml");
    path
}

/// `medchain node --config <hospital's node.toml> ARGS`, which must fail: its output.
fn node_refuses(net: &Consortium, args: &[&str]) -> String {
    let config = node_toml(net, "hospital").display().to_string();
    let mut all = vec!["node", "--config", config.as_str()];
    all.extend_from_slice(args);
    let out = medchain(&all, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    text(&out)
}

#[test]
fn init_from_public_keys_writes_no_secret() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let fresh = root.path().join("fresh");
    let out = medchain(
        &[
            "init",
            "--validators",
            &net.validators.display().to_string(),
            "--dir",
            &fresh.display().to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(fresh.join("genesis.toml").exists());
    for name in NAMES {
        for file in ["chain.db", "node.incarnation"] {
            assert!(fresh.join(name).join(file).exists(), "{name}/{file}");
        }
    }
    let (_, files) = walk(&fresh);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            name != "node.key" && name != "master.salt" && !name.ends_with(".key"),
            "{} is a key",
            file.display()
        );
    }
    for name in NAMES {
        let secret = net.node_key(name).to_bytes();
        assert!(found_in(&fresh, &secret).is_empty(), "{name}'s key");
        let operator = std::fs::read(master::dev_key_path(&net.key_dir, name)).expect("key");
        let operator = hex::decode(String::from_utf8_lossy(&operator).trim()).expect("hex");
        assert!(
            found_in(&fresh, &operator).is_empty(),
            "{name}'s operator key"
        );
    }

    // A field init does not know is refused, not ignored: it may be a secret pasted there.
    let text_with_secret = std::fs::read_to_string(&net.validators)
        .expect("validators.toml")
        .replacen(
            "public_key",
            &format!("secret_key = \"{}\"\npublic_key", "ab".repeat(32)),
            1,
        );
    let pasted = root.path().join("pasted.toml");
    std::fs::write(&pasted, text_with_secret).expect("write");
    let out = medchain(
        &[
            "init",
            "--validators",
            &pasted.display().to_string(),
            "--dir",
            &root.path().join("third").display().to_string(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("secret_key"), "{}", text(&out));
    assert!(!root.path().join("third/genesis.toml").exists());
}

#[test]
fn a_node_key_not_matching_its_genesis_entry_does_not_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    // A new key for hospital, sealed under hospital's own operator key: it opens, but it is
    // not the key the genesis names.
    let path = net.dir.join("hospital/node.key");
    std::fs::remove_file(&path).expect("remove");
    let other = ledger::crypto::generate_key();
    master::write_node_key(&path, &net.operator_key("hospital"), "hospital", &other)
        .expect("write");
    let key_dir = net.key_dir.display().to_string();
    let output = node_refuses(&net, &["--key-dir", &key_dir]);
    assert!(
        output.contains("node.key does not match this validator's entry in genesis.toml"),
        "{output}"
    );
}

#[test]
fn a_key_file_inside_the_data_directory_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let inside = net.dir.join("hospital/operator.key");
    std::fs::copy(master::dev_key_path(&net.key_dir, "hospital"), &inside).expect("copy");
    let output = node_refuses(&net, &["--key-file", &inside.display().to_string()]);
    assert!(output.contains("inside the data directory"), "{output}");
    // Named through the folder's parent, it is found all the same.
    let indirect = net.dir.join("hospital/../hospital/operator.key");
    let output = node_refuses(&net, &["--key-file", &indirect.display().to_string()]);
    assert!(output.contains("inside the data directory"), "{output}");
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let key = master::dev_key_path(&net.key_dir, "hospital");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = node_refuses(&net, &["--key-file", &key.display().to_string()]);
    assert!(output.contains("group or others may read it"), "{output}");
    // The development form is refused as well: the mode is checked whatever the source.
    let key_dir = net.key_dir.display().to_string();
    let output = node_refuses(&net, &["--key-dir", &key_dir]);
    assert!(output.contains("group or others may read it"), "{output}");
}

#[test]
fn a_hard_linked_key_file_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let key = master::dev_key_path(&net.key_dir, "hospital");
    let output = node_refuses(&net, &["--key-file", &key.display().to_string()]);
    assert!(!output.contains("hard links"), "{output}");
    // A second name, here beside the data; `medchain node` refuses the key by either name.
    let second = root.path().join("second-name.key");
    std::fs::hard_link(&key, &second).expect("link");
    let output = node_refuses(&net, &["--key-file", &key.display().to_string()]);
    assert!(output.contains("2 hard links"), "{output}");
}

#[test]
fn a_wrong_operator_key_does_not_start_the_node() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let wrong = root.path().join("wrong.keys");
    ledger::files::private_dir(&wrong).expect("dir");
    MasterKey::create_key_file(&master::dev_key_path(&wrong, "hospital")).expect("key");
    let output = node_refuses(&net, &["--key-dir", &wrong.display().to_string()]);
    assert!(output.contains("this key does not open"), "{output}");
    assert!(output.contains("hospital/./node.key"), "{output}");
    assert!(!output.contains("validator running"), "{output}");
}

#[test]
fn keygen_with_a_passphrase_seals_the_node_key_under_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("net");
    let keygen = |passphrase: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_medchain"))
            .args(["keygen", "--name", "clinic", "--passphrase", "--dir"])
            .arg(&dir)
            .env("MEDCHAIN_PASSPHRASE", passphrase)
            .output()
            .expect("keygen")
    };
    let out = keygen("too short");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("at least 12"), "{}", text(&out));
    let out = keygen("a long enough passphrase");
    assert!(out.status.success(), "{}", text(&out));
    let salt = dir.join("clinic").join(master::SALT_FILE);
    let node_key = dir.join("clinic/node.key");
    let right = MasterKey::from_passphrase("a long enough passphrase", &salt).expect("key");
    let key = master::read_node_key(&node_key, &right, "clinic").expect("opens");
    assert!(
        text(&out).contains(&hex::encode(key.verifying_key().to_bytes())),
        "the public key is printed"
    );
    assert!(!text(&out).contains(&hex::encode(key.to_bytes())));
    let wrong = MasterKey::from_passphrase("another long passphrase", &salt).expect("key");
    assert!(master::read_node_key(&node_key, &wrong, "clinic").is_err());
    assert_eq!((mode(&salt), mode(&node_key)), (0o600, 0o600));
}

/// The embedded cluster of the API tests with one record on chain: the doctor d001 adds it for
/// p001 under an in-person grant, and a block is cut.
async fn cluster_with_a_record(diagnosis: &str) -> common::TestApp {
    let t = common::start(common::manual_timing()).await;
    let doctor = t.login("d001").await;
    let otp = t.in_person_code(&doctor, "p001").await;
    let (s, b) = t
        .post(
            &doctor,
            "/api/add_record",
            json!({"patientId": "p001", "doctorId": "d001", "otp": otp,
                   "medical_data": {"diagnosis": diagnosis, "prescription": "Rest"}}),
        )
        .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{b}");
    let (s, b) = t.post(&doctor, "/api/validate", json!({})).await;
    assert_eq!(s, axum::http::StatusCode::OK, "{b}");
    t
}

/// Stops the cluster and the application store of `t`, leaving its files.
async fn stop(mut t: common::TestApp) -> tempfile::TempDir {
    if let Some(mut cluster) = t.cluster.take() {
        tokio::task::spawn_blocking(move || cluster.shutdown())
            .await
            .expect("shutdown");
    }
    let common::TestApp {
        dir, state, router, ..
    } = t;
    drop(router);
    drop(state);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_is_private_whatever_the_umask() {
    // The usual umask, which would leave files 0644 and folders 0755 if creation relied on it
    // (the binary's main sets 0o077; this process does not).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let t = cluster_with_a_record("Lymphoma").await;
    let root = t.dir.path().to_path_buf();
    let check = |when: &str| {
        let (dirs, files) = walk(&root);
        for dir in &dirs {
            assert_eq!(mode(dir), 0o700, "{when}: {}", dir.display());
        }
        for file in &files {
            assert_eq!(mode(file), 0o600, "{when}: {}", file.display());
        }
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names
    };
    let names = check("running");
    for expected in [
        "genesis.toml",
        "node.key",
        "node.incarnation",
        "hospital.key",
        "chain.db-wal",
        "chain.db-shm",
        "node.db-wal",
        "app.db-wal",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} in {names:?}"
        );
    }
    let dir = stop(t).await;
    assert_eq!(dir.path(), root);
    check("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_data_directory_opens_nothing() {
    let t = common::start(common::manual_timing()).await;
    let operator_key = t.cluster.as_ref().unwrap().operator_key(0).unwrap().clone();
    let dir = stop(t).await;
    // The thief copies the data (the validators' folders and the hospital's app.db), not the
    // key directory beside it.
    let copy = tempfile::tempdir().expect("tempdir");
    let data = copy.path().join("chain");
    for folder in std::iter::once(PathBuf::new()).chain(
        walk(&dir.path().join("chain"))
            .0
            .into_iter()
            .map(|d| d.strip_prefix(dir.path().join("chain")).unwrap().into()),
    ) {
        std::fs::create_dir_all(data.join(&folder)).expect("mkdir");
    }
    for file in walk(&dir.path().join("chain")).1 {
        let rel = file.strip_prefix(dir.path().join("chain")).unwrap();
        std::fs::copy(&file, data.join(rel)).expect("copy");
    }
    for file in ["app.db", "app.db-wal", "app.db-shm"] {
        if dir.path().join(file).exists() {
            std::fs::copy(dir.path().join(file), copy.path().join(file)).expect("copy");
        }
    }
    // Started with keys of its own, the copy refuses to start.
    let thief_keys = copy.path().join("thief.keys");
    for name in NAMES {
        master::dev_key(&thief_keys, name, &data).expect("a key");
    }
    let mut options = node::ClusterOptions::new(&data, common::manual_timing());
    options.key_dir = thief_keys.clone();
    let error = tokio::task::spawn_blocking(move || node::Cluster::start(options).err())
        .await
        .expect("join")
        .expect("refused");
    assert!(
        error.to_string().contains("this key does not open"),
        "{error}"
    );
    // Its node.key and custody rows open under no other key.
    let (thief, _) =
        MasterKey::from_key_file(&master::dev_key_path(&thief_keys, "hospital"), &data, false)
            .expect("key");
    assert!(master::read_node_key(&data.join("hospital/node.key"), &thief, "hospital").is_err());
    let app = AppDb::open(&copy.path().join("app.db"), &thief).expect("app.db");
    let error = Custody::open(&thief, &app).expect_err("refused");
    assert!(error.to_string().contains("does not open"), "{error}");
    // With the operator key, the same files open: it is the key that is missing.
    assert!(Custody::open(&operator_key, &app).is_ok());
    assert!(
        master::read_node_key(&data.join("hospital/node.key"), &operator_key, "hospital").is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_secret_is_not_in_app_db() {
    let t = common::start(common::manual_timing()).await;
    let doctor = t.login("d001").await;
    let _code = t.in_person_code(&doctor, "p001").await;
    let operator_key = t.cluster.as_ref().unwrap().operator_key(0).unwrap().clone();
    let root = t.dir.path().to_path_buf();
    let conn = rusqlite::Connection::open_with_flags(
        root.join("app.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("app.db");
    let codes: i64 = conn
        .query_row("SELECT count(*) FROM codes", [], |r| r.get(0))
        .expect("codes");
    assert_eq!(codes, 1, "the code's MAC is stored");
    let keys: Vec<String> = conn
        .prepare("SELECT key FROM meta")
        .expect("meta")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("keys");
    assert!(!keys.iter().any(|k| k.contains("hmac")), "{keys:?}");
    drop(conn);
    // The key of the codes' MACs is derived from the operator key and sits in no file.
    let secret = operator_key.subkey(Purpose::CodeMac);
    assert!(found_in(&root, secret.as_ref()).is_empty());
    drop(stop(t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custody_is_sealed_under_the_operator_key() {
    let t = common::start(common::manual_timing()).await;
    let operator_key = t.cluster.as_ref().unwrap().operator_key(0).unwrap().clone();
    let root = t.dir.path().to_path_buf();
    let app = t.state.app.clone();
    let people: i64 = rusqlite::Connection::open_with_flags(
        root.join("app.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("app.db")
    .query_row("SELECT count(*) FROM custody", [], |r| r.get(0))
    .expect("custody");
    assert!(people >= 4, "the demo people's custodial keys: {people}");
    assert!(Custody::open(&operator_key, &app).is_ok());
    let other = MasterKey::from_bytes(zeroize::Zeroizing::new([7; 32]));
    let error = Custody::open(&other, &app).expect_err("refused");
    assert!(error.to_string().contains("does not open"), "{error}");
    // No sealing key beside the data: neither the custody subkey nor a custody.key file.
    let subkey = operator_key.subkey(Purpose::Custody);
    assert!(found_in(&root, subkey.as_ref()).is_empty());
    let (_, files) = walk(&root);
    assert!(
        !files.iter().any(|f| f.ends_with("custody.key")),
        "{files:?}"
    );
    drop(app);
    drop(stop(t).await);
}
