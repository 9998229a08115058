//! The fuzz corpora, replayed: every file under `fuzz/corpus/<target>/` goes through the check
//! its fuzz target runs (`fuzz/fuzz_targets/<target>.rs` calls the same function), so that
//! `cargo test` on the stable toolchain keeps every input the fuzzers found or were seeded
//! with passing. How to fuzz and add a crash: README.md, "Fuzzing".
//!
//! `cargo test -p medchain --test fuzz_corpus -- --ignored` (re)writes the seeds this file makes
//! from the code (real frames, messages, transactions, blocks, files and bodies); minimise
//! with `cargo fuzz cmin` afterwards.
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ledger::crypto;
use ledger::fuzzing::{net, sealed_record};
use ledger::testkit::{self, TestNet};
use node::fuzzing::RECEIVER;
use node::{KeyFrame, KeyReply, NodeConfig, PeerConfig, Wire, WireKey};
use pbft::{Action, Config, Input, Message, Replica, ReplicaId, Request, Restored, Signed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Check = fn(&[u8]) -> bool;

/// Every fuzz target and its check, by the name of its corpus folder.
const TARGETS: &[(&str, Check)] = &[
    ("pbft_messages", pbft::fuzzing::check_messages),
    ("signed_tx", ledger::fuzzing::check_signed_tx),
    ("tx_body", ledger::fuzzing::check_tx_body),
    ("block", ledger::fuzzing::check_block),
    ("genesis_toml", ledger::fuzzing::check_genesis_toml),
    ("wire_frame", |bytes| {
        node::fuzzing::check_frame(&net().genesis, bytes)
    }),
    ("channel_handshake", |bytes| {
        node::fuzzing::check_handshake(&net().genesis, &net().keys, bytes)
    }),
    ("channel_frames", |bytes| {
        node::fuzzing::check_channel_frames(&net().genesis, &net().keys, bytes)
    }),
    ("node_toml", node::fuzzing::check_node_toml),
    ("api_json", medchain::http::fuzzing::check_api_json),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn names_in(dir: &Path, strip: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().trim_end_matches(strip).to_string())
        .collect()
}

fn check(name: &str) -> Check {
    TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
        .1
}

/// Runs `target`'s check on every file of its corpus; at least one must be accepted (the
/// corpus reaches past the decoder).
fn replay(target: &str) {
    let check = check(target);
    let dir = fuzz_dir().join("corpus").join(target);
    let mut accepted = 0;
    let files = names_in(&dir, "");
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for file in &files {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(_) => panic!("{target} fails on {}", path.display()),
        }
    }
    println!("{target}: {accepted} of {} inputs accepted", files.len());
    assert!(accepted > 0, "no input of {} is accepted", dir.display());
}

macro_rules! replays {
    ($($test:ident: $target:literal,)*) => {
        $(
            #[test]
            fn $test() {
                replay($target);
            }
        )*
    };
}

replays! {
    corpus_of_pbft_messages_passes: "pbft_messages",
    corpus_of_signed_tx_passes: "signed_tx",
    corpus_of_tx_body_passes: "tx_body",
    corpus_of_block_passes: "block",
    corpus_of_genesis_toml_passes: "genesis_toml",
    corpus_of_wire_frame_passes: "wire_frame",
    corpus_of_channel_handshake_passes: "channel_handshake",
    corpus_of_channel_frames_passes: "channel_frames",
    corpus_of_node_toml_passes: "node_toml",
    corpus_of_api_json_passes: "api_json",
}

/// Each target has a fuzz target file, a corpus and a replay above; nothing is left out.
#[test]
fn every_fuzz_target_has_its_corpus_and_its_replay() {
    let registered: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    let dir = fuzz_dir();
    assert_eq!(names_in(&dir.join("fuzz_targets"), ".rs"), registered);
    assert_eq!(names_in(&dir.join("corpus"), ""), registered);
    let source = include_str!("fuzz_corpus.rs");
    for name in &registered {
        assert!(
            source.contains(&format!(": \"{name}\",")),
            "{name} has no replay test"
        );
    }
}

// ----- seeds made by the code ---------------------------------------------------------------

fn write_seeds(target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for seed in seeds {
        let name = format!("seed-{}", &hex::encode(ledger::sha256(&seed))[..16]);
        std::fs::write(dir.join(name), &seed).expect("seed written");
    }
}

fn encode<T: borsh::BorshSerialize>(value: &T) -> Vec<u8> {
    borsh::to_vec(value).expect("borsh")
}

/// What a run of four replicas says: the messages replica `receiver` gets from the others in
/// each phase, and every message any of them sent.
struct Trace {
    phases: Vec<Vec<Signed<Message>>>,
    sent: Vec<Signed<Message>>,
}

