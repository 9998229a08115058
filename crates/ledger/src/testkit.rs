//! Test helpers (feature `testkit`): validator keys, a genesis, transactions and signed chains
//! of blocks whose certificates verify, for the tests of ledger, node and sim.
//!
//! Everything is deterministic (keys from fixed seeds, fixed times), so a failing test names
//! the same heights and hashes on every run. Bodies of sealed kinds are sealed
//! ([`crate::seal`]) under a data key derived from their header ([`TestNet::data_key`]), not
//! drawn at random: a test chain is the same on every run, and any test can open any of its
//! bodies. (Anyone can: these keys protect nothing, and nothing outside tests derives a key.)
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::{Signer as _, SigningKey};
use zeroize::Zeroizing;

use crate::block::{Block, BlockHeader, Certificate, Entry};
use crate::genesis::{Genesis, ValidatorInfo};
use crate::seal::{self, DataKey, SealError};
use crate::store::{Applied, OpenOptions, Store};
use crate::tx::{
    Access, AddKey, AddRecord, AnswerErasure, Ask, AskWhat, Attested, Checked, Decision, Enroll,
    Grant, KeyKind, Link, Meta, NewKey, PersonId, PublicKey, PurposeBody, RecordBody, Recover,
    Refusal, RequestErasure, RequestGrant, Revoke, RevokeKey, Role, Scope, SignedTx, Signer,
    TxHeader, TxId, person_id,
};
use crate::{Hash, Result, crypto, sha256};

/// The creation time of every test genesis (2023-11-14).
pub const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

/// The time of the block at `height` in the chains this kit builds: one second apart.
pub fn block_time(height: u64) -> u64 {
    GENESIS_TIME_MS + height * 1_000
}

/// Domain tags of the test chains' data keys and seal nonces ([`TestNet::data_key`]).
const TEST_KEY_TAG: &[u8] = b"medchain/testkit/data-key";
const TEST_NONCE_TAG: &[u8] = b"medchain/testkit/seal-nonce";

/// The departments of the sample doctors, in turn.
pub const DEPARTMENTS: [&str; 3] = ["Cardiology", "Oncology", "Neurology"];

/// `n` validators with their secret keys and the genesis naming them.
pub struct TestNet {
    pub genesis: Genesis,
    pub keys: Vec<SigningKey>,
    /// Makes the nonce and `created_ms` of each transaction the builders sign.
    counter: AtomicU64,
}

/// Who signs a transaction, and with which secret key.
pub struct Signing {
    pub signer: Signer,
    pub key: SigningKey,
}

/// A person of a test chain, with their keys: the custodial key their home holds (enrolled) and
/// a device key (registered only once a test adds it).
#[derive(Clone, Debug)]
pub struct TestPerson {
    pub id: PersonId,
    pub nonce: [u8; 16],
    pub home: u32,
    pub role: Role,
    pub department: Option<String>,
    pub name: Option<String>,
    pub custodial: SigningKey,
    pub device: SigningKey,
}

impl TestPerson {
    /// Signing with the custodial key.
    pub fn custodial(&self) -> Signing {
        Signing {
            signer: Signer::Custodial {
                person: self.id,
                key: self.custodial.verifying_key().to_bytes(),
            },
            key: self.custodial.clone(),
        }
    }

    /// Signing with the device key.
    pub fn device(&self) -> Signing {
        self.device_with(&self.device)
    }

    /// Signing as a device with `key`.
    pub fn device_with(&self, key: &SigningKey) -> Signing {
        Signing {
            signer: Signer::Device {
                person: self.id,
                key: key.verifying_key().to_bytes(),
            },
            key: key.clone(),
        }
    }
}

/// A key from a seed text.
pub fn key_from(seed: &str) -> SigningKey {
    SigningKey::from_bytes(&sha256(seed.as_bytes()))
}

/// The public key of `secret`.
pub fn public(secret: &SigningKey) -> PublicKey {
    secret.verifying_key().to_bytes()
}

