//! `medchain init` and `medchain verify` as a person runs them: real processes, real files.
mod common_cli;

use std::path::Path;
use std::process::Output;

use common_cli::{Consortium, medchain, text};
use ledger::block::{Block, BlockHeader, Certificate};
use ledger::crypto::{check_entries, sign_commit};
use ledger::tx::Access;
use ledger::{Genesis, Meta, OpenOptions, SignedTx, Signer, Store, TxHeader};

fn verify(dir: &Path) -> Output {
    medchain(&["verify", "--data-dir", &dir.display().to_string()], None)
}

/// Appends `blocks` blocks to every replica, signed with the keys `keygen` made; `fork_at`
/// makes the replica named `fork` hold a different block from that height on.
fn grow(net: &Consortium, blocks: u64, fork: Option<(&str, u64)>) {
    let (dir, genesis) = (net.dir.as_path(), &net.genesis);
    let keys: Vec<_> = genesis
        .validators()
        .iter()
        .map(|v| net.node_key(&v.name))
        .collect();
    for v in genesis.validators() {
        let mut store = Store::open(
            &dir.join(&v.name).join("chain.db"),
            genesis,
            OpenOptions::default(),
        )
        .expect("open");
        for i in 0..blocks {
            let (head, prev) = store.head();
            let forked = fork.is_some_and(|(name, at)| name == v.name && head + 1 >= at);
            // Reads "served" by validators for people never enrolled: valid entries that the
            // rules reject, which is as much a part of the chain as applied ones.
            let time_ms = genesis.created_at_ms() + (head + 1) * 10;
            let txs: Vec<SignedTx> = (0..3u8)
                .map(|k| {
                    let header = TxHeader {
                        meta: Meta::Access(Access {
                            patient: [i as u8; 16],
                            reader: [if forked { 2 } else { 1 }; 16],
                            serving: u32::from(k),
                            grant: None,
                        }),
                        signer: Signer::Validator {
                            index: u32::from(k),
                        },
                        created_ms: time_ms - 3 + u64::from(k),
                        not_after_ms: u64::MAX,
                        nonce: [k; 16],
                        body_hash: [0; 32],
                    };
                    SignedTx::sign(header, Vec::new(), &genesis.hash(), &keys[usize::from(k)])
                })
                .collect();
            let entries: Vec<_> = txs.iter().map(|t| t.to_request(&genesis.hash())).collect();
            let header = BlockHeader::build(head + 1, 0, 0, prev, time_ms, &entries);
            let hash = header.hash();
            let certificate = Certificate {
                view: 0,
                signatures: (0..3u32)
                    .map(|s| {
                        let sig =
                            sign_commit(&keys[s as usize], &genesis.hash(), 0, head + 1, &hash);
                        (s, sig)
                    })
                    .collect(),
            };
            let block = Block {
                header,
                entries,
                certificate,
            };
            let checked = check_entries(genesis.keys(), &genesis.hash(), &block.entries);
            store.append_block(&block, &checked).expect("append");
        }
    }
}

#[test]
fn init_then_verify_passes() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    assert_eq!(
        net.genesis
            .validators()
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["hospital", "clinic", "pharmacy", "insurance"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(net.dir.join("clinic/node.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key files are for their owner only");
    }
    let out = verify(&net.dir);
    assert!(out.status.success(), "verify: {}", text(&out));
    assert!(text(&out).contains("4 replica(s)"), "{}", text(&out));

    grow(&net, 6, None);
    let out = verify(&net.dir);
    assert!(out.status.success(), "verify: {}", text(&out));
    let report = text(&out);
    assert!(report.contains("28 blocks, 72 transactions"), "{report}");
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    let d = net.dir.display().to_string();
    let validators = net.validators.display().to_string();
    let out = medchain(&["init", "--validators", &validators, "--dir", &d], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(
        Genesis::load(&net.dir.join("genesis.toml")).expect("kept"),
        net.genesis
    );
    let out = medchain(
        &["init", "--validators", &validators, "--dir", &d, "--force"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = verify(&net.dir);
    assert!(
        out.status.success(),
        "a forced init verifies: {}",
        text(&out)
    );
    assert!(
        net.dir.join("hospital/node.key").exists(),
        "the keys keygen made for these entries stay"
    );
}

#[test]
fn tampering_makes_verify_fail_naming_file_and_height() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    grow(&net, 5, None);
    let path = net.dir.join("pharmacy/chain.db");
    let conn = rusqlite::Connection::open(&path).expect("plain sqlite");
    let (row, mut body): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT bd.b, bd.body FROM transactions t JOIN bodies bd ON bd.b = t.body_row
             WHERE t.height = 3 AND t.idx = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    body[12] ^= 0x01;
    conn.execute(
        "UPDATE bodies SET body = ?1 WHERE b = ?2",
        rusqlite::params![body, row],
    )
    .expect("tamper");
    drop(conn);

    let out = verify(&net.dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("pharmacy/chain.db"), "{report}");
    assert!(report.contains("block 3:"), "{report}");
}

#[test]
fn diverging_replicas_make_verify_fail() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = Consortium::create(root.path());
    grow(&net, 4, Some(("insurance", 3)));
    let out = verify(&net.dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("insurance/chain.db"), "{report}");
    assert!(report.contains("block 3"), "{report}");
}

#[test]
fn verify_without_a_network_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("genesis.toml"), "{}", text(&out));
}
