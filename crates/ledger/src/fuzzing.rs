//! The checks of the ledger's fuzz targets (`fuzz/`), which `cargo test` also runs on every
//! file of their committed corpora (feature `testkit`: they judge bytes against the test
//! network's genesis and keys). Not part of the API.
//!
//! Each check feeds untrusted bytes to the decoder a validator uses on them and asserts what
//! must hold: no panic, errors are values, and a decoded value re-encodes to the very bytes it
//! came from (borsh is canonical here: ids and signatures cover one encoding). Each returns
//! whether the bytes were accepted, so that a replay can tell that its corpus reaches past the
//! decoder.
use std::path::Path;
use std::sync::{Arc, OnceLock};

use borsh::{BorshDeserialize, BorshSerialize};

use crate::seal::{self, SealedBody};
use crate::testkit::{self, TestNet};
use crate::tx::{PurposeBody, RecordBody};
use crate::{Block, BlockHeader, Certificate, Genesis, Invalid, Meta, SignedTx, crypto, verify};

/// The network every check judges against: [`TestNet::new`]`(4)`, built once.
pub fn net() -> &'static TestNet {
    static NET: OnceLock<TestNet> = OnceLock::new();
    NET.get_or_init(|| TestNet::new(4))
}

/// The sealed record of [`testkit::every_kind`]: the header that stored bodies are opened under.
/// Made on a network of its own, whose transaction counter nothing else advances, so that it is
/// the same in every process.
pub fn sealed_record() -> &'static SignedTx {
    static RECORD: OnceLock<SignedTx> = OnceLock::new();
    RECORD.get_or_init(|| {
        testkit::every_kind(&TestNet::new(4))
            .into_iter()
            .find(|tx| matches!(tx.header.meta, Meta::AddRecord(_)))
            .unwrap_or_else(|| panic!("every_kind has a record"))
    })
}

/// Asserts that `value`, decoded from `bytes`, encodes to `bytes` again.
pub fn assert_canonical<T: BorshSerialize>(value: &T, bytes: &[u8], what: &str) {
    assert!(
        borsh::to_vec(value).ok().as_deref() == Some(bytes),
        "{what}: decoded from bytes it does not encode to"
    );
}

/// Decodes `bytes` as a `T`, asserting that a decoded value is canonical.
pub fn decode_canonical<T: BorshSerialize + BorshDeserialize>(
    bytes: &[u8],
    what: &str,
) -> Option<T> {
    let value = T::try_from_slice(bytes).ok()?;
    assert_canonical(&value, bytes, what);
    Some(value)
}

/// `signed_tx`: a request's payload from a client or a peer, judged by the edge check every
/// validator runs on it ([`crypto::check_entries`]: decode, id, timestamp, body hash,
/// signatures, key proofs), under the request a correct node would make of it.
pub fn check_signed_tx(bytes: &[u8]) -> bool {
    let genesis = &net().genesis;
    let decoded = SignedTx::from_bytes(bytes).ok();
    if let Some(tx) = &decoded {
        assert_canonical(tx, bytes, "signed transaction");
        // Checked for its framing only; the edge does not (yet) refuse on it.
        let _ = seal::check_body_format(&tx.header.meta, &tx.body);
    }
    let request = pbft::Request {
        id: decoded
            .as_ref()
            .map_or_else(|| crate::sha256(bytes), |tx| tx.id(&genesis.hash())),
        timestamp_ms: decoded.as_ref().map_or(0, |tx| tx.header.created_ms),
        payload: Arc::from(bytes),
    };
    let verdict = crypto::check_entries(genesis.keys(), &genesis.hash(), [&request])
        .pop()
        .unwrap_or_else(|| panic!("one verdict per entry"));
    match (&decoded, &verdict) {
        (None, Err(Invalid::TooLarge | Invalid::Undecodable)) => {}
        (None, _) => panic!("bytes that do not decode judged {verdict:?}"),
        (Some(tx), Ok(checked)) => {
            assert_eq!(tx, checked, "the edge check changed the transaction");
            assert_eq!(
                checked.entry_hash(&genesis.hash()),
                crate::entry_hash(&request)
            );
        }
        (Some(_), Err(_)) => {}
    }
    verdict.is_ok()
}

