//! The checks of the node's fuzz targets (`fuzz/`), which `cargo test` also runs on every file
//! of their committed corpora. Not part of the API.
//!
//! Each feeds a peer's (or an operator's) bytes to the code a validator runs on them, with the
//! validator keys and genesis of a test network given by the caller, and asserts what must
//! hold: no panic, errors are values, a decoded frame re-encodes to its own bytes. Each returns
//! whether the bytes were accepted, so that a replay can tell that its corpus reaches past the
//! decoder.
use std::path::Path;

use ledger::Genesis;
use ledger::crypto::SigningKey;
use pbft::{Input, Replica, ReplicaId, Restored};
use tokio::io::AsyncWriteExt;

use crate::config::{NodeConfig, Timing};
use crate::node::{NodeOptions, replica_config};
use crate::transport::channel::{self, Role};
use crate::transport::{Channel, ValidatorIdentity};
use crate::verify::Authenticator;
use crate::wire::{self, FrameKind, FrameLimits, Wire};

/// The validator that receives the fuzzer's bytes; the fuzzer may claim to be any other.
pub const RECEIVER: ReplicaId = 3;

/// The handshake hash the proofs of identity of `channel_handshake` are made for.
pub const HANDSHAKE_HASH: [u8; 32] = [0x48; 32];

/// Validator `id`'s identity on the channel, with `keys[id]` as its node key.
pub fn identity(genesis: &Genesis, keys: &[SigningKey], id: ReplicaId) -> ValidatorIdentity {
    ValidatorIdentity {
        id,
        key: keys[id as usize].clone(),
        genesis_hash: genesis.hash(),
        validators: genesis.keys().into(),
    }
}

/// Validator `from`'s proof of identity to the receiver, as the dialling side of a connection
/// whose handshake hash is [`HANDSHAKE_HASH`] (a valid seed for `channel_handshake`).
pub fn proof_of_identity(genesis: &Genesis, keys: &[SigningKey], from: ReplicaId) -> Vec<u8> {
    channel::proof_of_identity(
        &identity(genesis, keys, from),
        Role::Initiator,
        &HANDSHAKE_HASH,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("a tokio runtime: {error}"))
}

/// `wire_frame`: a frame from an authenticated peer, as its first byte (the kind its header
/// names) and its bytes, bounded, decoded ([`wire::decode`]) and checked as the runtime checks
/// it: a consensus message's shape, then its signatures and transactions, then the replica
/// steps it; each transferred block's certificate and contents. Accepted: it passes all that.
pub fn check_frame(genesis: &Genesis, bytes: &[u8]) -> bool {
    let Some((&kind, frame)) = bytes.split_first() else {
        return false;
    };
    let Some(kind) = FrameKind::from_byte(kind) else {
        return false;
    };
    // The frame checks read the timing and bounds only: no key is opened.
    let unused_key = ledger::master::MasterKey::from_bytes(zeroize::Zeroizing::new([0; 32]));
    let options = NodeOptions::new("", "fuzz", Timing::default(), unused_key);
    if frame.len() > FrameLimits::for_timing(genesis.len(), &options.timing).max_bytes(kind) {
        return false;
    }
    let Ok(wire) = wire::decode(kind, frame) else {
        return false;
    };
    assert!(
        borsh::to_vec(&wire).ok().as_deref() == Some(frame),
        "a frame decoded from bytes it does not encode to"
    );
    let mut auth = Authenticator::new(genesis);
    match &wire {
        Wire::Consensus(signed) => {
            // The runtime takes the sender to be the channel's peer: any other validator.
            if signed.from as usize >= genesis.len() || signed.from == RECEIVER {
                return false;
            }
            let config = replica_config(
                RECEIVER,
                genesis.len(),
                &options.timing,
                genesis.hash(),
                options.max_pending,
            );
            let now_ms = genesis.created_at_ms();
            let mut replica = Replica::new(
                config,
                Restored::genesis(genesis.hash(), genesis.created_at_ms(), now_ms),
            );
            if replica.check_shape(&signed.message).is_err() || auth.authenticate(signed).is_err() {
                return false;
            }
            let _ = replica.step(Input::Message(signed.clone()), &mut Vec::new());
            true
        }
        Wire::Blocks(blocks) => blocks.iter().all(|block| auth.check_block(block).is_ok()),
        Wire::Keys(_) | Wire::FetchBlocks { .. } | Wire::Status { .. } | Wire::Cut => true,
    }
}