impl TestNet {
    /// `n` validators named like `medchain init` names them, with keys from seed 0.
    pub fn new(n: usize) -> TestNet {
        TestNet::with_seed(n, 0)
    }

    /// Another seed gives other keys and so another chain.
    pub fn with_seed(n: usize, seed: u64) -> TestNet {
        TestNet::with_params(n, seed, crate::genesis::ChainParams::default())
    }

    /// Validators of seed `seed` and a genesis with `params`.
    pub fn with_params(n: usize, seed: u64, params: crate::genesis::ChainParams) -> TestNet {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| key_from(&format!("testkit {seed} {i}")))
            .collect();
        let validators = crate::validator_names(n)
            .into_iter()
            .zip(&keys)
            .map(|(name, key)| ValidatorInfo {
                name,
                public_key: key.verifying_key().to_bytes(),
            })
            .collect();
        let genesis = Genesis::with_params(
            format!("testkit-{seed}"),
            GENESIS_TIME_MS,
            params,
            validators,
        )
        .unwrap_or_else(|e| panic!("testkit genesis: {e}"));
        TestNet {
            genesis,
            keys,
            counter: AtomicU64::new(0),
        }
    }

    fn genesis_hash(&self) -> Hash {
        self.genesis.hash()
    }

    /// Signing as validator `index`.
    pub fn validator(&self, index: u32) -> Signing {
        Signing {
            signer: Signer::Validator { index },
            key: self.keys[index as usize].clone(),
        }
    }

    /// A patient whose home is `home`, with keys from `seed`.
    pub fn patient(&self, seed: u64, home: u32) -> TestPerson {
        self.person(seed, home, Role::Patient, None, None)
    }

    /// A doctor of `department` whose home is `home`, with keys from `seed`.
    pub fn doctor(&self, seed: u64, home: u32, department: &str) -> TestPerson {
        self.person(
            seed,
            home,
            Role::Doctor,
            Some(department.to_string()),
            Some(format!("Dr Test {seed}")),
        )
    }

    fn person(
        &self,
        seed: u64,
        home: u32,
        role: Role,
        department: Option<String>,
        name: Option<String>,
    ) -> TestPerson {
        let mut nonce = [0; 16];
        nonce.copy_from_slice(&sha256(format!("testkit person {seed}").as_bytes())[..16]);
        TestPerson {
            id: person_id(home, &nonce),
            nonce,
            home,
            role,
            department,
            name,
            custodial: key_from(&format!("testkit custodial {seed}")),
            device: key_from(&format!("testkit device {seed}")),
        }
    }

    /// `secret`'s public key as a new key of `person` made by validator `origin`, with its
    /// proof of possession.
    pub fn new_key(
        &self,
        person: &PersonId,
        kind: KeyKind,
        origin: u32,
        secret: &SigningKey,
    ) -> NewKey {
        NewKey::prove(
            &self.genesis_hash(),
            person,
            kind,
            origin,
            "test key",
            secret,
        )
    }

    /// A header for `meta` signed by `signer`: the next nonce and `created_ms` of this net,
    /// no deadline, the body hash left for [`SignedTx::sign`].
    pub fn header(&self, meta: Meta, signer: Signer) -> TxHeader {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        nonce[8] = 0xb1;
        TxHeader {
            meta,
            signer,
            created_ms: GENESIS_TIME_MS + n,
            not_after_ms: u64::MAX,
            nonce,
            body_hash: [0; 32],
        }
    }

    /// `header` and `body` signed with `key` on this chain, the body as it is (not sealed).
    pub fn sign_header(&self, header: TxHeader, body: Vec<u8>, key: &SigningKey) -> SignedTx {
        SignedTx::sign(header, body, &self.genesis_hash(), key)
    }

    /// `header` with `content` as its body, sealed if its kind is sealed (the data key is
    /// [`TestNet::data_key`]), signed with `key`.
    pub fn seal_and_sign(
        &self,
        mut header: TxHeader,
        content: Vec<u8>,
        key: &SigningKey,
    ) -> SignedTx {
        let body = if seal::is_sealed_kind(&header.meta) {
            self.seal(&mut header, &content)
        } else {
            content
        };
        self.sign_header(header, body, key)
    }

    /// `meta` with `content`, sealed if its kind is sealed, signed by `by`.
    pub fn sign(&self, meta: Meta, by: &Signing, content: Vec<u8>) -> SignedTx {
        self.seal_and_sign(self.header(meta, by.signer), content, &by.key)
    }

    /// The data key of the sealed body of a transaction with `header` on this chain: derived
    /// from the header (without its body hash) so that test chains are the same on every run.
    pub fn data_key(&self, header: &TxHeader) -> DataKey {
        let ad = seal::seal_ad(&self.genesis_hash(), header);
        DataKey::from_bytes(sha256(&[TEST_KEY_TAG, &ad].concat()))
    }

    /// `tx` with the data key of its sealed body.
    pub fn with_key(&self, tx: SignedTx) -> (SignedTx, DataKey) {
        let key = self.data_key(&tx.header);
        (tx, key)
    }

    /// Seals `content` for `header` under [`TestNet::data_key`] (setting its body hash): the
    /// stored body.
    pub fn seal(&self, header: &mut TxHeader, content: &[u8]) -> Vec<u8> {
        let ad = seal::seal_ad(&self.genesis_hash(), header);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&sha256(&[TEST_NONCE_TAG, &ad].concat())[..24]);
        let key = self.data_key(header);
        seal::seal_with(&self.genesis_hash(), header, content, &key, nonce)
            .unwrap_or_else(|e| panic!("testkit seal: {e}"))
    }

    /// The content of the sealed body `stored` of the transaction with `header`, opened with
    /// its [`TestNet::data_key`].
    pub fn open(&self, header: &TxHeader, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        seal::open(&self.genesis_hash(), header, stored, &self.data_key(header))
    }

    /// The id of `tx` on this chain.
    pub fn id(&self, tx: &SignedTx) -> TxId {
        tx.id(&self.genesis_hash())
    }

    /// The request ordering `tx` on this chain.
    pub fn request(&self, tx: &SignedTx) -> pbft::Request {
        tx.to_request(&self.genesis_hash())
    }

    /// An entry under `tx`'s id that carries no transaction (its payload does not decode).
    pub fn garbage(&self, tx: &SignedTx) -> pbft::Request {
        pbft::Request {
            payload: std::sync::Arc::from(&b"garbage"[..]),
            ..self.request(tx)
        }
    }

    /// The enrollment of `p` by their home, with their custodial key.
    pub fn enroll(&self, p: &TestPerson) -> SignedTx {
        let meta = self.enroll_meta(p);
        self.sign(Meta::Enroll(meta), &self.validator(p.home), Vec::new())
    }

    fn enroll_meta(&self, p: &TestPerson) -> Enroll {
        Enroll {
            person: p.id,
            nonce: p.nonce,
            role: p.role,
            department: p.department.clone(),
            name: p.name.clone(),
            home: p.home,
            keys: vec![self.new_key(&p.id, KeyKind::Custodial, p.home, &p.custodial)],
        }
    }

    /// Validator `validator` asks to link a login to `p`.
    pub fn ask_link(&self, p: &TestPerson, validator: u32) -> SignedTx {
        let meta = Meta::Ask(Ask {
            person: p.id,
            what: AskWhat::Link,
        });
        self.sign(meta, &self.validator(validator), Vec::new())
    }

    /// Validator `validator` asks to add `key` (made at its page) to `p`.
    pub fn ask_key(&self, p: &TestPerson, validator: u32, key: NewKey) -> SignedTx {
        let meta = Meta::Ask(Ask {
            person: p.id,
            what: AskWhat::Key(key),
        });
        self.sign(meta, &self.validator(validator), Vec::new())
    }

    /// `p` approves validator `validator` serving them.
    pub fn link(
        &self,
        p: &TestPerson,
        validator: u32,
        ask: Option<TxId>,
        by: &Signing,
    ) -> SignedTx {
        let meta = Meta::Link(Link {
            person: p.id,
            validator,
            ask,
        });
        self.sign(meta, by, Vec::new())
    }

    /// `p` adds `key`.
    pub fn add_key(
        &self,
        p: &TestPerson,
        key: NewKey,
        ask: Option<TxId>,
        by: &Signing,
    ) -> SignedTx {
        let meta = Meta::AddKey(AddKey {
            person: p.id,
            key,
            ask,
        });
        self.sign(meta, by, Vec::new())
    }

    /// `p` revokes `key`.
    pub fn revoke_key(&self, p: &TestPerson, key: PublicKey, by: &Signing) -> SignedTx {
        let meta = Meta::RevokeKey(RevokeKey { person: p.id, key });
        self.sign(meta, by, Vec::new())
    }

    /// `p`'s home re-enrolls `key` for them.
    pub fn recover(&self, p: &TestPerson, key: NewKey) -> SignedTx {
        let meta = Meta::Recover(Recover { person: p.id, key });
        self.sign(meta, &self.validator(p.home), Vec::new())
    }

    /// `doctor` asks `patient` for a grant of `scope`.
    pub fn request_grant(
        &self,
        doctor: &TestPerson,
        patient: &PersonId,
        scope: Scope,
        by: &Signing,
    ) -> SignedTx {
        let meta = Meta::RequestGrant(RequestGrant {
            patient: *patient,
            doctor: doctor.id,
            scope,
        });
        let body = PurposeBody {
            purpose: "follow-up".into(),
        };
        self.sign(meta, by, body.to_bytes())
    }

    /// `patient` grants `scope` to `doctor`; attested in person when `by` is custodial, on the
    /// device otherwise.
    pub fn grant(
        &self,
        patient: &TestPerson,
        doctor: &PersonId,
        scope: Scope,
        request: Option<TxId>,
        by: &Signing,
    ) -> SignedTx {
        let attested = match by.signer {
            Signer::Custodial { .. } => Attested::InPerson,
            _ => Attested::Device,
        };
        let meta = Meta::Grant(Grant {
            patient: patient.id,
            doctor: *doctor,
            scope,
            request,
            attested,
        });
        let body = PurposeBody {
            purpose: "add_record".into(),
        };
        self.sign(meta, by, body.to_bytes())
    }

    /// `patient` revokes a grant or denies a request.
    pub fn revoke(&self, patient: &TestPerson, target: TxId, by: &Signing) -> SignedTx {
        let meta = Meta::Revoke(Revoke {
            patient: patient.id,
            target,
        });
        self.sign(meta, by, Vec::new())
    }

    /// `doctor` adds a record in their department to `patient`'s history under `grant`.
    pub fn add_record(
        &self,
        doctor: &TestPerson,
        patient: &PersonId,
        grant: TxId,
        by: &Signing,
    ) -> SignedTx {
        let meta = Meta::AddRecord(AddRecord {
            patient: *patient,
            doctor: doctor.id,
            department: doctor.department.clone().unwrap_or_default(),
            grant,
        });
        self.sign(meta, by, sample_record(0).to_bytes())
    }

    /// `patient` asks to erase their sealed transaction `tx`.
    pub fn request_erasure(&self, patient: &TestPerson, tx: TxId, by: &Signing) -> SignedTx {
        let meta = Meta::RequestErasure(RequestErasure {
            patient: patient.id,
            tx,
        });
        self.sign(meta, by, Vec::new())
    }

    /// Validator `hospital` answers the erasure request `request`.
    pub fn answer_erasure(&self, hospital: u32, request: TxId, decision: Decision) -> SignedTx {
        let meta = Meta::AnswerErasure(AnswerErasure { request, decision });
        self.sign(meta, &self.validator(hospital), Vec::new())
    }

    /// Validator `serving` served `reader` the records of `patient`.
    pub fn access(
        &self,
        serving: u32,
        patient: &PersonId,
        reader: &PersonId,
        grant: Option<TxId>,
    ) -> SignedTx {
        let meta = Meta::Access(Access {
            patient: *patient,
            reader: *reader,
            serving,
            grant,
        });
        self.sign(meta, &self.validator(serving), Vec::new())
    }

    /// The ten sample patients (home: their number modulo `n`).
    pub fn sample_patient(&self, k: u64) -> TestPerson {
        self.patient(
            k % SAMPLE_PATIENTS,
            (k % SAMPLE_PATIENTS % self.keys.len() as u64) as u32,
        )
    }

    /// The three sample doctors (home: their number modulo `n`; departments in turn).
    pub fn sample_doctor(&self, k: u64) -> TestPerson {
        let k = k % SAMPLE_DOCTORS;
        self.doctor(
            100 + k,
            (k % self.keys.len() as u64) as u32,
            DEPARTMENTS[k as usize],
        )
    }

    /// What sample `i` is: its metadata, signer and body.
    fn sample_parts(&self, i: u64) -> (Meta, Signing, Vec<u8>) {
        if i < SAMPLE_PATIENTS + SAMPLE_DOCTORS {
            let p = if i < SAMPLE_PATIENTS {
                self.sample_patient(i)
            } else {
                self.sample_doctor(i - SAMPLE_PATIENTS)
            };
            return (
                Meta::Enroll(self.enroll_meta(&p)),
                self.validator(p.home),
                Vec::new(),
            );
        }
        let j = i - SAMPLE_PATIENTS - SAMPLE_DOCTORS;
        let round = j / 3;
        let patient = self.sample_patient(round);
        let doctor = self.sample_doctor(round);
        match j % 3 {
            0 => (
                Meta::Grant(Grant {
                    patient: patient.id,
                    doctor: doctor.id,
                    scope: Scope::Write,
                    request: None,
                    attested: Attested::InPerson,
                }),
                patient.custodial(),
                PurposeBody {
                    purpose: "add_record".into(),
                }
                .to_bytes(),
            ),
            1 => (
                Meta::AddRecord(AddRecord {
                    patient: patient.id,
                    doctor: doctor.id,
                    department: doctor.department.clone().unwrap_or_default(),
                    grant: self.id(&self.sample_tx(i - 1)),
                }),
                doctor.custodial(),
                sample_record(i).to_bytes(),
            ),
            _ => (
                Meta::Access(Access {
                    patient: patient.id,
                    reader: patient.id,
                    serving: patient.home,
                    grant: None,
                }),
                self.validator(patient.home),
                Vec::new(),
            ),
        }
    }

    /// The `i`-th of a stream of distinct transactions that the rules all apply in order: the
    /// enrollment of ten patients and three doctors (samples 0 to 12), then in turn an
    /// in-person write grant, the record that uses it and the patient's own read.
    pub fn sample_tx(&self, i: u64) -> SignedTx {
        let (meta, by, body) = self.sample_parts(i);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        let header = TxHeader {
            meta,
            signer: by.signer,
            created_ms: GENESIS_TIME_MS + 1 + i,
            not_after_ms: u64::MAX,
            nonce,
            body_hash: [0; 32],
        };
        self.seal_and_sign(header, body, &by.key)
    }

    /// [`TestNet::sample_tx`] `i` signed again by its signer with a point of order 8 added to
    /// the signature's `R` (and `s` computed for that `R`). `[s]B = R + [k]A` fails by that
    /// point, `[8][s]B = [8]R + [8][k]A` holds: the case on which Ed25519 rules disagree
    /// ("Taming the many EdDSAs", Chalkias et al., 2020). Under ZIP-215 it is valid; under
    /// ed25519-dalek's `verify_strict` it is not, and its batch check (cofactorless, with
    /// coefficients drawn from the batch) accepts it one time in eight.
    pub fn torsion_tx(&self, i: u64) -> SignedTx {
        let (_, by, _) = self.sample_parts(i);
        let mut tx = self.sample_tx(i);
        tx.signature = torsion_sign(&by.key, &tx.signing_bytes(&self.genesis_hash()));
        tx
    }

    /// The certificate the first quorum of validators give a header in `view`.
    pub fn certify(&self, header: &BlockHeader, view: u64) -> Certificate {
        let signers: Vec<u32> = (0..self.genesis.quorum() as u32).collect();
        self.certify_by(header, view, &signers)
    }

    /// The certificate `signers` give a header in `view`.
    pub fn certify_by(&self, header: &BlockHeader, view: u64, signers: &[u32]) -> Certificate {
        let hash = header.hash();
        Certificate {
            view,
            signatures: signers
                .iter()
                .map(|&s| {
                    let sig = crypto::sign_commit(
                        &self.keys[s as usize],
                        &self.genesis.hash(),
                        view,
                        header.height,
                        &hash,
                    );
                    (s, sig)
                })
                .collect(),
        }
    }

    /// The block after `(height, hash)` holding `transactions`, at [`block_time`], proposed in
    /// view 0 by the primary of view 0 and certified by a quorum.
    pub fn next_block(&self, prev: (u64, Hash), transactions: Vec<SignedTx>) -> Block {
        self.block_of_entries(prev, transactions.iter().map(|t| self.request(t)).collect())
    }

    /// The block after `(height, hash)` holding `entries` as they are (valid transactions or
    /// not), at [`block_time`], proposed in view 0 by the primary of view 0 and certified by a
    /// quorum.
    pub fn block_of_entries(&self, prev: (u64, Hash), entries: Vec<Entry>) -> Block {
        self.block_at(prev, block_time(prev.0 + 1), entries)
    }

    /// The block after `(height, hash)` with time `time_ms` holding `entries`, certified.
    pub fn block_at(&self, prev: (u64, Hash), time_ms: u64, entries: Vec<Entry>) -> Block {
        let header = BlockHeader::build(prev.0 + 1, 0, 0, prev.1, time_ms, &entries);
        let certificate = self.certify(&header, 0);
        Block {
            header,
            entries,
            certificate,
        }
    }

    /// What each entry of `block` carries, as a node decides it before appending.
    pub fn check(&self, block: &Block) -> Vec<Checked> {
        crypto::check_entries(self.genesis.keys(), &self.genesis_hash(), &block.entries)
    }

    /// Appends `block` to `store` with the verdicts [`TestNet::check`] gives.
    pub fn append(&self, store: &mut Store, block: &Block) -> Result<Applied> {
        store.append_block(block, &self.check(block))
    }

    /// `blocks` blocks after genesis (heights 1..=blocks) of `txs_per_block` sample transactions.
    pub fn chain(&self, blocks: u64, txs_per_block: u64) -> Vec<Block> {
        let mut prev = (0, self.genesis.hash());
        let mut out = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let txs = (0..txs_per_block)
                .map(|i| self.sample_tx(b * txs_per_block + i))
                .collect();
            let block = self.next_block(prev, txs);
            prev = (block.header.height, block.hash());
            out.push(block);
        }
        out
    }

    /// A store at `path` holding genesis and `blocks` sample blocks.
    pub fn write_chain(&self, path: &Path, blocks: u64, txs_per_block: u64) -> Result<Store> {
        let mut store = Store::open(path, &self.genesis, OpenOptions::default())?;
        let (head, _) = store.head();
        for block in self
            .chain(blocks, txs_per_block)
            .into_iter()
            .skip(head as usize)
        {
            self.append(&mut store, &block)?;
        }
        Ok(store)
    }
}

