//! The channel between two validators: a Noise XX handshake (`snow`, pure Rust), then each side
//! signs the handshake hash with its Ed25519 node key and the other checks that signature against
//! the genesis file's key for the replica id it claims. Everything after the handshake is a Noise
//! transport message: encrypted and authenticated, in order, never replayable into another
//! connection. See "Validator channel" in docs/ARCHITECTURE.md.
//!
//! On the socket, each Noise message is prefixed by its length (two bytes, big-endian), as the
//! Noise specification suggests. A frame longer than one Noise message (65,535 bytes) is cut in
//! chunks; the first chunk starts with the frame's length (u32, little-endian) and kind, so the
//! receiver refuses an oversized frame before buffering it.

use std::time::Duration;

use ed25519_dalek::Signer;
use futures::{SinkExt, StreamExt};
use pbft::ReplicaId;
use snow::{HandshakeState, TransportState};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::ValidatorIdentity;
use crate::error::NodeError;
use crate::wire::{FrameKind, FrameLimits};

const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake: two ends of different chains (or protocol versions) fail the
/// handshake itself. v2: view-changes and new-views sign their batches by digest and a new-view
/// writes each batch once (a validator of v1 read the first as forged and could not decode the
/// second: red team s62 N1).
const PROLOGUE_TAG: &[u8] = b"medchain validator channel v2";
/// What a validator signs to prove it holds its node key on this connection. The tag keeps this
/// signature from being mistaken for any other signature a node key makes.
const AUTH_TAG: &[u8] = b"medchain validator channel v1: handshake hash";
const NOISE_MAX_MESSAGE_BYTES: usize = 65_535;
const NOISE_TAG_BYTES: usize = 16;
const CHUNK_PLAINTEXT_BYTES: usize = NOISE_MAX_MESSAGE_BYTES - NOISE_TAG_BYTES;
/// The first chunk's header: the frame's length (u32) and kind (u8).
const FRAME_HEADER_BYTES: usize = 5;
/// How long a connection may take from accept to authenticated, after which it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Initiator = 0,
    Responder = 1,
}

/// One authenticated, encrypted connection to validator `peer`.
pub struct Channel<S> {
    socket: Framed<S, LengthDelimitedCodec>,
    noise: TransportState,
    peer: ReplicaId,
    buffer: Vec<u8>,
}

fn noise_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(NOISE_MAX_MESSAGE_BYTES)
        .new_codec()
}

fn refused(reason: impl Into<String>) -> NodeError {
    NodeError::Channel(reason.into())
}

fn noise_error(error: snow::Error) -> NodeError {
    refused(format!("noise: {error}"))
}

/// The bytes a validator signs on a connection: tag, chain, its role, the handshake hash.
fn auth_bytes(genesis_hash: &[u8; 32], role: Role, handshake_hash: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(AUTH_TAG.len() + 32 + 1 + handshake_hash.len());
    bytes.extend_from_slice(AUTH_TAG);
    bytes.extend_from_slice(genesis_hash);
    bytes.push(role as u8);
    bytes.extend_from_slice(handshake_hash);
    bytes
}

/// What the side in `role` sends once the Noise handshake with hash `handshake_hash` is done:
/// its replica id (u32, little-endian) and its node key's signature of [`auth_bytes`].
pub(crate) fn proof_of_identity(
    identity: &ValidatorIdentity,
    role: Role,
    handshake_hash: &[u8],
) -> Vec<u8> {
    let signature = identity
        .key
        .sign(&auth_bytes(&identity.genesis_hash, role, handshake_hash));
    let mut proof = identity.id.to_le_bytes().to_vec();
    proof.extend_from_slice(&signature.to_bytes());
    proof
}

