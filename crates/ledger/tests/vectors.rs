//! The test vectors of the transaction format (`tests/vectors/tx_v2.json`): for one `Grant` and
//! one `AddRecord` (`transactions`), then one transaction of every kind (`kinds`, in kind-byte
//! order), the header, the body, the signed bytes, the id, the signer's public key, the
//! signature and the stored payload, and for a sealed kind (docs/SECURITY.md, "Confidential
//! records", §1) its content, data key and the associated data it is sealed under; and one
//! key's proof of possession (`key_pop`). Another implementation (the browser's decoder and
//! signer) checks itself against them. The file is what this code makes: the test fails if
//! they differ; `LEDGER_WRITE_VECTORS=1 cargo test -p ledger --test vectors` rewrites it.
use ledger::seal;
use ledger::testkit::{self, TestNet, public};
use ledger::tx::{
    AddRecord, Attested, Grant, Meta, PurposeBody, RecordBody, Scope, SignedTx, Signer, TxHeader,
};
use serde_json::{Value, json};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tx_v2.json");

fn vectors() -> Value {
    let net = TestNet::new(4);
    let g = net.genesis.hash();
    let patient = net.patient(1, 0);
    let doctor = net.doctor(2, 0, "Cardiology");
    let grant_header = TxHeader {
        meta: Meta::Grant(Grant {
            patient: patient.id,
            doctor: doctor.id,
            scope: Scope::Read {
                duration_ms: 3_600_000,
            },
            request: Some([0x5a; 32]),
            attested: Attested::Device,
        }),
        signer: Signer::Device {
            person: patient.id,
            key: public(&patient.device),
        },
        created_ms: 1_767_225_600_000,
        not_after_ms: 1_767_229_200_000,
        nonce: *b"grant-vector-v2!",
        body_hash: [0; 32],
    };
    let grant = net.seal_and_sign(
        grant_header,
        PurposeBody {
            purpose: "follow-up of the echocardiogram".into(),
        }
        .to_bytes(),
        &patient.device,
    );
    let record_header = TxHeader {
        meta: Meta::AddRecord(AddRecord {
            patient: patient.id,
            doctor: doctor.id,
            department: "Cardiology".into(),
            grant: grant.id(&g),
        }),
        signer: Signer::Device {
            person: doctor.id,
            key: public(&doctor.device),
        },
        created_ms: 1_767_225_660_000,
        not_after_ms: 1_767_225_900_000,
        nonce: *b"record-vector-v2",
        body_hash: [0; 32],
    };
    let record = net.seal_and_sign(
        record_header,
        RecordBody {
            diagnosis: "Hypertension".into(),
            prescription: "Lisinopril 10mg".into(),
            notes: "Recheck in 4 weeks".into(),
        }
        .to_bytes(),
        &doctor.device,
    );
    // A device key made at validator 1's page.
    let new_key = net.new_key(&patient.id, ledger::tx::KeyKind::Device, 1, &patient.device);
    let entry = |tx: &SignedTx| {
        let key = match tx.header.signer {
            Signer::Device { key, .. } | Signer::Custodial { key, .. } => key,
            Signer::Validator { index } => net.genesis.keys()[index as usize].to_bytes(),
        };
        let mut entry = json!({
            "kind": tx.meta().kind(),
            "kind_byte": tx.meta().kind_byte(),
            "header": tx.header,
            "body_hex": hex::encode(&tx.body),
            "signing_bytes_hex": hex::encode(tx.signing_bytes(&g)),
            "id_hex": hex::encode(tx.id(&g)),
            "public_key_hex": hex::encode(key),
            "signature_hex": hex::encode(tx.signature),
            "payload_hex": hex::encode(tx.to_bytes()),
        });
        if seal::is_sealed_kind(tx.meta()) {
            let content = net.open(&tx.header, &tx.body).expect("a test body opens");
            entry["sealed"] = json!({
                "content_hex": hex::encode(&*content),
                "data_key_hex": hex::encode(net.data_key(&tx.header).as_bytes()),
                "ad_hex": hex::encode(seal::seal_ad(&g, &tx.header)),
            });
        }
        entry
    };
    json!({
        "format": "medchain/tx/v2",
        "about": "signing_bytes = ASCII 'medchain/tx/v2' || genesis_hash || borsh(header); \
                  id = SHA-256(signing_bytes); signature = Ed25519(signing_bytes); \
                  payload = borsh(header) || u32 LE body length || body || signature; \
                  header.body_hash = SHA-256(body); a sealed kind's body = borsh(SealedBody \
                  { version: 1, key_commit: SHA-256('medchain/seal-key/v2' || ad || data_key), \
                  nonce (24), ciphertext }), ciphertext = XChaCha20-Poly1305(data_key, nonce, \
                  ad = 'medchain/seal/v1' || genesis_hash || borsh(header with body_hash = 0)) \
                  of borsh(SealedPlain { content, zero padding to a multiple of 64 bytes })",
        "genesis_hash_hex": hex::encode(g),
        "transactions": [entry(&grant), entry(&record)],
        "kinds": testkit::every_kind(&TestNet::new(4)).iter().map(entry).collect::<Vec<_>>(),
        "key_pop": {
            "about": "pop = Ed25519 by the new key over ASCII 'medchain/key-pop/v2' || \
                      genesis_hash || person || key || kind (1 byte: 0 device, 1 custodial) || \
                      origin (u32 LE)",
            "person_hex": hex::encode(patient.id),
            "key_hex": hex::encode(new_key.key),
            "kind": new_key.kind,
            "kind_byte": new_key.kind as u8,
            "origin": new_key.origin,
            "signed_bytes_hex": hex::encode(new_key.pop_bytes(&g, &patient.id)),
            "pop_hex": hex::encode(new_key.pop),
        },
    })
}