/// `tx_body`: a transaction's body, as stored ([`SealedBody`] framing, key commitment, opening
/// under the sealed record's header and key) and as content (sealed under that header, it
/// opens to itself; record and purpose bodies decode canonically).
pub fn check_tx_body(bytes: &[u8]) -> bool {
    let genesis_hash = net().genesis.hash();
    let record = sealed_record();
    let key = net().data_key(&record.header);
    let framed = SealedBody::from_bytes(bytes).ok();
    if let Some(body) = &framed {
        assert_canonical(body, bytes, "sealed body");
        assert_eq!(seal::key_commitment(bytes), Ok(body.key_commit));
    }
    assert_eq!(
        seal::check_body_format(&record.header.meta, bytes).is_ok(),
        framed.is_some(),
        "a sealed kind's body format is the sealed framing"
    );
    let opened = seal::open(&genesis_hash, &record.header, bytes, &key);
    assert!(
        opened.is_err() || framed.is_some(),
        "opened an unframed body"
    );
    if let Ok(content) = &opened {
        let _ = decode_canonical::<RecordBody>(content, "opened record");
    }
    let mut header = record.header.clone();
    match seal::seal_with(&genesis_hash, &mut header, bytes, &key, [3; 24]) {
        Ok(stored) => {
            assert_eq!(header.body_hash, crate::sha256(&stored));
            let reopened = seal::open(&genesis_hash, &header, &stored, &key);
            assert_eq!(reopened.as_deref().map(Vec::as_slice), Ok(bytes));
        }
        Err(error) => assert_eq!(error, seal::SealError::TooLarge),
    }
    let _ = decode_canonical::<RecordBody>(bytes, "record body");
    let _ = decode_canonical::<PurposeBody>(bytes, "purpose body");
    opened.is_ok()
}

/// `block`: a block from a peer (state transfer) or a file, decoded and checked as a validator
/// checks it before appending ([`verify::check_block`]). A block it accepts also passes the
/// single certificate check and its own Merkle root.
pub fn check_block(bytes: &[u8]) -> bool {
    let genesis = &net().genesis;
    let _ = decode_canonical::<BlockHeader>(bytes, "block header");
    let _ = decode_canonical::<Certificate>(bytes, "certificate");
    let Some(block) = decode_canonical::<Block>(bytes, "block") else {
        return false;
    };
    let Ok(verdicts) = verify::check_block(genesis.keys(), &genesis.hash(), &block) else {
        return false;
    };
    assert_eq!(verdicts.len(), block.entries.len());
    assert!(
        crypto::verify_certificate(
            genesis.keys(),
            &genesis.hash(),
            block.header.height,
            &block.hash(),
            &block.certificate,
        )
        .is_ok(),
        "the batch and the single certificate checks disagree"
    );
    assert!(block.header.check_entries(&block.entries).is_ok());
    true
}

/// `genesis_toml`: a genesis file. One that parses writes out ([`Genesis::to_toml`]) to a file
/// that parses to the same genesis, with the same hash.
pub fn check_genesis_toml(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let path = Path::new("genesis.toml");
    let Ok(genesis) = Genesis::parse(text, path) else {
        return false;
    };
    let written = genesis.to_toml();
    match Genesis::parse(&written, path) {
        Ok(again) => {
            assert_eq!(again, genesis, "a genesis that reads back otherwise");
            assert_eq!(again.hash(), genesis.hash());
        }
        Err(error) => panic!("a genesis that writes an unreadable file: {error}\n{written}"),
    }
    true
}