/// The peer's [`proof_of_identity`], received by the side in `role`: the validator it proves
/// to be, another one of this chain than this side.
pub(crate) fn check_proof(
    identity: &ValidatorIdentity,
    role: Role,
    handshake_hash: &[u8],
    proof: &[u8],
) -> Result<ReplicaId, NodeError> {
    let (id, signature) = proof
        .split_first_chunk::<4>()
        .ok_or_else(|| refused("short proof of identity"))?;
    let peer = ReplicaId::from_le_bytes(*id);
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| refused("malformed proof of identity"))?;
    let key = identity
        .validators
        .get(peer as usize)
        .filter(|_| peer != identity.id)
        .ok_or_else(|| refused(format!("validator {peer} is not a peer of this chain")))?;
    let peer_role = match role {
        Role::Initiator => Role::Responder,
        Role::Responder => Role::Initiator,
    };
    let proven = ledger::crypto::verify_signature(
        key,
        &auth_bytes(&identity.genesis_hash, peer_role, handshake_hash),
        &signature,
    );
    if !proven {
        return Err(refused(format!("wrong key for validator {peer}")));
    }
    Ok(peer)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Dials side: completes the handshake with the validator expected at this address and
    /// refuses any other.
    pub async fn initiate(
        socket: S,
        identity: &ValidatorIdentity,
        expected: ReplicaId,
    ) -> Result<Self, NodeError> {
        let channel = Self::handshake(socket, identity, Role::Initiator).await?;
        if channel.peer != expected {
            return Err(refused(format!(
                "expected validator {expected}, the peer proved it is validator {}",
                channel.peer
            )));
        }
        Ok(channel)
    }

    /// Accepting side: completes the handshake with whichever validator proves its key.
    pub async fn respond(socket: S, identity: &ValidatorIdentity) -> Result<Self, NodeError> {
        Self::handshake(socket, identity, Role::Responder).await
    }

    async fn handshake(
        socket: S,
        identity: &ValidatorIdentity,
        role: Role,
    ) -> Result<Self, NodeError> {
        let mut socket = Framed::new(socket, noise_codec());
        let params = NOISE_PARAMS
            .parse()
            .map_err(|error: snow::Error| refused(format!("noise parameters: {error}")))?;
        let mut prologue = PROLOGUE_TAG.to_vec();
        prologue.extend_from_slice(&identity.genesis_hash);
        let builder = snow::Builder::new(params);
        // The Noise static key is fresh per connection: the node key's signature over the
        // handshake hash, not the static key, is what identifies a validator.
        let static_key = builder.generate_keypair().map_err(noise_error)?;
        let builder = builder
            .local_private_key(&static_key.private)
            .map_err(noise_error)?
            .prologue(&prologue)
            .map_err(noise_error)?;
        let mut handshake = match role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(noise_error)?;
        // XX: -> e; <- e, ee, s, es; -> s, se.
        let mut buffer = vec![0u8; NOISE_MAX_MESSAGE_BYTES];
        while !handshake.is_handshake_finished() {
            if handshake.is_my_turn() {
                let len = handshake
                    .write_message(&[], &mut buffer)
                    .map_err(noise_error)?;
                socket
                    .send(bytes::Bytes::copy_from_slice(&buffer[..len]))
                    .await?;
            } else {
                let message = next_message(&mut socket).await?;
                handshake
                    .read_message(&message, &mut buffer)
                    .map_err(noise_error)?;
            }
        }
        let handshake_hash = handshake.get_handshake_hash().to_vec();
        let noise = into_transport(handshake)?;
        let mut channel = Self {
            socket,
            noise,
            // Set once the peer has proved who it is.
            peer: identity.id,
            buffer,
        };
        channel
            .send_chunk(&proof_of_identity(identity, role, &handshake_hash))
            .await?;
        let proof = channel.recv_chunk().await?;
        channel.peer = check_proof(identity, role, &handshake_hash, &proof)?;
        Ok(channel)
    }

    /// The validator at the other end, as its handshake proved.
    pub fn peer(&self) -> ReplicaId {
        self.peer
    }

    /// Encrypts and queues one frame of `kind`; [`Channel::flush`] sends what is queued.
    pub async fn feed(&mut self, kind: FrameKind, frame: &[u8]) -> Result<(), NodeError> {
        let len = u32::try_from(frame.len()).map_err(|_| refused("frame over 4 GiB"))?;
        let mut first =
            Vec::with_capacity(CHUNK_PLAINTEXT_BYTES.min(FRAME_HEADER_BYTES + frame.len()));
        first.extend_from_slice(&len.to_le_bytes());
        first.push(kind as u8);
        let split = frame.len().min(CHUNK_PLAINTEXT_BYTES - FRAME_HEADER_BYTES);
        first.extend_from_slice(&frame[..split]);
        self.feed_chunk(&first).await?;
        for chunk in frame[split..].chunks(CHUNK_PLAINTEXT_BYTES) {
            self.feed_chunk(chunk).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), NodeError> {
        Ok(SinkExt::<bytes::Bytes>::flush(&mut self.socket).await?)
    }

    /// The next frame, refused (with the connection) when it is larger than `limits` allow
    /// for its kind; `None` when the peer closed the connection.
    pub async fn recv(
        &mut self,
        limits: &FrameLimits,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, NodeError> {
        let mut frame = Vec::new();
        Ok(self
            .recv_into(limits, &mut frame)
            .await?
            .map(|kind| (kind, frame)))
    }

    /// [`Channel::recv`] into `frame` (emptied first, and again on an error), whose memory a
    /// reader keeps from one frame to the next: a frame new each time had its pages faulted
    /// in and zeroed again once the allocator had handed them back (BENCHMARKS.md
    /// "thirty-eighth").
    pub async fn recv_into(
        &mut self,
        limits: &FrameLimits,
        frame: &mut Vec<u8>,
    ) -> Result<Option<FrameKind>, NodeError> {
        frame.clear();
        let received = self.fill(limits, frame).await;
        if received.is_err() {
            frame.clear();
        }
        received
    }

    async fn fill(
        &mut self,
        limits: &FrameLimits,
        frame: &mut Vec<u8>,
    ) -> Result<Option<FrameKind>, NodeError> {
        let first = match self.socket.next().await {
            None => return Ok(None),
            Some(message) => self.decrypt(&message?)?,
        };
        let (header, data) = first
            .split_first_chunk::<FRAME_HEADER_BYTES>()
            .ok_or_else(|| refused("frame without a header"))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = FrameKind::from_byte(header[4])
            .ok_or_else(|| refused(format!("unknown frame kind {}", header[4])))?;
        if len > limits.max_bytes(kind) {
            return Err(refused(format!(
                "a {kind:?} frame of {len} bytes is over the {} allowed",
                limits.max_bytes(kind)
            )));
        }
        if data.len() > len {
            return Err(refused("frame longer than its header says"));
        }
        // Grown as chunks arrive: a peer that names a large frame and stalls holds little.
        // Exact: a kept buffer is as large as the largest frame it held, not twice.
        frame.reserve_exact(len.min(1 << 20));
        frame.extend_from_slice(data);
        while frame.len() < len {
            let chunk = self.next_plaintext().await?;
            if frame.len() + chunk.len() > len {
                return Err(refused("frame longer than its header says"));
            }
            frame.extend_from_slice(chunk);
        }
        Ok(Some(kind))
    }

    async fn feed_chunk(&mut self, plaintext: &[u8]) -> Result<(), NodeError> {
        let len = self
            .noise
            .write_message(plaintext, &mut self.buffer)
            .map_err(noise_error)?;
        self.socket
            .feed(bytes::Bytes::copy_from_slice(&self.buffer[..len]))
            .await?;
        Ok(())
    }

    /// Sends one chunk as it is (a frame's first chunk starts with its header, see
    /// [`Channel::feed`]).
    pub(crate) async fn send_chunk(&mut self, plaintext: &[u8]) -> Result<(), NodeError> {
        self.feed_chunk(plaintext).await?;
        self.flush().await
    }

    async fn recv_chunk(&mut self) -> Result<Vec<u8>, NodeError> {
        Ok(self.next_plaintext().await?.to_vec())
    }

    /// The next chunk's plaintext, in the channel's buffer until the next call.
    async fn next_plaintext(&mut self) -> Result<&[u8], NodeError> {
        let message = next_message(&mut self.socket).await?;
        self.decrypt(&message)
    }

    /// `message`'s plaintext, in the channel's buffer until the next call.
    fn decrypt(&mut self, message: &[u8]) -> Result<&[u8], NodeError> {
        let len = self
            .noise
            .read_message(message, &mut self.buffer)
            .map_err(noise_error)?;
        Ok(&self.buffer[..len])
    }
}

fn into_transport(handshake: HandshakeState) -> Result<TransportState, NodeError> {
    handshake.into_transport_mode().map_err(noise_error)
}

async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Framed<S, LengthDelimitedCodec>,
) -> Result<bytes::BytesMut, NodeError> {
    match socket.next().await {
        Some(message) => Ok(message?),
        None => Err(refused("the peer closed the connection")),
    }
}

