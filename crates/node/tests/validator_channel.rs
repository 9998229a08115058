//! The channel between validator processes (issue 8, findings 4 and 5): real TCP on loopback,
//! real keys from a real genesis, each validator with its own tokio runtime as it would have in
//! its own process. The Byzantine peers below hold a validator's real key (or none) and speak
//! the channel by hand.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger::tx::RecordBody;
use ledger::{Queries, crypto};
use node::load::{Person, enroll};
use node::transport::{Channel, ValidatorIdentity};
use node::{FrameKind, FrameLimits, NodeHandle, Wire};
use pbft::ReplicaId;
use tokio::net::TcpStream;

mod common;

use common::tcp::{Net, Process, timing, wait_until};

/// Commits `count` records with `diagnosis` through `process`'s validator, which is home to
/// their patient and doctor: the two are enrolled, the patient grants in person, the doctor
/// writes.
fn commit(process: &Process, count: usize, diagnosis: &str) {
    let handle = process.handle();
    let patient = Person::patient(handle.id());
    let doctor = Person::doctor(handle.id(), "Cardiology", "Dr Channel");
    process.runtime.block_on(async {
        enroll(
            std::slice::from_ref(&handle),
            &[&patient, &doctor],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        let mut grants = Vec::new();
        for _ in 0..count {
            let grant = patient
                .write_grant(&handle, &doctor.id, "visit")
                .await
                .unwrap();
            grants.push(handle.submit(grant).await.unwrap());
        }
        handle.cut().await.unwrap();
        let body = RecordBody {
            diagnosis: diagnosis.into(),
            prescription: "rest".into(),
            notes: String::new(),
        };
        for grant in grants {
            let record = doctor
                .record(&handle, &patient.id, grant, &body)
                .await
                .unwrap();
            handle.submit(record).await.unwrap();
        }
    });
    wait_until(Duration::from_secs(20), "transactions to commit", || {
        handle.status().pending == 0
    });
}

fn heard_from(handle: &NodeHandle, peer: ReplicaId) -> bool {
    handle.shared().peer_last_contact()[peer as usize].is_some()
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Whether the validator at the other end closed `channel` within `limit`.
async fn closed_within(channel: &mut Channel<TcpStream>, limit: Duration) -> bool {
    let limits = FrameLimits::new(4, 1, 1);
    match tokio::time::timeout(limit, channel.recv(&limits)).await {
        Ok(Ok(None)) | Ok(Err(_)) => true,
        Ok(Ok(Some(_))) | Err(_) => false,
    }
}

fn status_frame(height: u64) -> Vec<u8> {
    borsh::to_vec(&Wire::Status {
        height,
        hash: [0; 32],
    })
    .unwrap()
}

/// Opens a channel to validator 0 at `addr` as `identity`, sends it a status frame and gives
/// the validator time to take it.
async fn send_status(addr: SocketAddr, identity: &ValidatorIdentity) -> Channel<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut channel = Channel::initiate(stream, identity, 0).await.unwrap();
    channel
        .feed(FrameKind::Small, &status_frame(0))
        .await
        .unwrap();
    channel.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    channel
}

#[test]
fn finding_4_outsider_is_refused_at_handshake() {
    let net = Net::new();
    let hospital = net.start(0);
    let handle = hospital.handle();
    let rt = client_runtime();

    // A process that speaks no Noise at all: the old plaintext frame, claiming to be the clinic.
    let mut plain = std::net::TcpStream::connect(net.listen[0]).unwrap();
    let frame = status_frame(1_000_000);
    let mut old_frame = vec![1, 0, 0, 0]; // from: the clinic
    old_frame.extend_from_slice(&frame);
    let _ = plain.write_all(&(old_frame.len() as u32).to_be_bytes());
    let _ = plain.write_all(&old_frame);
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    // The node drops the connection (read ends) rather than taking the frame.
    let _ = plain.read_to_end(&mut rest);

    // A Noise peer with a key that is not in the genesis file, claiming to be the clinic.
    let impostor = net.identity(1, crypto::generate_key());
    rt.block_on(async {
        let stream = TcpStream::connect(net.listen[0]).await.unwrap();
        // Its own side of the handshake may finish; the node checks its proof and hangs up.
        if let Ok(mut channel) = Channel::initiate(stream, &impostor, 0).await {
            let _ = channel
                .feed(FrameKind::Small, &status_frame(1_000_000))
                .await;
            let _ = channel.flush().await;
            assert!(
                closed_within(&mut channel, Duration::from_secs(10)).await,
                "the node kept a connection whose key is not the clinic's"
            );
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !heard_from(&handle, 1),
        "a frame from a process outside the validator set was accepted"
    );

    // The clinic's real key is let in: the refusals above were about the key, not the frame.
    let clinic = net.identity(1, net.key(1));
    rt.block_on(async {
        send_status(net.listen[0], &clinic).await;
    });
    assert!(heard_from(&handle, 1), "the clinic's own key was refused");
}

/// Records every byte that passes from `listen` to `target`.
fn recording_proxy(listen: std::net::TcpListener, target: SocketAddr) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for inbound in listen.incoming() {
            let Ok(mut inbound) = inbound else { return };
            let Ok(mut outbound) = std::net::TcpStream::connect(target) else {
                continue;
            };
            let (mut back_in, mut back_out) =
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back_out, &mut back_in);
            });
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                while let Ok(len) = inbound.read(&mut buffer) {
                    if len == 0 || outbound.write_all(&buffer[..len]).is_err() {
                        break;
                    }
                    recorded.lock().unwrap().extend_from_slice(&buffer[..len]);
                }
            });
        }
    });
    seen
}