/// Four replicas of `config`, signing with `sign`: `requests` ordered by primary 0 (with a
/// checkpoint or two), then primary 0 stops and the others change view, then replica 2
/// restarts with lost state and recovers. Every message is delivered at once.
fn run_cluster(
    config: impl Fn(ReplicaId) -> Config,
    restored: Restored,
    sign: impl Fn(ReplicaId, &Message) -> pbft::Signature,
    requests: &[Request],
    now_ms: u64,
) -> Trace {
    let mut replicas: Vec<Replica> = (0..4)
        .map(|id| Replica::new(config(id), restored.clone()))
        .collect();
    let mut up = [true; 4];
    let mut trace = Trace {
        phases: vec![Vec::new()],
        sent: Vec::new(),
    };
    let mut queue: VecDeque<(ReplicaId, Input)> = VecDeque::new();
    let run = |replicas: &mut Vec<Replica>,
               up: &[bool; 4],
               trace: &mut Trace,
               queue: &mut VecDeque<(ReplicaId, Input)>| {
        while let Some((id, input)) = queue.pop_front() {
            if !up[id as usize] {
                continue;
            }
            let mut actions = Vec::new();
            let _ = replicas[id as usize].step(input, &mut actions);
            for action in actions {
                let (to, message) = match action {
                    Action::Broadcast(message) => ((0..4).collect::<Vec<_>>(), message),
                    Action::Send { to, message } => (vec![to], message),
                    _ => continue,
                };
                let signed = Signed {
                    from: id,
                    signature: sign(id, &message),
                    message,
                };
                trace.sent.push(signed.clone());
                for to in to {
                    if to == RECEIVER && id != RECEIVER {
                        trace
                            .phases
                            .last_mut()
                            .expect("a phase")
                            .push(signed.clone());
                    }
                    queue.push_back((to, Input::Message(signed.clone())));
                }
            }
        }
    };
    let tick = Input::Tick { now_ms };
    for pair in requests.chunks(2).take(5) {
        for request in pair {
            queue.push_back((0, Input::Request(request.clone())));
        }
        queue.push_back((0, Input::Cut));
        run(&mut replicas, &up, &mut trace, &mut queue);
    }
    trace.phases.push(Vec::new());
    up[0] = false;
    for request in requests.iter().skip(10) {
        for id in 1..4 {
            queue.push_back((id, Input::Request(request.clone())));
        }
    }
    for _ in 0..200 {
        for id in 1..4 {
            queue.push_back((id, tick.clone()));
        }
        run(&mut replicas, &up, &mut trace, &mut queue);
    }
    trace.phases.push(Vec::new());
    replicas[2] = Replica::new(
        config(2),
        Restored {
            recovering: true,
            nonce: 7,
            incarnation: 1,
            ..restored
        },
    );
    for _ in 0..50 {
        for id in 1..4 {
            queue.push_back((id, tick.clone()));
        }
        run(&mut replicas, &up, &mut trace, &mut queue);
    }
    trace
}

fn pbft_seeds() -> Vec<Vec<u8>> {
    use pbft::fuzzing::{GENESIS, config};
    let requests: Vec<Request> = (0..12u8)
        .map(|i| Request {
            id: [i; 32],
            timestamp_ms: u64::from(i),
            payload: Arc::from(vec![i; 3]),
        })
        .collect();
    let trace = run_cluster(
        |id| config(id, 4),
        Restored::genesis(GENESIS, 0, 0),
        |from, _| pbft::Signature([from as u8; 64]),
        &requests,
        0,
    );
    let mut seeds: Vec<Vec<u8>> = trace
        .phases
        .iter()
        .map(|phase| phase.iter().flat_map(encode).collect())
        .collect();
    seeds.extend(distinct_kinds(&trace.sent).into_iter().map(|m| encode(&m)));
    seeds
}

/// One message of each kind (and sender) of `sent`.
fn distinct_kinds(sent: &[Signed<Message>]) -> Vec<Signed<Message>> {
    let mut seen = HashSet::new();
    sent.iter()
        .filter(|signed| seen.insert((std::mem::discriminant(&signed.message), signed.from)))
        .cloned()
        .collect()
}