#[test]
fn the_vector_file_is_what_this_code_signs() {
    let made = vectors();
    if std::env::var_os("LEDGER_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&made).expect("json") + "\n";
        std::fs::write(FILE, text).expect("write the vectors");
    }
    let text = std::fs::read_to_string(FILE).expect("tests/vectors/tx_v2.json");
    let stored: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        stored, made,
        "rewrite with LEDGER_WRITE_VECTORS=1 if the format changed"
    );
}

/// The file checked from its own bytes, as another implementation would: the signed bytes
/// start with the tag, the genesis hash and the kind byte; the id is their hash; the signature
/// verifies under the public key; the payload decodes to the header given.
#[test]
fn the_vectors_check_from_their_own_bytes() {
    let text = std::fs::read_to_string(FILE).expect("tests/vectors/tx_v2.json");
    let file: Value = serde_json::from_str(&text).expect("json");
    let bytes = |v: &Value| hex::decode(v.as_str().expect("hex string")).expect("hex");
    let genesis = bytes(&file["genesis_hash_hex"]);
    let genesis_hash: [u8; 32] = genesis.clone().try_into().expect("32 bytes");
    let txs = file["transactions"].as_array().expect("list");
    assert_eq!(txs.len(), 2);
    let kinds = file["kinds"].as_array().expect("list");
    assert_eq!(kinds.len(), 13);
    for (byte, t) in kinds.iter().enumerate() {
        assert_eq!(t["kind_byte"].as_u64(), Some(byte as u64));
    }
    let pop = &file["key_pop"];
    let key: [u8; 32] = bytes(&pop["key_hex"]).try_into().expect("32 bytes");
    let signature: [u8; 64] = bytes(&pop["pop_hex"]).try_into().expect("64 bytes");
    let mut signed = b"medchain/key-pop/v2".to_vec();
    signed.extend(&genesis);
    signed.extend(bytes(&pop["person_hex"]));
    signed.extend(key);
    signed.push(u8::try_from(pop["kind_byte"].as_u64().expect("kind")).expect("byte"));
    let origin = u32::try_from(pop["origin"].as_u64().expect("origin")).expect("u32");
    signed.extend(origin.to_le_bytes());
    assert_eq!(signed, bytes(&pop["signed_bytes_hex"]));
    assert!(ledger::crypto::verify_signature_bytes(
        &key, &signed, &signature
    ));
    for t in txs.iter().chain(kinds) {
        let signing = bytes(&t["signing_bytes_hex"]);
        assert_eq!(&signing[..14], b"medchain/tx/v2");
        assert_eq!(&signing[14..46], genesis.as_slice());
        assert_eq!(
            u64::from(signing[46]),
            t["kind_byte"].as_u64().expect("byte")
        );
        assert_eq!(bytes(&t["id_hex"]), ledger::sha256(&signing));
        let key: [u8; 32] = bytes(&t["public_key_hex"]).try_into().expect("32 bytes");
        let signature: [u8; 64] = bytes(&t["signature_hex"]).try_into().expect("64 bytes");
        assert!(ledger::crypto::verify_signature_bytes(
            &key, &signing, &signature
        ));
        let tx = SignedTx::from_bytes(&bytes(&t["payload_hex"])).expect("payload decodes");
        let header: TxHeader = serde_json::from_value(t["header"].clone()).expect("header");
        assert_eq!(tx.header, header);
        assert_eq!(tx.body, bytes(&t["body_hex"]));
        assert_eq!(tx.header.body_hash, ledger::sha256(&tx.body));
        // A sealed body opens with its data key under its header's associated data, and only
        // under the header the file gives for it.
        if let Some(sealed) = t.get("sealed") {
            let key: [u8; 32] = bytes(&sealed["data_key_hex"]).try_into().expect("32 bytes");
            let key = seal::DataKey::from_bytes(key);
            let ad = bytes(&sealed["ad_hex"]);
            assert_eq!(ad, seal::seal_ad(&genesis_hash, &tx.header));
            let committed = [b"medchain/seal-key/v2".as_slice(), &ad, key.as_bytes()].concat();
            assert_eq!(
                seal::key_commitment(&tx.body).expect("a sealed body"),
                ledger::sha256(&committed)
            );
            let content = seal::open(&genesis_hash, &tx.header, &tx.body, &key).expect("opens");
            assert_eq!(*content, bytes(&sealed["content_hex"]));
        } else {
            assert!(tx.body.is_empty(), "{}", t["kind"]);
        }
        assert_eq!(signing[46..], borsh::to_vec(&header).expect("borsh")[..]);
    }
}