#[test]
fn finding_4_wire_is_encrypted() {
    let net = Net::new();
    // The hospital reaches the clinic through a proxy that records what it sends.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hospital_peers = net.listen.clone();
    hospital_peers[1] = proxy.local_addr().unwrap();
    let seen = recording_proxy(proxy, net.listen[1]);
    let others: Vec<Process> = (1..4).map(|id| net.start(id)).collect();
    let hospital = net.start_with(0, &hospital_peers);

    let secret = "Diagnosis: stage II carcinoma, patient 4711";
    commit(&hospital, 3, secret);
    // The hospital is the primary of view 0: its pre-prepares carry the records to the clinic,
    // through the proxy, and the clinic commits them.
    let clinic = others[0].handle();
    let height = hospital.handle().status().height;
    wait_until(Duration::from_secs(10), "the clinic to commit", || {
        clinic.status().height >= height
    });
    let captured = seen.lock().unwrap().clone();
    assert!(
        captured.len() > 1000,
        "too little went through the proxy ({} bytes)",
        captured.len()
    );
    let found = captured
        .windows(secret.len())
        .any(|window| window == secret.as_bytes());
    assert!(
        !found,
        "the diagnosis crossed the network in plaintext ({} bytes seen)",
        captured.len()
    );
    for marker in [&b"Cardiology"[..], b"Dr Channel", b"visit"] {
        assert!(
            !captured
                .windows(marker.len())
                .any(|window| window == marker),
            "{} crossed the network in plaintext",
            String::from_utf8_lossy(marker)
        );
    }
}