/// `channel_handshake`: what an unauthenticated peer says before it has proved who it is.
/// The first byte picks the receiver's side (even: it accepted the connection; odd: it dialled
/// validator 1); the rest is the raw socket bytes the peer sends, then it closes. No fixed
/// bytes complete a handshake (the receiver's ephemeral key is fresh), so the receiver must
/// refuse them, with an error. The same bytes are also checked as the proof of identity that
/// follows the Noise handshake ([`HANDSHAKE_HASH`]); accepted: the proof is valid.
pub fn check_handshake(genesis: &Genesis, keys: &[SigningKey], bytes: &[u8]) -> bool {
    let Some((&side, sent)) = bytes.split_first() else {
        return false;
    };
    let receiver = identity(genesis, keys, RECEIVER);
    let outcome = runtime().block_on(async {
        let (mut peer, socket) = tokio::io::duplex(sent.len() + 64 * 1024);
        peer.write_all(sent).await?;
        peer.shutdown().await?;
        let outcome = if side % 2 == 0 {
            Channel::respond(socket, &receiver).await
        } else {
            Channel::initiate(socket, &receiver, 1).await
        };
        drop(peer);
        outcome.map(|channel| channel.peer())
    });
    assert!(
        outcome.is_err(),
        "fixed bytes passed the handshake as validator {outcome:?}"
    );
    let proven = channel::check_proof(&receiver, Role::Responder, &HANDSHAKE_HASH, sent);
    if let Ok(peer) = proven {
        assert!(peer != RECEIVER && (peer as usize) < genesis.len());
        assert_eq!(sent, proof_of_identity(genesis, keys, peer), "a proof");
    }
    proven.is_ok()
}

/// `channel_frames`: what an authenticated peer (validator 1) sends on the channel after the
/// handshake: the input is its plaintext chunks, each prefixed by its length (u16,
/// little-endian), as the channel encrypts them one Noise message each. The receiver reads
/// frames ([`Channel::recv`]) until the peer closes or it refuses one, each within its kind's
/// bound, and decodes them as the transport does. Accepted: a frame decoded.
pub fn check_channel_frames(genesis: &Genesis, keys: &[SigningKey], bytes: &[u8]) -> bool {
    let limits = FrameLimits::new(genesis.len(), 1, 2);
    let receiver = identity(genesis, keys, RECEIVER);
    let sender = identity(genesis, keys, 1);
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        chunks.push(chunk);
        rest = tail;
    }
    let frames = runtime().block_on(async {
        let (near, far) = tokio::io::duplex(1 << 20);
        let (dialled, accepted) = tokio::join!(
            Channel::initiate(near, &sender, RECEIVER),
            Channel::respond(far, &receiver)
        );
        let (Ok(mut sender), Ok(mut receiver)) = (dialled, accepted) else {
            panic!("validators 1 and 0 fail their handshake");
        };
        let sending = async move {
            for chunk in chunks {
                if sender.send_chunk(chunk).await.is_err() {
                    break;
                }
            }
        };
        let receiving = async {
            let mut frames = Vec::new();
            while let Ok(Some((kind, frame))) = receiver.recv(&limits).await {
                assert!(
                    frame.len() <= limits.max_bytes(kind),
                    "a frame over its bound"
                );
                frames.push(wire::decode(kind, &frame).ok());
            }
            frames
        };
        tokio::join!(sending, receiving).1
    });
    frames.iter().any(Option::is_some)
}

/// `node_toml`: a validator's configuration file. One that reads (with valid timing) writes
/// out ([`NodeConfig::to_commented_toml`]) to a file that reads back and writes the same text.
pub fn check_node_toml(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let path = Path::new("node.toml");
    let Ok(config) = NodeConfig::parse(text, path) else {
        return false;
    };
    let written = config.to_commented_toml();
    match NodeConfig::parse(&written, path) {
        Ok(again) => assert_eq!(
            again.to_commented_toml(),
            written,
            "a configuration that reads back otherwise"
        ),
        Err(error) => panic!("a configuration that writes an unreadable file: {error}\n{written}"),
    }
    true
}