/// Sample patients and doctors of [`TestNet::sample_tx`].
pub const SAMPLE_PATIENTS: u64 = 10;
pub const SAMPLE_DOCTORS: u64 = 3;

/// The body of sample record `i`.
pub fn sample_record(i: u64) -> RecordBody {
    RecordBody {
        diagnosis: format!("diagnosis {i}"),
        prescription: format!("prescription {i}"),
        notes: "follow up in two weeks".into(),
    }
}

/// A signature by `key` over `message` with a point of order 8 added to its `R`: valid under
/// ZIP-215 (cofactored), invalid under cofactorless rules (see [`TestNet::torsion_tx`]).
pub fn torsion_sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::{Scalar, clamp_integer};
    use sha2::{Digest, Sha512};

    // RFC 8032 §5.1.5: the secret scalar is the clamped first half of SHA-512(seed).
    let expanded = Sha512::digest(key.to_bytes());
    let mut lower = [0u8; 32];
    lower.copy_from_slice(&expanded[..32]);
    let secret = Scalar::from_bytes_mod_order(clamp_integer(lower));
    let nonce = Scalar::from_hash(
        Sha512::new()
            .chain_update(&expanded[32..])
            .chain_update(message),
    );
    let r = (ED25519_BASEPOINT_POINT * nonce + EIGHT_TORSION[1]).compress();
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r.as_bytes())
            .chain_update(key.verifying_key().as_bytes())
            .chain_update(message),
    );
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(r.as_bytes());
    signature[32..].copy_from_slice((nonce + k * secret).as_bytes());
    signature
}