/// Validator 3 played by the test: it holds its real key, answers handshakes at its address,
/// never answers a `FetchBlocks`, and tells validator `victim` it has a huge height.
fn byzantine_claimer(net: &Net, victim: ReplicaId) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let identity = net.identity(3, net.key(3));
    let listen = net.listen[3];
    let victim_addr = net.listen[victim as usize];
    let listening = identity.clone();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let identity = listening.clone();
            tokio::spawn(async move {
                // Reads and ignores every request: a dropped reply, each time.
                if let Ok(mut channel) = Channel::respond(stream, &identity).await {
                    let limits = FrameLimits::new(4, 1000, 1000);
                    while let Ok(Some(_)) = channel.recv(&limits).await {}
                }
            });
        }
    });
    runtime.spawn(async move {
        loop {
            if let Ok(stream) = TcpStream::connect(victim_addr).await
                && let Ok(mut channel) = Channel::initiate(stream, &identity, victim).await
            {
                loop {
                    let forged = status_frame(u64::MAX / 2);
                    if channel.feed(FrameKind::Small, &forged).await.is_err()
                        || channel.flush().await.is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    runtime
}

#[test]
fn finding_4_forged_status_does_not_disable_state_transfer() {
    let net = Net::new();
    // Validator 3 is Byzantine from the start; the other three commit without it.
    let byzantine = byzantine_claimer(&net, 2);
    let mut honest: Vec<Process> = (0..3).map(|id| net.start(id)).collect();
    commit(&honest[0], 12, "chest pain");
    // Twelve transactions in blocks of at most four: three blocks or more.
    let primary = honest[0].handle();
    wait_until(Duration::from_secs(10), "three blocks", || {
        primary.status().height >= 3
    });
    let head = primary.status().height;
    drop(honest);

    // The pharmacy loses its stores, and comes back alone first: the only peer it hears is
    // validator 3, which claims a huge height and never answers.
    for file in ["chain.db", "chain.db-wal", "chain.db-shm"] {
        let _ = std::fs::remove_file(net.dir(2).join(file));
    }
    for file in ["node.db", "node.db-wal", "node.db-shm"] {
        let _ = std::fs::remove_file(net.dir(2).join(file));
    }
    let pharmacy = net.start(2);
    let lagging = pharmacy.handle();
    wait_until(Duration::from_secs(10), "the forged status", || {
        heard_from(&lagging, 3)
    });
    std::thread::sleep(Duration::from_millis(300));
    // Then its honest peers return, and it must catch up from them.
    honest = (0..2).map(|id| net.start(id)).collect();
    wait_until(
        Duration::from_secs(20),
        "the pharmacy to catch up from its honest peers",
        || lagging.status().height >= head,
    );
    let expected = honest[0]
        .handle()
        .read(|reader| reader.blocks_from(head, 1))
        .unwrap();
    let transferred = lagging.read(|reader| reader.blocks_from(head, 1)).unwrap();
    assert_eq!(transferred[0].hash(), expected[0].hash());
    drop(byzantine);
}

#[test]
fn finding_5_oversized_frame_is_refused() {
    let net = Net::new();
    let hospital = net.start(0);
    let handle = hospital.handle();
    let limits = FrameLimits::for_timing(4, &timing());
    let clinic = net.identity(1, net.key(1));
    let rt = client_runtime();
    rt.block_on(async {
        // A frame of the right size is taken.
        let mut channel = send_status(net.listen[0], &clinic).await;
        assert!(heard_from(&handle, 1), "a legitimate frame was refused");

        // A status is tiny; a "small" frame one byte over its bound is refused unread.
        let oversized = vec![0u8; limits.small_bytes + 1];
        channel.feed(FrameKind::Small, &oversized).await.unwrap();
        channel.flush().await.unwrap();
        assert!(
            closed_within(&mut channel, Duration::from_secs(5)).await,
            "the node kept reading an oversized frame"
        );

        // A batch larger than max_batch requests of the largest transaction, likewise.
        let stream = TcpStream::connect(net.listen[0]).await.unwrap();
        let mut channel = Channel::initiate(stream, &clinic, 0).await.unwrap();
        let oversized = vec![0u8; limits.batch_bytes + 1];
        let _ = channel.feed(FrameKind::Batch, &oversized).await;
        let _ = channel.flush().await;
        assert!(
            closed_within(&mut channel, Duration::from_secs(5)).await,
            "the node accepted a batch over its bound"
        );
    });
    assert!(
        limits.largest_bytes() < 256 * 1024 * 1024 + 1,
        "frame bound above the old 256 MiB"
    );
}

/// A key frame is bounded by its own kind (64 KiB: a full request is 32 KiB, a full answer 34
/// KiB): one a byte over is refused unread with the connection, whatever the other bounds.
#[test]
fn a_key_frame_above_its_bound_is_refused() {
    let net = Net::new();
    let hospital = net.start(0);
    let handle = hospital.handle();
    let clinic = net.identity(1, net.key(1));
    let rt = client_runtime();
    rt.block_on(async {
        let stream = TcpStream::connect(net.listen[0]).await.unwrap();
        let mut channel = Channel::initiate(stream, &clinic, 0).await.unwrap();
        // A full request is taken (and answered: the hospital's key service counts it).
        let full = borsh::to_vec(&Wire::Keys(node::KeyFrame::Request {
            request: 1,
            txs: vec![[7; 32]; node::MAX_KEY_REQUEST_IDS],
        }))
        .unwrap();
        channel.feed(FrameKind::Keys, &full).await.unwrap();
        channel.flush().await.unwrap();
        assert!(
            !closed_within(&mut channel, Duration::from_millis(500)).await,
            "a full key request was refused"
        );

        let oversized = vec![0u8; node::MAX_KEY_FRAME_BYTES + 1];
        channel.feed(FrameKind::Keys, &oversized).await.unwrap();
        channel.flush().await.unwrap();
        assert!(
            closed_within(&mut channel, Duration::from_secs(5)).await,
            "the node kept reading a key frame over its bound"
        );
    });
    // The full request reached the key service, not the runtime.
    assert_eq!(handle.status().rejected_messages, 0);
    assert!(node::FrameLimits::for_timing(4, &timing()).max_bytes(FrameKind::Keys) < 65 * 1024);
}