/// Frames a validator receives: the messages of a run of the test network's validators
/// (real signatures, sample transactions as requests), blocks, and every other kind.
fn wire_seeds(net: &TestNet) -> Vec<Wire> {
    let genesis = &net.genesis;
    let requests: Vec<Request> = (0..14).map(|i| net.request(&net.sample_tx(i))).collect();
    let trace = run_cluster(
        |id| {
            let mut config = Config::new(id, 4, ledger::proposal_digest, genesis.hash());
            config.checkpoint_interval = 4;
            config.watermark_window = 8;
            config.max_batch = 2;
            config.view_change_timeout_ticks = 20;
            config
        },
        Restored::genesis(
            genesis.hash(),
            genesis.created_at_ms(),
            genesis.created_at_ms(),
        ),
        |from, message| crypto::sign_message(&net.keys[from as usize], &genesis.hash(), message),
        &requests,
        genesis.created_at_ms(),
    );
    let mut wires: Vec<Wire> = distinct_kinds(&trace.sent)
        .into_iter()
        .map(Wire::Consensus)
        .collect();
    let chain = net.chain(3, 2);
    wires.push(Wire::Blocks(chain.clone()));
    wires.push(Wire::Blocks(vec![chain[0].clone()]));
    wires.push(Wire::Blocks(Vec::new()));
    wires.push(Wire::FetchBlocks {
        from_height: 1,
        limit: 256,
    });
    wires.push(Wire::Status {
        height: 3,
        hash: chain[2].hash(),
    });
    wires.push(Wire::Cut);
    wires.push(Wire::Keys(KeyFrame::Request {
        request: 1,
        txs: vec![net.id(sealed_record())],
    }));
    wires.push(Wire::Keys(KeyFrame::Answer {
        request: 1,
        height: 3,
        replies: vec![
            KeyReply::Key(WireKey(net.data_key(&sealed_record().header))),
            KeyReply::NotHeld,
            KeyReply::NotEntitled,
            KeyReply::Erased,
            KeyReply::NotOnChain,
            KeyReply::Busy,
        ],
    }));
    wires
}

/// The bytes each side of a real handshake between validators 1 (dialling) and the receiver
/// sends, the receiver's first.
fn handshake_bytes(net: &TestNet) -> (Vec<u8>, Vec<u8>) {
    let dialler = node::fuzzing::identity(&net.genesis, &net.keys, 1);
    let receiver = node::fuzzing::identity(&net.genesis, &net.keys, RECEIVER);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (dial_end, dial_relay) = tokio::io::duplex(1 << 16);
        let (accept_end, accept_relay) = tokio::io::duplex(1 << 16);
        let (dial_in, dial_out) = tokio::io::split(dial_relay);
        let (accept_in, accept_out) = tokio::io::split(accept_relay);
        let sent_by_dialler = Arc::new(Mutex::new(Vec::new()));
        let sent_by_receiver = Arc::new(Mutex::new(Vec::new()));
        let pumps = tokio::spawn(async move {
            tokio::join!(
                pump(dial_in, accept_out, sent_by_dialler.clone()),
                pump(accept_in, dial_out, sent_by_receiver.clone())
            );
            let take = |log: &Arc<Mutex<Vec<u8>>>| log.lock().expect("log").clone();
            (take(&sent_by_receiver), take(&sent_by_dialler))
        });
        let (dialled, accepted) = tokio::join!(
            node::transport::Channel::initiate(dial_end, &dialler, RECEIVER),
            node::transport::Channel::respond(accept_end, &receiver)
        );
        assert!(dialled.is_ok() && accepted.is_ok(), "the handshake");
        drop((dialled, accepted));
        pumps.await.expect("pumps")
    })
}

/// Copies `from` to `to` until `from` ends, keeping what passed in `log`.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buffer).await {
        log.lock().expect("log").extend_from_slice(&buffer[..n]);
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Chunks as `channel_frames` reads them: each prefixed by its length (u16, little-endian).
fn chunked(chunks: &[Vec<u8>]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|chunk| {
            let len = u16::try_from(chunk.len()).expect("a chunk of at most 64 KiB");
            len.to_le_bytes().into_iter().chain(chunk.iter().copied())
        })
        .collect()
}

/// A frame's chunks as the channel sends it (docs of `node::transport::Channel`): the first
/// starts with its length (u32, little-endian) and kind; split after `split` bytes of frame.
fn frame_chunks(wire: &Wire, split: usize) -> Vec<Vec<u8>> {
    let frame = encode(wire);
    let split = split.min(frame.len());
    let mut first = u32::try_from(frame.len())
        .expect("len")
        .to_le_bytes()
        .to_vec();
    first.push(node::FrameKind::of(wire) as u8);
    first.extend_from_slice(&frame[..split]);
    let rest = &frame[split..];
    std::iter::once(first)
        .chain((!rest.is_empty()).then(|| rest.to_vec()))
        .collect()
}