#[cfg(test)]
mod tests {
    use ledger::crypto;

    use super::*;

    fn connect(
        dialer: ValidatorIdentity,
        expected: ReplicaId,
        listener: ValidatorIdentity,
    ) -> (
        Result<Channel<tokio::io::DuplexStream>, NodeError>,
        Result<Channel<tokio::io::DuplexStream>, NodeError>,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (a, b) = tokio::io::duplex(1 << 20);
            tokio::join!(
                Channel::initiate(a, &dialer, expected),
                Channel::respond(b, &listener)
            )
        })
    }

    /// Validators 1 and 2 connected (1 dialling), the frame limits of the tests, and a
    /// runtime to drive them.
    fn connected() -> (
        Channel<tokio::io::DuplexStream>,
        Channel<tokio::io::DuplexStream>,
        FrameLimits,
        tokio::runtime::Runtime,
    ) {
        let ids = ValidatorIdentity::for_tests(4);
        let (dialer, listener) = connect(ids[1].clone(), 2, ids[2].clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let limits = FrameLimits::new(4, 100, 4);
        (dialer.unwrap(), listener.unwrap(), limits, runtime)
    }

    #[test]
    fn validators_prove_their_genesis_keys_and_frames_of_any_size_pass() {
        let (mut dialer, mut listener, limits, runtime) = connected();
        assert_eq!(dialer.peer(), 2);
        assert_eq!(listener.peer(), 1);
        runtime.block_on(async {
            let large: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            let sending = async {
                dialer.feed(FrameKind::Batch, &large).await.unwrap();
                dialer.feed(FrameKind::Small, b"").await.unwrap();
                dialer.flush().await.unwrap();
            };
            let receiving = async {
                let first = listener.recv(&limits).await.unwrap().unwrap();
                let second = listener.recv(&limits).await.unwrap().unwrap();
                (first, second)
            };
            let ((), (first, second)) = tokio::join!(sending, receiving);
            assert_eq!(first, (FrameKind::Batch, large.clone()));
            assert_eq!(second, (FrameKind::Small, Vec::new()));
        });
    }

    /// A reader's one buffer holds each frame alone: a small frame after a large one, then a
    /// shorter one after a longer one, read back exactly.
    #[test]
    fn one_buffer_serves_frame_after_frame() {
        let (mut dialer, mut listener, limits, runtime) = connected();
        let frames = [
            (FrameKind::Batch, vec![1u8; 200_000]),
            (FrameKind::Small, b"ab".to_vec()),
            (FrameKind::Batch, (0..70_000u32).map(|i| i as u8).collect()),
            (FrameKind::Batch, vec![3u8; 65_530]),
            (FrameKind::Small, Vec::new()),
        ];
        runtime.block_on(async {
            let sending = async {
                for (kind, bytes) in &frames {
                    dialer.feed(*kind, bytes).await.unwrap();
                }
                dialer.flush().await.unwrap();
            };
            let receiving = async {
                let mut buffer = Vec::new();
                let mut received = Vec::new();
                for _ in 0..frames.len() {
                    let kind = listener.recv_into(&limits, &mut buffer).await.unwrap();
                    received.push((kind.unwrap(), buffer.clone()));
                }
                received
            };
            let ((), received) = tokio::join!(sending, receiving);
            assert_eq!(received, frames);
        });
    }

    /// A frame refused halfway leaves nothing of itself in the reader's buffer.
    #[test]
    fn a_frame_refused_halfway_leaves_the_buffer_empty() {
        let (mut dialer, mut listener, limits, runtime) = connected();
        runtime.block_on(async {
            // A header naming 20 bytes, 10 of them, then a chunk of 20: too long.
            let mut first = 20u32.to_le_bytes().to_vec();
            first.push(FrameKind::Batch as u8);
            first.extend_from_slice(&[7; 10]);
            let sending = async {
                dialer.send_chunk(&first).await.unwrap();
                dialer.send_chunk(&[8; 20]).await.unwrap();
            };
            let mut buffer = Vec::new();
            let ((), received) = tokio::join!(sending, listener.recv_into(&limits, &mut buffer));
            assert!(received.is_err(), "refused");
            assert!(buffer.is_empty(), "{buffer:?}");
        });
    }

    #[test]
    fn a_key_outside_the_genesis_is_refused() {
        let ids = ValidatorIdentity::for_tests(4);
        let mut outsider = ids[3].clone();
        outsider.key = crypto::generate_key();
        let (_, listener) = connect(outsider, 0, ids[0].clone());
        assert!(listener.is_err());
    }

    #[test]
    fn the_dialler_refuses_a_validator_other_than_the_one_it_called() {
        let ids = ValidatorIdentity::for_tests(4);
        let (dialer, _) = connect(ids[0].clone(), 3, ids[2].clone());
        assert!(dialer.is_err());
    }

    #[test]
    fn another_chain_fails_the_handshake() {
        let ids = ValidatorIdentity::for_tests(4);
        let mut other_chain = ids[1].clone();
        other_chain.genesis_hash = [1; 32];
        let (dialer, listener) = connect(other_chain, 0, ids[0].clone());
        assert!(dialer.is_err() && listener.is_err());
    }
}