/// One transaction of every kind on `net`'s chain, in kind order (signed, not necessarily
/// applicable together): for encoding tests and test vectors.
pub fn every_kind(net: &TestNet) -> Vec<SignedTx> {
    let patient = net.patient(1, 0);
    let doctor = net.doctor(2, 0, "Cardiology");
    let device = key_from("testkit every kind device");
    let new_device = net.new_key(&patient.id, KeyKind::Device, 1, &device);
    let ask = net.ask_key(&patient, 1, new_device.clone());
    let recovered = net.new_key(
        &patient.id,
        KeyKind::Custodial,
        patient.home,
        &key_from("recovered"),
    );
    let grant = net.grant(&patient, &doctor.id, Scope::Write, None, &patient.device());
    let erasure = net.request_erasure(&patient, net.id(&grant), &patient.custodial());
    vec![
        net.enroll(&patient),
        ask.clone(),
        net.link(&patient, 1, None, &patient.custodial()),
        net.add_key(&patient, new_device, Some(net.id(&ask)), &patient.device()),
        net.revoke_key(&patient, public(&device), &patient.custodial()),
        net.recover(&patient, recovered),
        net.request_grant(
            &doctor,
            &patient.id,
            Scope::Read {
                duration_ms: 3_600_000,
            },
            &doctor.custodial(),
        ),
        grant.clone(),
        net.revoke(&patient, net.id(&grant), &patient.device()),
        net.add_record(&doctor, &patient.id, net.id(&grant), &doctor.device()),
        net.access(0, &patient.id, &doctor.id, Some(net.id(&grant))),
        erasure.clone(),
        net.answer_erasure(
            0,
            net.id(&erasure),
            Decision::Refuse {
                reason: Refusal::RetentionPeriod,
                until_ms: Some(2_000_000_000_000),
            },
        ),
    ]
}

/// Signs `message` with `key` (for tests that build signatures by hand).
pub fn sign_bytes(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// Makes every block appended through `store`'s connection fail at its entry `idx` (a temporary
/// trigger on that connection: the file is not changed), so that the block is rolled back
/// mid-way, until [`stop_failing`].
pub fn fail_blocks_at_entry(store: &Store, idx: usize) -> Result<()> {
    use crate::Queries;
    store.connection().execute_batch(&format!(
        "CREATE TEMP TRIGGER testkit_fail_at_entry BEFORE INSERT ON transactions
         WHEN NEW.idx = {idx} BEGIN SELECT RAISE(ABORT, 'testkit: failed at entry {idx}'); END"
    ))?;
    Ok(())
}

/// Blocks appended through `store`'s connection no longer fail ([`fail_blocks_at_entry`]).
pub fn stop_failing(store: &Store) -> Result<()> {
    use crate::Queries;
    store
        .connection()
        .execute_batch("DROP TRIGGER temp.testkit_fail_at_entry")?;
    Ok(())
}
