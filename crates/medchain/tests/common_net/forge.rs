//! What a dishonest validator's operator can sign, and how it hands that to its own validator
//! (`medchain node --byzantine forge-from=DIR`, see crates/node/src/byzantine.rs): with its
//! `node.key`, with the custodial keys it holds for its home people (its `app.db`, opened with
//! its operator key), and with nothing but the public chain for everyone else (docs/SECURITY.md,
//! issue 9, §6).

use std::path::{Path, PathBuf};

use ledger::crypto::SigningKey;
use ledger::tx::{AddRecord, Attested, Grant, PurposeBody, RecordBody, Scope};
use ledger::{Hash, Meta, PersonId, PublicKey, SignedTx, Signer, TxHeader, TxId};
use medchain::app::{AppDb, Custody};

use super::Net;

/// How long a forgery's signature is good for (its `not_after_ms`).
const VALID_MS: u64 = 3_600_000;

/// The operator of one validator, forging.
pub struct Forger {
    genesis_hash: Hash,
    index: u32,
    node_key: SigningKey,
    app: AppDb,
    custody: Custody,
    /// The validator's `forge-from` folder.
    dir: PathBuf,
    handed: usize,
}

/// The person id written as 32 hex digits.
pub fn person(hex_id: &str) -> PersonId {
    medchain::app::flows::parse_person(hex_id).expect("a person id")
}

/// The transaction id written as 64 hex digits (a public key parses the same way).
pub fn tx_id(hex_id: &str) -> TxId {
    medchain::app::flows::parse_tx_id(hex_id).expect("64 hex digits")
}

/// The body of a record whose diagnosis is `diagnosis`.
pub fn record_body(diagnosis: &str) -> Vec<u8> {
    RecordBody {
        diagnosis: diagnosis.to_string(),
        prescription: "none".into(),
        notes: String::new(),
    }
    .to_bytes()
}

impl Forger {
    /// The operator of validator `i` of `net`, handing its forgeries to it through `dir` (the
    /// folder its `forge-from` names).
    pub fn of(net: &Net, i: usize, dir: &Path) -> Forger {
        let node = &net.nodes[i];
        let genesis = net.genesis();
        let operator_key = net.operator_key(i);
        let app =
            AppDb::open(&node.dir.join("app.db"), &operator_key).expect("the validator's app.db");
        let custody = Custody::open(&operator_key, &app).expect("custody");
        Forger {
            genesis_hash: genesis.hash(),
            index: genesis.index_of(&node.name).expect("in the genesis"),
            node_key: ledger::master::read_node_key(
                &node.dir.join("node.key"),
                &operator_key,
                &node.name,
            )
            .expect("node.key"),
            app,
            custody,
            dir: dir.to_path_buf(),
            handed: 0,
        }
    }

    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The validator's own public key (`node.key`), which it may claim as anyone's key.
    pub fn own_key(&self) -> PublicKey {
        self.node_key.verifying_key().to_bytes()
    }

    fn header(meta: Meta) -> TxHeader {
        let now_ms = medchain::app::now_ms();
        medchain::app::new_header(meta, now_ms, now_ms + VALID_MS)
    }

    /// `header`'s body for `content`: sealed, under a key nobody keeps, if its kind is sealed
    /// (a body in clear is refused at every edge, docs/SECURITY.md §1.3, before any rule the
    /// forgery aims at); as it is otherwise. The signer must be set.
    fn body(&self, header: &mut TxHeader, content: Vec<u8>) -> Vec<u8> {
        if !ledger::seal::is_sealed_kind(&header.meta) {
            return content;
        }
        let (_, sealed) =
            ledger::seal::seal(&self.genesis_hash, header, &content).expect("the content fits");
        sealed
    }

    /// `meta` signed by the custodial key this validator holds for `person`, one of its home
    /// people: a signature that verifies, for whatever `meta` says.
    pub fn custodial(&self, person: &PersonId, meta: Meta, content: Vec<u8>) -> SignedTx {
        let keys = self.custody.keys_of(&self.app, person).expect("custody");
        let key = keys.first().expect("a custodial key held for this person");
        let mut header = Self::header(meta);
        header.signer = Signer::Custodial {
            person: *person,
            key: *key,
        };
        let body = self.body(&mut header, content);
        self.custody
            .sign(&self.app, &self.genesis_hash, person, key, header, body)
            .expect("custody signs")
            .expect("held")
    }

    /// `meta` claiming `signer`, signed with the validator's `node.key`: a signature that
    /// verifies when `signer` names [`Forger::own_key`] (or this validator), and one that does
    /// not when it names anyone else's key.
    pub fn claiming(&self, signer: Signer, meta: Meta, content: Vec<u8>) -> SignedTx {
        let mut header = Self::header(meta);
        header.signer = signer;
        let body = self.body(&mut header, content);
        SignedTx::sign(header, body, &self.genesis_hash, &self.node_key)
    }

    /// `meta` signed as this validator.
    pub fn as_validator(&self, meta: Meta, body: Vec<u8>) -> SignedTx {
        let signer = Signer::Validator { index: self.index };
        self.claiming(signer, meta, body)
    }

    /// Hands `tx` to the validator: a file in its `forge-from` folder, written whole under
    /// another name first (the validator takes only `*.tx`). Returns the transaction's id.
    pub fn hand(&mut self, label: &str, tx: &SignedTx) -> String {
        self.handed += 1;
        let name = format!("{:04}-{label}", self.handed);
        let part = self.dir.join(format!("{name}.part"));
        std::fs::write(&part, tx.to_bytes()).expect("write a forgery");
        std::fs::rename(&part, self.dir.join(format!("{name}.tx"))).expect("hand a forgery");
        hex::encode(tx.id(&self.genesis_hash))
    }
}

/// A record by `doctor` (department Cardiology, as `Net::setup` enrolls every doctor) in
/// `patient`'s history under `grant`.
pub fn record(patient: PersonId, doctor: PersonId, grant: TxId) -> Meta {
    Meta::AddRecord(AddRecord {
        patient,
        doctor,
        department: "Cardiology".into(),
        grant,
    })
}

/// A grant of `patient` to `doctor`, answering no request.
pub fn grant(patient: PersonId, doctor: PersonId, scope: Scope, attested: Attested) -> Meta {
    Meta::Grant(Grant {
        patient,
        doctor,
        scope,
        request: None,
        attested,
    })
}

/// The body of a grant.
pub fn purpose_body(purpose: &str) -> Vec<u8> {
    PurposeBody {
        purpose: purpose.into(),
    }
    .to_bytes()
}