fn json_seeds() -> Vec<&'static str> {
    vec![
        "",
        "{}",
        r#"{"role":"patient","patientId":"P-1","password":"correct horse"}"#,
        r#"{"role":"doctor","doctorId":"D-1","password":"x"}"#,
        r#"{"patientId":"P-1","password":"pw","purpose":"follow-up","scope":{"read":{"durationMs":3600000}}}"#,
        r#"{"patientId":"P-1","purpose":"surgery","scope":"write","devicePublicKey":"00112233"}"#,
        r#"{"devicePublicKey":"ab","durationMs":60000}"#,
        r#"{"signature":"00ff"}"#,
        r#"{"publicKey":"aa","pop":"bb","label":"phone"}"#,
        r#"{"code":"123456","devicePublicKey":null}"#,
        r#"{"patientId":"P-1","doctorId":"D-1","otp":"123456","grantId":"ab","department":"Oncology","medical_data":{"diagnosis":"d","prescription":"p","notes":"n"},"devicePublicKey":"cd"}"#,
        r#"{"patientId":"P-1","password":"pw"}"#,
        r#"{"patientId":"P-\u00e9\ud83d\ude00"}"#,
        r#"{"durationMs":18446744073709551615}"#,
    ]
}

fn node_toml_seeds() -> Vec<String> {
    let config = NodeConfig {
        name: "clinic".into(),
        data_dir: "clinic".into(),
        key_file: Some("/etc/medchain/clinic.key".into()),
        genesis: "../genesis.toml".into(),
        peer_addr: "127.0.0.1:7002".parse().expect("addr"),
        api_addr: "[::1]:5002".parse().expect("addr"),
        peers: vec![PeerConfig {
            name: "hospital".into(),
            addr: "10.0.0.1:7001".parse().expect("addr"),
        }],
        batch_window: "1m 30s".into(),
        max_batch: 500,
        view_change_timeout: "250ms".into(),
        demo: true,
        watts_per_core: 12.5,
        http: node::HttpConfig {
            secure_cookie: true,
            allowed_hosts: vec!["clinic.example.org".into()],
            trusted_proxies: vec!["127.0.0.1".parse().expect("addr")],
            ..node::HttpConfig::default()
        },
    };
    let minimal = "name = \"a\"\ndata_dir = \"a\"\ngenesis = \"g.toml\"\n\
                   peer_addr = \"127.0.0.1:1\"\napi_addr = \"127.0.0.1:2\"\npeers = []\n";
    vec![config.to_commented_toml(), minimal.to_string()]
}

#[test]
#[ignore = "writes the seed corpora under fuzz/corpus: run by hand, then minimise"]
fn write_seed_corpora() {
    let net = net();
    write_seeds("pbft_messages", pbft_seeds());
    let every_kind = testkit::every_kind(net);
    write_seeds(
        "signed_tx",
        every_kind
            .iter()
            .map(|tx| tx.to_bytes())
            .chain([net.torsion_tx(3).to_bytes(), Vec::new()]),
    );
    write_seeds(
        "tx_body",
        [
            sealed_record().body.clone(),
            testkit::sample_record(1).to_bytes(),
            ledger::tx::PurposeBody {
                purpose: "follow-up".into(),
            }
            .to_bytes(),
        ],
    );
    let garbage = Request {
        id: [1; 32],
        timestamp_ms: 2,
        payload: Arc::from(vec![3u8; 5]),
    };
    let chain = net.chain(2, 3);
    write_seeds(
        "block",
        chain.iter().map(|block| block.to_bytes()).chain([
            net.block_of_entries((0, net.genesis.hash()), vec![garbage])
                .to_bytes(),
            net.genesis.block().to_bytes(),
        ]),
    );
    let with_params = TestNet::with_params(
        7,
        3,
        ledger::ChainParams {
            block_time_tolerance_ms: 500,
            recovery_wait_ms: 1,
            max_batch: 3,
        },
    );
    write_seeds(
        "genesis_toml",
        [net.genesis.to_toml(), with_params.genesis.to_toml()].map(String::into_bytes),
    );
    let wires = wire_seeds(net);
    write_seeds(
        "wire_frame",
        wires.iter().map(|wire| {
            let mut bytes = vec![node::FrameKind::of(wire) as u8];
            bytes.extend(encode(wire));
            bytes
        }),
    );
    let (from_receiver, from_dialler) = handshake_bytes(net);
    let proof = node::fuzzing::proof_of_identity(&net.genesis, &net.keys, 1);
    write_seeds(
        "channel_handshake",
        [
            [&[0u8][..], &from_dialler].concat(),
            [&[1u8][..], &from_receiver].concat(),
            [&[0u8][..], &proof].concat(),
        ],
    );
    let small: Vec<&Wire> = wires
        .iter()
        .filter(|wire| encode(*wire).len() < 900)
        .collect();
    write_seeds(
        "channel_frames",
        small
            .iter()
            .map(|wire| chunked(&frame_chunks(wire, usize::MAX)))
            .chain([chunked(
                &small
                    .iter()
                    .flat_map(|wire| frame_chunks(wire, 7))
                    .collect::<Vec<_>>(),
            )]),
    );
    write_seeds(
        "node_toml",
        node_toml_seeds().into_iter().map(String::into_bytes),
    );
    write_seeds(
        "api_json",
        json_seeds().into_iter().map(|s| s.as_bytes().to_vec()),
    );
}
