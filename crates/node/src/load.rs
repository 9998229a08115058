//! A load generator for measuring a cluster: submits transactions at a fixed rate (open loop)
//! or as fast as they are acknowledged (closed loop), then waits for everything to commit. Used
//! by `medchain bench` and by the tests that load validators.
//!
//! The workload is the application's: a population of patients and doctors is enrolled once by
//! their home validators (custodial keys, generated and held in memory here as a home holds
//! them in its custody store), then each record comes with the in-person write grant it uses.
//! The grant is sealed by the patient's home ([`NodeHandle::seal`]: its purpose is encrypted and
//! its data key stored there), signed by the patient's custodial key and submitted there; once
//! it is applied, the record is sealed at the doctor's home, signed by the doctor's custodial
//! key and submitted there. Both count as transactions. Every signature and every seal is real,
//! and every transaction passes admission and applies.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger::crypto::{self, SigningKey};
use ledger::tx::{
    AddRecord, Attested, Enroll, Grant, KeyKind, NewKey, PurposeBody, RecordBody, Role,
    SIGNATURE_LIFE_MS, Scope,
};
use ledger::{Hash, Meta, PersonId, Queries, SignedTx, Signer, TxHeader, TxId, person_id};
use pbft::ReplicaId;
use rand::RngCore;
use tokio::task::JoinSet;

use crate::error::NodeError;
use crate::handle::{NodeHandle, Verdict};
use crate::keys::OfflineSeal;

mod made;

/// Patients the load generator enrolls (spread over the validators it drives).
pub const LOAD_PATIENTS: usize = 200;
/// Doctors the load generator enrolls (spread likewise, departments in turn).
pub const LOAD_DOCTORS: usize = 20;
/// The departments of the load's doctors, in turn.
const DEPARTMENTS: [&str; 4] = ["Cardiology", "Oncology", "Neurology", "Pediatrics"];

/// How to load the cluster.
#[derive(Clone, Debug)]
pub struct Load {
    /// Transactions per second in total (grants and records); `None`: as fast as
    /// acknowledgements allow.
    pub rate: Option<u64>,
    pub duration: Duration,
    /// Submitters in flight at once when `rate` is `None`.
    pub concurrency: usize,
    /// Records (a grant and a record each) sealed and signed before the measured run, as the
    /// ceiling makes its blocks before it times them: the run then measures the validators,
    /// not the clients' signatures and the homes' seals. `None`: each submitter seals and
    /// signs its own record inside the run.
    pub made_before: Option<MadeBefore>,
}

/// Records made before the measured run ([`Load::made_before`]): how many, and the file they
/// wait in (held in memory, they would count as the accepting validator's resident memory).
#[derive(Clone, Debug)]
pub struct MadeBefore {
    pub records: u64,
    pub file: std::path::PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Grants and records acknowledged (durable at the validator that accepted them).
    pub acknowledged: u64,
    /// Grants and records refused (busy, or refused by admission), and records not submitted
    /// because their grant was not applied.
    pub refused: u64,
    /// Of `refused`, the submissions a validator turned away as busy (its mempool full).
    pub refused_busy: u64,
    pub committed: u64,
    /// Acknowledged transactions in no block of the run (read back from the chain once
    /// nothing was pending).
    pub lost: u64,
    /// From the first submission to the last commit (the enrollment before is not counted).
    pub elapsed: Duration,
    pub committed_per_second: f64,
    /// Acknowledgement to commit, at the validator that accepted the transaction.
    pub commit_latency: Percentiles,
    /// A grant from the start of its seal (the data key drawn, its row made durable in
    /// `keys.db`) to applied at the patient's home: what a person waits, sealing included.
    /// A grant made before the run ([`Load::made_before`]) counts from its first submission.
    pub grant_latency: Percentiles,
    pub blocks: u64,
    /// Views the first validator driven moved through during the run (§4.4): a view change
    /// under load means a primary was suspected while it may have been merely slow.
    pub view_changes: u64,
    /// The mean size of a committed transaction of the run as the chain stores it (its
    /// canonical bytes).
    pub tx_bytes: f64,
    /// Committed transactions and commit latency, second by second from the first submission.
    pub series: Vec<Second>,
    /// The key services' counters, summed over the validators driven.
    pub keys: crate::KeyCounters,
    /// Records sealed and signed before the run ([`Load::made_before`]), and records the
    /// submitters sealed and signed inside the run (all of them without `made_before`; with
    /// it, those past the made ones).
    pub made_before: u64,
    pub made_in_run: u64,
}

/// Percentiles of a set of durations (zero when it is empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of `durations`, which this sorts.
    pub fn of(durations: &mut [Duration]) -> Percentiles {
        durations.sort_unstable();
        let sorted = &*durations;
        Percentiles {
            p50: percentile(sorted, 50.0),
            p95: percentile(sorted, 95.0),
            p99: percentile(sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// One second of a run: what committed in it, and the 99th percentile latency of that.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Second {
    /// The end of the second, in seconds from the start of the run (1, 2, ...).
    pub t_s: u64,
    pub committed_tx_per_s: f64,
    pub p99: Duration,
}

/// Builds the per-second series of a run from what committed when, and keeps every latency
/// for the run's percentiles.
#[derive(Debug, Default)]
pub struct Series {
    seconds: Vec<Second>,
    /// The second being filled: its committed transactions and latencies.
    committed: u64,
    latencies: Vec<Duration>,
    all_latencies: Vec<Duration>,
}

impl Series {
    /// `committed` transactions committed `at` (from the start of the run) with `latencies`.
    /// Times must not go backwards; seconds in which nothing committed are points of zero.
    pub fn add(&mut self, at: Duration, committed: u64, latencies: &[Duration]) {
        while at.as_secs() > self.seconds.len() as u64 {
            self.close_second();
        }
        self.committed += committed;
        self.latencies.extend_from_slice(latencies);
    }

    /// What a reading taken at `now` found committed since the one before, taken at `since`:
    /// counted at the middle of the span, so that a reading taken just after a second ends
    /// counts in the second it mostly covers.
    pub fn add_reading(
        &mut self,
        since: Duration,
        now: Duration,
        committed: u64,
        latencies: &[Duration],
    ) {
        self.add((since + now) / 2, committed, latencies);
    }

    fn close_second(&mut self) {
        let mut latencies = std::mem::take(&mut self.latencies);
        let p99 = Percentiles::of(&mut latencies).p99;
        self.all_latencies.extend(latencies);
        self.seconds.push(Second {
            t_s: self.seconds.len() as u64 + 1,
            committed_tx_per_s: std::mem::take(&mut self.committed) as f64,
            p99,
        });
    }

    /// The points, and the percentiles of every latency added. The last, partial second is a
    /// point of its own, its rate scaled to a whole second, when it lasted at least a fifth of
    /// one; a shorter one is added to the second before (or dropped if there is none and
    /// nothing happened in it).
    pub fn finish(mut self, end: Duration) -> (Vec<Second>, Percentiles) {
        self.add(end, 0, &[]);
        let partial = end.as_secs_f64() - end.as_secs() as f64;
        let happened = self.committed > 0 || !self.latencies.is_empty();
        if partial >= 0.2 || (happened && self.seconds.is_empty()) {
            let committed = self.committed as f64;
            self.close_second();
            if let Some(last) = self.seconds.last_mut() {
                last.committed_tx_per_s = committed / partial.max(0.2);
            }
        } else if happened {
            let (committed, mut latencies) = (self.committed, std::mem::take(&mut self.latencies));
            if let Some(last) = self.seconds.last_mut() {
                last.committed_tx_per_s += committed as f64;
            }
            self.all_latencies.append(&mut latencies);
        }
        let mut all = self.all_latencies;
        (self.seconds, Percentiles::of(&mut all))
    }
}

/// What [`drive`] tells its caller while it runs.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// So many of the records to make before the run ([`Load::made_before`]) are made.
    Making { made: u64, of: u64 },
    /// The population is enrolled (and the records to make before the run made): the measured
    /// run starts now.
    Started,
    /// So long into the run, so many transactions acknowledged.
    Running {
        elapsed: Duration,
        acknowledged: u64,
    },
    /// Everything acknowledged is committed: the measured run is over (what follows reads
    /// the run's blocks back to check them).
    Settled,
}

/// The wall clock in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A header for `meta` signed by `signer`: created now, a random nonce, no deadline (a test's
/// clock may run ahead of the system's; [`Person::sealed`] sets one). The body hash is set when
/// it is signed ([`SignedTx::sign`]).
pub fn header(meta: Meta, signer: Signer) -> TxHeader {
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    TxHeader {
        meta,
        signer,
        created_ms: now_ms(),
        not_after_ms: u64::MAX,
        nonce,
        body_hash: [0; 32],
    }
}

/// A person whose custodial key is held here, in memory, as their home holds it in its custody
/// store: for the load generator and for tests.
#[derive(Clone)]
pub struct Person {
    pub id: PersonId,
    pub home: ReplicaId,
    pub role: Role,
    /// A doctor's department.
    pub department: Option<String>,
    /// A doctor's public name.
    pub name: Option<String>,
    nonce: [u8; 16],
    custodial: SigningKey,
    /// A key of the person's own browser, made at the home's page (origin: the home), enrolled
    /// with the custodial key: what signs a read grant to another hospital's doctor.
    device: SigningKey,
}

impl Person {
    /// A new patient whose home is validator `home` (random id and key).
    pub fn patient(home: ReplicaId) -> Person {
        Person::new(home, Role::Patient, None, None)
    }

    /// A new doctor of `department` named `name`, whose home is validator `home`.
    pub fn doctor(home: ReplicaId, department: &str, name: &str) -> Person {
        Person::new(
            home,
            Role::Doctor,
            Some(department.to_string()),
            Some(name.to_string()),
        )
    }

    fn new(
        home: ReplicaId,
        role: Role,
        department: Option<String>,
        name: Option<String>,
    ) -> Person {
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Person {
            id: person_id(home, &nonce),
            home,
            role,
            department,
            name,
            nonce,
            custodial: crypto::generate_key(),
            device: crypto::generate_key(),
        }
    }

    /// Signing with this person's custodial key.
    pub fn signer(&self) -> Signer {
        Signer::Custodial {
            person: self.id,
            key: self.custodial.verifying_key().to_bytes(),
        }
    }

    /// Signing with this person's device key.
    pub fn device_signer(&self) -> Signer {
        Signer::Device {
            person: self.id,
            key: self.device.verifying_key().to_bytes(),
        }
    }

    /// The header of this person's enrollment with their custodial key and a device key made at
    /// the home's page (the body is empty), for their home to sign
    /// ([`NodeHandle::sign_as_validator`]).
    pub fn enrollment(&self, genesis_hash: &Hash) -> TxHeader {
        let custodial = NewKey::prove(
            genesis_hash,
            &self.id,
            KeyKind::Custodial,
            self.home,
            "held by the load generator",
            &self.custodial,
        );
        let device = NewKey::prove(
            genesis_hash,
            &self.id,
            KeyKind::Device,
            self.home,
            "web browser",
            &self.device,
        );
        let meta = Meta::Enroll(Enroll {
            person: self.id,
            nonce: self.nonce,
            role: self.role,
            department: self.department.clone(),
            name: self.name.clone(),
            home: self.home,
            keys: vec![custodial, device],
        });
        header(meta, Signer::Validator { index: self.home })
    }

    /// `meta` with `body`, signed with this person's custodial key.
    pub fn sign(&self, genesis_hash: &Hash, meta: Meta, body: Vec<u8>) -> SignedTx {
        self.sign_header(genesis_hash, header(meta, self.signer()), body)
    }

    /// `header` with `body` as given, signed with this person's custodial key (its signer set
    /// to that key): for tests that build a body by hand.
    pub fn sign_header(
        &self,
        genesis_hash: &Hash,
        mut header: TxHeader,
        body: Vec<u8>,
    ) -> SignedTx {
        header.signer = self.signer();
        SignedTx::sign(header, body, genesis_hash, &self.custodial)
    }

    /// The key that signs for this person: the device key if `device`, else the custodial key.
    fn signing(&self, device: bool) -> (Signer, &SigningKey) {
        if device {
            (self.device_signer(), &self.device)
        } else {
            (self.signer(), &self.custodial)
        }
    }

    /// `meta` with `content` sealed at this person's home `home` (which stores the data key,
    /// [`NodeHandle::seal`]), signed with the custodial key, or the device key if `device`.
    /// Valid for [`SIGNATURE_LIFE_MS`] by the home's clock, as the HTTP flows' transactions: a
    /// seal the cluster refused (busy) is deleted at its deadline, not kept pending for good.
    pub async fn sealed(
        &self,
        home: &NodeHandle,
        meta: Meta,
        content: &[u8],
        device: bool,
    ) -> Result<SignedTx, NodeError> {
        if home.id() != self.home {
            return Err(NodeError::Config(format!(
                "validator {} seals for its own people; this person's home is {}",
                home.id(),
                self.home
            )));
        }
        let (signer, key) = self.signing(device);
        let mut header = header(meta, signer);
        header.not_after_ms = home.now_ms().saturating_add(SIGNATURE_LIFE_MS);
        let (header, stored) = home.seal(header, content).await?;
        Ok(SignedTx::sign(header, stored, &home.genesis_hash(), key))
    }

    /// `meta` with `content` sealed as [`Person::sealed`] seals it, with the same cryptography,
    /// away from any running home: for chains made while the validators are stopped (the
    /// bench's ceiling, `crate::offline`). The data key is handed back, for the key stores of
    /// this person's home and of `other_party`, the other home entitled to it
    /// ([`crate::keys::OfflineKeys`]).
    pub(crate) fn sealed_offline(
        &self,
        genesis_hash: &Hash,
        meta: Meta,
        content: &[u8],
        device: bool,
        other_party: ReplicaId,
    ) -> Result<(SignedTx, OfflineSeal), NodeError> {
        let (signer, key) = self.signing(device);
        let mut header = header(meta, signer);
        // As a seal at its home: a key whose block never comes is deleted at this deadline
        // (red team s43 F2: a ceiling stopped between its keys and its blocks).
        header.not_after_ms = now_ms().saturating_add(SIGNATURE_LIFE_MS);
        let patient =
            header.meta.subject().copied().ok_or_else(|| {
                NodeError::Seal(format!("a {} names no patient", header.meta.kind()))
            })?;
        let (data_key, stored) = ledger::seal::seal(genesis_hash, &mut header, content)
            .map_err(|error| NodeError::Seal(error.to_string()))?;
        let seal = OfflineSeal {
            holders: [self.home, other_party],
            tx: header.id(genesis_hash),
            patient,
            not_after_ms: header.not_after_ms,
            key: data_key,
        };
        Ok((SignedTx::sign(header, stored, genesis_hash, key), seal))
    }

    /// This patient's grant of `scope` to `doctor`, sealed at the home `home`: a write grant
    /// attested in person (signed with the custodial key, as the home's in-person consent
    /// screen does), a read grant on the patient's own device (a key of the home's page).
    pub async fn grant(
        &self,
        home: &NodeHandle,
        doctor: &PersonId,
        scope: Scope,
        purpose: &str,
    ) -> Result<SignedTx, NodeError> {
        let (meta, body, device) = self.grant_parts(doctor, scope, purpose);
        self.sealed(home, meta, &body, device).await
    }

    /// What [`Person::grant`] seals and signs: the grant, its purpose's bytes, and whether
    /// the device key signs it.
    fn grant_parts(&self, doctor: &PersonId, scope: Scope, purpose: &str) -> (Meta, Vec<u8>, bool) {
        let device = matches!(scope, Scope::Read { .. });
        let meta = Meta::Grant(Grant {
            patient: self.id,
            doctor: *doctor,
            scope,
            request: None,
            attested: if device {
                Attested::Device
            } else {
                Attested::InPerson
            },
        });
        let body = PurposeBody {
            purpose: purpose.to_string(),
        };
        (meta, body.to_bytes(), device)
    }

    /// This patient's write grant to `doctor` ([`Person::grant`]).
    pub async fn write_grant(
        &self,
        home: &NodeHandle,
        doctor: &PersonId,
        purpose: &str,
    ) -> Result<SignedTx, NodeError> {
        self.grant(home, doctor, Scope::Write, purpose).await
    }

    /// This patient's read grant to `doctor` for `duration_ms` ([`Person::grant`]).
    pub async fn read_grant(
        &self,
        home: &NodeHandle,
        doctor: &PersonId,
        duration_ms: u64,
        purpose: &str,
    ) -> Result<SignedTx, NodeError> {
        self.grant(home, doctor, Scope::Read { duration_ms }, purpose)
            .await
    }

    /// `meta`, whose body is empty, signed on this person's own device.
    pub fn sign_on_device(&self, genesis_hash: &Hash, meta: Meta) -> SignedTx {
        SignedTx::sign(
            header(meta, self.device_signer()),
            Vec::new(),
            genesis_hash,
            &self.device,
        )
    }

    /// This patient revokes `grant`, on their own device.
    pub fn revoke(&self, genesis_hash: &Hash, grant: TxId) -> SignedTx {
        let meta = Meta::Revoke(ledger::tx::Revoke {
            patient: self.id,
            target: grant,
        });
        self.sign_on_device(genesis_hash, meta)
    }

    /// This patient asks, on their own device (a key of their home's page), for the sealed
    /// transaction `tx` of theirs to be erased.
    pub fn request_erasure(&self, genesis_hash: &Hash, tx: TxId) -> SignedTx {
        let meta = Meta::RequestErasure(ledger::tx::RequestErasure {
            patient: self.id,
            tx,
        });
        self.sign_on_device(genesis_hash, meta)
    }

    /// This doctor's record in `patient`'s history, in the doctor's department, under write
    /// grant `grant`: sealed at the doctor's home `home`, signed with the custodial key.
    pub async fn record(
        &self,
        home: &NodeHandle,
        patient: &PersonId,
        grant: TxId,
        body: &RecordBody,
    ) -> Result<SignedTx, NodeError> {
        self.sealed(
            home,
            self.record_meta(patient, grant),
            &body.to_bytes(),
            false,
        )
        .await
    }

    /// The record of [`Person::record`], before it is sealed.
    fn record_meta(&self, patient: &PersonId, grant: TxId) -> Meta {
        Meta::AddRecord(AddRecord {
            patient: *patient,
            doctor: self.id,
            department: self.department.clone().unwrap_or_default(),
            grant,
        })
    }
}

/// The handle of validator `id` among `handles`.
pub(crate) fn handle_of(handles: &[NodeHandle], id: ReplicaId) -> Result<&NodeHandle, NodeError> {
    handles
        .iter()
        .find(|handle| handle.id() == id)
        .ok_or_else(|| NodeError::Config(format!("no handle of validator {id}, a home")))
}

/// Enrolls `people` through their homes (each must be among `handles`), asks each home for a
/// block, and waits until every enrollment is applied (at most `timeout` for each). A rule
/// rejecting an enrollment is [`NodeError::Refused`] with its reason.
pub async fn enroll(
    handles: &[NodeHandle],
    people: &[&Person],
    timeout: Duration,
) -> Result<(), NodeError> {
    let mut by_home: BTreeMap<ReplicaId, Vec<&Person>> = BTreeMap::new();
    for person in people {
        by_home.entry(person.home).or_default().push(person);
    }
    for (home, people) in by_home {
        let handle = handle_of(handles, home)?;
        let mut ids = Vec::with_capacity(people.len());
        let mut last = None;
        for person in people {
            let tx =
                handle.sign_as_validator(person.enrollment(&handle.genesis_hash()), Vec::new());
            // A validator busy with its start (a big chain's keys, a backlog) is asked again.
            ids.push(
                submit_while_busy(handle, tx.clone(), Instant::now() + timeout, |_| ()).await?,
            );
            last = Some(tx);
        }
        // Pending already: this asks for a block now, holding everything submitted above.
        if let Some(last) = last {
            handle.submit_applied(last, timeout).await?;
        }
        for id in ids {
            if let Verdict::Rejected { reason, .. } = handle.wait_applied(id, timeout).await? {
                return Err(NodeError::Refused(reason));
            }
        }
    }
    Ok(())
}

/// Submits `tx`, again after [`BUSY_BACKOFF`] while the validator says it is busy and
/// `deadline` has not passed; `on_each` sees every attempt's outcome.
async fn submit_while_busy(
    handle: &NodeHandle,
    tx: SignedTx,
    deadline: Instant,
    mut on_each: impl FnMut(&Result<TxId, NodeError>),
) -> Result<TxId, NodeError> {
    loop {
        let submitted = handle.submit(tx.clone()).await;
        on_each(&submitted);
        if !matches!(submitted, Err(NodeError::Busy)) || Instant::now() > deadline {
            return submitted;
        }
        tokio::time::sleep(BUSY_BACKOFF).await;
    }
}

/// The purpose of every grant of the load.
const GRANT_PURPOSE: &str = "follow-up visit";
/// How long a submitter turned away as busy waits before it tries again, as a client would.
const BUSY_BACKOFF: Duration = Duration::from_millis(20);

/// The people of a load: patients and doctors spread over the validators driven.
pub(crate) struct Population {
    patients: Vec<Person>,
    doctors: Vec<Person>,
}

impl Population {
    /// Patients and doctors whose homes are `homes`, in turn.
    pub(crate) fn new(homes: &[ReplicaId]) -> Population {
        let home = |i: usize| homes[i % homes.len()];
        Population {
            patients: (0..LOAD_PATIENTS)
                .map(|i| Person::patient(home(i)))
                .collect(),
            doctors: (0..LOAD_DOCTORS)
                .map(|i| {
                    Person::doctor(
                        home(i),
                        DEPARTMENTS[i % DEPARTMENTS.len()],
                        &format!("Dr Load {i}"),
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn everyone(&self) -> Vec<&Person> {
        self.patients.iter().chain(&self.doctors).collect()
    }

    /// The patient and the doctor of record `i`.
    pub(crate) fn pair(&self, i: u64) -> (&Person, &Person) {
        let i = i as usize;
        (
            &self.patients[i % self.patients.len()],
            &self.doctors[(i / self.patients.len() + i) % self.doctors.len()],
        )
    }

    /// Record `i`'s two transactions as the load makes them, its grant and then the record
    /// under it, each sealed at its home among `handles` (whose key service keeps the data
    /// key) and signed, neither submitted.
    pub(crate) async fn sealed_pair(
        &self,
        i: u64,
        handles: &[NodeHandle],
    ) -> Result<[SignedTx; 2], NodeError> {
        let (patient, doctor) = self.pair(i);
        let patient_home = handle_of(handles, patient.home)?;
        let grant = patient
            .write_grant(patient_home, &doctor.id, GRANT_PURPOSE)
            .await?;
        let doctor_home = handle_of(handles, doctor.home)?;
        let grant_id = grant.id(&doctor_home.genesis_hash());
        let record = doctor
            .record(doctor_home, &patient.id, grant_id, &sample_record(i))
            .await?;
        Ok([grant, record])
    }

    /// Record `i`'s two transactions as the load makes them, its grant and then the record
    /// under it, sealed away from their homes ([`Person::sealed_offline`]), with their keys.
    pub(crate) fn offline_pair(
        &self,
        i: u64,
        genesis_hash: &Hash,
    ) -> Result<[(SignedTx, OfflineSeal); 2], NodeError> {
        let (patient, doctor) = self.pair(i);
        let (meta, purpose, device) = patient.grant_parts(&doctor.id, Scope::Write, GRANT_PURPOSE);
        let grant = patient.sealed_offline(genesis_hash, meta, &purpose, device, doctor.home)?;
        let meta = doctor.record_meta(&patient.id, grant.0.id(genesis_hash));
        let record = doctor.sealed_offline(
            genesis_hash,
            meta,
            &sample_record(i).to_bytes(),
            false,
            patient.home,
        )?;
        Ok([grant, record])
    }
}

/// A synthetic but realistic record (about the size of a clinic note).
pub fn sample_record(i: u64) -> RecordBody {
    RecordBody {
        diagnosis: format!("Stable angina, follow-up {i}"),
        prescription: "Atorvastatin 20 mg once daily; nitroglycerin as needed".into(),
        notes: "Blood pressure 128/82. Advised moderate exercise and a follow-up in 3 months."
            .into(),
    }
}

/// What the submitters count, shared between their tasks.
#[derive(Default)]
struct Counters {
    next: AtomicU64,
    acknowledged: AtomicU64,
    /// The ids of the transactions acknowledged, to find any that did not commit.
    acknowledged_ids: Mutex<HashSet<TxId>>,
    refused: AtomicU64,
    refused_busy: AtomicU64,
    /// Records the submitters sealed and signed themselves.
    made_in_run: AtomicU64,
    /// The second halves of the records (wait for the grant, submit the record), awaited at
    /// the end. Those done are joined as new ones start: a task's memory is freed only once
    /// it is joined, and a run's hundreds of thousands kept each its own, on pages faulted in
    /// fresh (1.8 % of the machine's time: BENCHMARKS.md "thirty-eighth").
    records: Mutex<JoinSet<()>>,
    /// Each applied grant's time from the start of its seal to applied at the patient's home.
    grant_latencies: Mutex<Vec<Duration>>,
}

impl Counters {
    fn count(&self, submitted: &Result<TxId, NodeError>) {
        let counter = match submitted {
            Ok(id) => {
                if let Ok(mut ids) = self.acknowledged_ids.lock() {
                    ids.insert(*id);
                }
                &self.acknowledged
            }
            Err(error) => {
                if matches!(error, NodeError::Busy) {
                    self.refused_busy.fetch_add(1, Ordering::Relaxed);
                }
                &self.refused
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Submits the grant of the next record and returns once it is acknowledged; the record
/// follows, in a task of its own, once the grant is applied. The next record made before the
/// run if any is left in `made`, else one sealed and signed here.
async fn submit_pair(
    handles: Arc<Vec<NodeHandle>>,
    people: Arc<Population>,
    made: Option<Arc<made::Made>>,
    counters: Arc<Counters>,
    settle: Duration,
) {
    let next = counters.next.fetch_add(1, Ordering::Relaxed);
    let sealing = Instant::now();
    let (i, made) = match made.as_deref().and_then(made::Made::take) {
        Some((i, [grant, record])) => (i, Some((grant, record))),
        None => {
            counters.made_in_run.fetch_add(1, Ordering::Relaxed);
            (next, None)
        }
    };
    let (patient, doctor) = people.pair(i);
    let (Ok(patient_home), Ok(doctor_home)) = (
        handle_of(&handles, patient.home),
        handle_of(&handles, doctor.home),
    ) else {
        counters.refused.fetch_add(2, Ordering::Relaxed);
        return;
    };
    let (submitted, made_record) = match made {
        // A made grant turned away as busy is offered again, as a client would: the next
        // would be turned away alike, and dropping it would waste what was made.
        Some((grant, record)) => {
            let deadline = Instant::now() + settle;
            let submitted = submit_while_busy(patient_home, grant, deadline, |submitted| {
                counters.count(submitted)
            })
            .await;
            (submitted, Some(record))
        }
        None => {
            let submitted = match patient
                .write_grant(patient_home, &doctor.id, GRANT_PURPOSE)
                .await
            {
                Ok(grant) => patient_home.submit(grant).await,
                Err(error) => Err(error),
            };
            counters.count(&submitted);
            (submitted, None)
        }
    };
    let grant = match submitted {
        Ok(grant) => grant,
        Err(error) => {
            // The record is not submitted either.
            counters.refused.fetch_add(1, Ordering::Relaxed);
            if matches!(error, NodeError::Busy) {
                tokio::time::sleep(BUSY_BACKOFF).await;
            }
            return;
        }
    };
    let (patient_home, doctor_home) = (patient_home.clone(), doctor_home.clone());
    let (patient_id, doctor) = (patient.id, doctor.clone());
    let record = {
        let counters = counters.clone();
        async move {
            let applied = patient_home.wait_applied(grant, settle).await;
            if !matches!(applied, Ok(Verdict::Applied { .. })) {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Ok(mut latencies) = counters.grant_latencies.lock() {
                latencies.push(sealing.elapsed());
            }
            // The doctor's home admits the record on its own chain: it must hold the grant.
            if doctor_home.id() != patient_home.id() {
                let applied = doctor_home.wait_applied(grant, settle).await;
                if !matches!(applied, Ok(Verdict::Applied { .. })) {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            // Its grant is on chain: a busy validator is asked again (each submission counted).
            let deadline = Instant::now() + settle;
            let record = match made_record {
                Some(record) => Ok(record),
                // A home turning submissions away seals nothing either: asked again.
                None => loop {
                    let record = doctor
                        .record(&doctor_home, &patient_id, grant, &sample_record(i))
                        .await;
                    if !matches!(record, Err(NodeError::Busy)) || Instant::now() > deadline {
                        break record;
                    }
                    counters.count(&Err(NodeError::Busy));
                    tokio::time::sleep(BUSY_BACKOFF).await;
                },
            };
            match record {
                Ok(record) => {
                    let _ = submit_while_busy(&doctor_home, record, deadline, |submitted| {
                        counters.count(submitted)
                    })
                    .await;
                }
                Err(error) => counters.count(&Err(error)),
            }
        }
    };
    match counters.records.lock() {
        Ok(mut records) => {
            while records.try_join_next().is_some() {}
            records.spawn(record);
        }
        Err(_) => drop(tokio::spawn(record)),
    }
}

/// How often the validators' commits are read for the series.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Samples the validators' commits into a [`Series`], every [`SAMPLE_EVERY`] or so.
struct Sampler<'h> {
    handles: &'h [NodeHandle],
    started: Instant,
    series: Series,
    committed_seen: u64,
    /// Per handle, how many latencies it had recorded when last read.
    latencies_seen: Vec<u64>,
    /// When the last reading was taken, from the start.
    last: Duration,
}

impl<'h> Sampler<'h> {
    fn new(handles: &'h [NodeHandle], started: Instant) -> Self {
        let mut sampler = Sampler {
            handles,
            started,
            series: Series::default(),
            committed_seen: 0,
            latencies_seen: vec![0; handles.len()],
            last: Duration::ZERO,
        };
        // What was recorded before the run is not the run's.
        sampler.read();
        sampler
    }

    /// Committed transactions and latencies since the last reading.
    fn read(&mut self) -> (u64, Vec<Duration>) {
        let committed = self.handles[0].shared().committed_transactions();
        let new = committed.saturating_sub(self.committed_seen);
        self.committed_seen = committed;
        let mut latencies = Vec::new();
        for (handle, seen) in self.handles.iter().zip(&mut self.latencies_seen) {
            let (more, total) = handle.shared().latencies_since(*seen);
            *seen = total;
            latencies.extend(more);
        }
        (new, latencies)
    }

    /// Takes a reading if the last is [`SAMPLE_EVERY`] old.
    fn tick(&mut self) {
        if self.started.elapsed() >= self.last + SAMPLE_EVERY {
            self.sample();
        }
    }

    fn sample(&mut self) {
        let (since, now) = (self.last, self.started.elapsed());
        self.last = now;
        let (committed, latencies) = self.read();
        self.series.add_reading(since, now, committed, &latencies);
    }

    fn finish(mut self) -> (Vec<Second>, Percentiles) {
        self.sample();
        let end = self.last;
        self.series.finish(end)
    }
}

/// Enrolls a population (through `handles`, which must include every home), then drives
/// `handles` with `load`, then waits (up to `settle`) until nothing is pending.
pub async fn drive(
    handles: &[NodeHandle],
    load: &Load,
    settle: Duration,
    mut on_progress: impl FnMut(Progress),
) -> Result<LoadReport, NodeError> {
    if handles.is_empty() {
        return Err(NodeError::Config("no validator to load".into()));
    }
    let homes: Vec<ReplicaId> = handles.iter().map(NodeHandle::id).collect();
    let people = Arc::new(Population::new(&homes));
    enroll(handles, &people.everyone(), settle).await?;
    // Each home waited for its own people; the count below is the first validator's, which
    // must hold every enrollment before it (else the run would count the last of them).
    let enrolled = highest_stored_head(handles)?;
    let deadline = Instant::now() + settle;
    while handles[0].status().height < enrolled {
        if Instant::now() > deadline {
            return Err(NodeError::Timeout("the enrollment's blocks"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Removed however the run ends (an error or a timeout below included): what the run did
    // not take is never submitted, and the file may be as large as the run.
    let _made_file = load
        .made_before
        .as_ref()
        .map(|before| made::Removed(before.file.clone()));
    let made = match &load.made_before {
        Some(before) => {
            made::make(&people, handles, before.records, &before.file, |made| {
                on_progress(Progress::Making {
                    made,
                    of: before.records,
                })
            })
            .await?;
            Some(Arc::new(made::Made::open(&before.file)?))
        }
        None => None,
    };
    on_progress(Progress::Started);
    let committed_before: u64 = handles[0].shared().committed_transactions();
    let (height_before, view_before) = {
        let status = handles[0].status();
        (status.height, status.view)
    };
    let shared_handles = Arc::new(handles.to_vec());
    let counters = Arc::new(Counters::default());
    let submit = {
        let (handles, people, counters) = (shared_handles, people.clone(), counters.clone());
        let made = made.clone();
        move || {
            submit_pair(
                handles.clone(),
                people.clone(),
                made.clone(),
                counters.clone(),
                settle,
            )
        }
    };
    let acknowledged = || counters.acknowledged.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut sampler = Sampler::new(handles, started);
    let mut progress = |sampler: &mut Sampler| {
        sampler.tick();
        on_progress(Progress::Running {
            elapsed: started.elapsed(),
            acknowledged: acknowledged(),
        });
    };
    // Joined as they end, not only at the end: see `Counters::records`.
    let mut tasks = JoinSet::new();
    match load.rate {
        Some(rate) => {
            // Open loop: a slot every millisecond, each starting its share of the records (two
            // transactions each: a grant and a record).
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            let mut sent = 0u64;
            let mut last_progress = Instant::now();
            while started.elapsed() < load.duration {
                interval.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate as f64 / 2.0) as u64;
                while sent < due {
                    tasks.spawn(submit());
                    sent += 1;
                }
                while tasks.try_join_next().is_some() {}
                if last_progress.elapsed() >= SAMPLE_EVERY {
                    last_progress = Instant::now();
                    progress(&mut sampler);
                }
            }
        }
        None => {
            for _ in 0..load.concurrency.max(1) {
                let submit = submit.clone();
                let duration = load.duration;
                tasks.spawn(async move {
                    while started.elapsed() < duration {
                        submit().await;
                    }
                });
            }
            while started.elapsed() < load.duration {
                tokio::time::sleep(SAMPLE_EVERY).await;
                progress(&mut sampler);
            }
        }
    }
    while tasks.join_next().await.is_some() {
        sampler.tick();
    }
    let mut records = counters
        .records
        .lock()
        .map(|mut records| std::mem::take(&mut *records))
        .unwrap_or_default();
    while records.join_next().await.is_some() {
        sampler.tick();
    }
    let deadline = Instant::now() + settle;
    let mut drained: Option<Instant> = None;
    loop {
        if handles.iter().any(|handle| handle.status().pending > 0) {
            drained = None;
        } else {
            // A validator forgets a transaction as pending before it counts the block that
            // holds it as committed (in between, it deletes it from node.db): the count is
            // given a moment to follow.
            let since = *drained.get_or_insert_with(Instant::now);
            let committed = handles[0].shared().committed_transactions() - committed_before;
            if committed >= acknowledged() || since.elapsed() > COUNT_GRACE {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(NodeError::Timeout("acknowledged transactions to commit"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        sampler.tick();
    }
    let elapsed = started.elapsed();
    let committed = handles[0].shared().committed_transactions() - committed_before;
    let (series, commit_latency) = sampler.finish();
    let mut grant_latencies = counters
        .grant_latencies
        .lock()
        .map(|mut latencies| std::mem::take(&mut *latencies))
        .unwrap_or_default();
    let mut keys = crate::KeyCounters::default();
    for handle in handles {
        keys.add(&handle.key_status().counters);
    }
    // The chain's head as stored: the status is published at the end of the validator's turn,
    // after the committed count that ended the wait above.
    let (height, _) = handles[0].read(|reader| reader.head())?;
    let view = handles[0].status().view;
    on_progress(Progress::Settled);
    let acknowledged_ids = counters
        .acknowledged_ids
        .lock()
        .map(|mut ids| std::mem::take(&mut *ids))
        .unwrap_or_default();
    drop(made);
    drop(_made_file);
    let audit = audit(&handles[0], height_before + 1, height, acknowledged_ids)?;
    Ok(LoadReport {
        acknowledged: acknowledged(),
        refused: counters.refused.load(Ordering::Relaxed),
        refused_busy: counters.refused_busy.load(Ordering::Relaxed),
        committed,
        lost: audit.missing.len() as u64,
        elapsed,
        committed_per_second: committed as f64 / elapsed.as_secs_f64(),
        commit_latency,
        grant_latency: Percentiles::of(&mut grant_latencies),
        blocks: height - height_before,
        view_changes: view.saturating_sub(view_before),
        tx_bytes: audit.mean_tx_bytes,
        series,
        keys,
        made_before: load.made_before.as_ref().map_or(0, |before| before.records),
        made_in_run: counters.made_in_run.load(Ordering::Relaxed),
    })
}

/// How long, once nothing is pending, the committed count may take to include the last block.
const COUNT_GRACE: Duration = Duration::from_secs(2);

/// The highest head the validators of `handles` have stored. A step is answered once its
/// block is applied, and the status is published later, at the end of the validator's turn:
/// a status read just after an answer may not count its block yet.
pub fn highest_stored_head(handles: &[NodeHandle]) -> Result<u64, NodeError> {
    let mut highest = 0;
    for handle in handles {
        highest = highest.max(handle.read(|reader| reader.head())?.0);
    }
    Ok(highest)
}

/// What the blocks of a run hold.
pub struct Audit {
    /// Acknowledged transactions not in any of them.
    pub missing: HashSet<TxId>,
    /// What they hold that was not acknowledged (a step whose answer was a refusal or an
    /// error, though its transaction went on to commit), by kind.
    pub unacknowledged: BTreeMap<&'static str, u64>,
    /// The entries they hold.
    pub entries: u64,
    /// The mean size of their transactions as the chain stores them (each entry's canonical
    /// bytes).
    pub mean_tx_bytes: f64,
}

/// Reads blocks `from..=to` of `handle`'s chain, one at a time: which of `acknowledged` none
/// holds, and the mean size of what they hold.
pub fn audit(
    handle: &NodeHandle,
    from: u64,
    to: u64,
    mut acknowledged: HashSet<TxId>,
) -> Result<Audit, NodeError> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut unacknowledged = BTreeMap::new();
    for height in from..=to {
        for block in handle.read(|reader| reader.blocks_from(height, 1))? {
            for entry in &block.entries {
                if !acknowledged.remove(&entry.id) {
                    let kind = SignedTx::from_bytes(&entry.payload)
                        .map_or("undecodable", |tx| tx.header.meta.kind());
                    *unacknowledged.entry(kind).or_default() += 1;
                }
                entries += 1;
                bytes += entry.payload.len() as u64;
            }
        }
    }
    Ok(Audit {
        missing: acknowledged,
        unacknowledged,
        entries,
        mean_tx_bytes: if entries == 0 {
            0.0
        } else {
            bytes as f64 / entries as f64
        },
    })
}

/// The `p`th percentile of `sorted`, zero when it is empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((p / 100.0) * sorted.len().saturating_sub(1) as f64).round() as usize)
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red team s43 (8dced3e8), break: a seal of the ceiling is stored at its home as a pending
    /// seal with no deadline. `Person::sealed_offline` keeps `header()`'s `not_after_ms` of
    /// `u64::MAX` (stored as `i64::MAX`), where the seal at a home it stands for
    /// (`Person::sealed`) is valid for `SIGNATURE_LIFE_MS` by the home's clock, "so that a seal
    /// the cluster refused is deleted at its deadline, not kept pending for good".
    /// `Ceiling::make` commits every span's keys (synced) before `Ceiling::apply` stores its
    /// blocks: a ceiling that stops in between (an error or a kill during the measured span, a
    /// home's `keep` failing after earlier homes committed) leaves keys whose transactions
    /// no chain will hold, pending at their homes for good (`Pending::take_expired` never
    /// reaches `i64::MAX`; each start reads them back as pending). Expected: the online
    /// deadline.
    #[test]
    fn red_team_s43_an_offline_seal_has_the_deadline_of_a_seal_at_its_home() {
        let patient = Person::patient(0);
        let doctor = Person::doctor(1, "cardiology", "Dr S43");
        let (meta, purpose, device) = patient.grant_parts(&doctor.id, Scope::Write, GRANT_PURPOSE);
        let (tx, seal) = patient
            .sealed_offline(&[7; 32], meta, &purpose, device, doctor.home)
            .unwrap();
        let latest = now_ms() + SIGNATURE_LIFE_MS;
        assert!(
            seal.not_after_ms <= latest && tx.header.not_after_ms <= latest,
            "the ceiling's seal is pending until {} (the home's would be until at most {latest})",
            seal.not_after_ms
        );
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_series_has_a_point_a_second_quiet_ones_included() {
        let mut series = Series::default();
        series.add(ms(100), 10, &[ms(5)]);
        series.add(ms(900), 20, &[ms(7), ms(9)]);
        // Nothing in the second second; the third ends the run half way.
        series.add(ms(2_100), 30, &[ms(40)]);
        let (points, all) = series.finish(ms(2_500));
        let rates: Vec<f64> = points.iter().map(|p| p.committed_tx_per_s).collect();
        assert_eq!(
            rates,
            [30.0, 0.0, 60.0],
            "the half second's 30 is 60 a second"
        );
        assert_eq!(points.iter().map(|p| p.t_s).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(points[0].p99, ms(9));
        assert_eq!(points[1].p99, Duration::ZERO);
        assert_eq!(points[2].p99, ms(40));
        assert_eq!((all.p50, all.max), (ms(9), ms(40)), "of 5, 7, 9 and 40 ms");
    }

    #[test]
    fn a_reading_just_after_a_second_counts_in_that_second() {
        let mut series = Series::default();
        // Readings every 1.05 s of a steady 100 transactions a second.
        series.add_reading(ms(0), ms(1_050), 105, &[]);
        series.add_reading(ms(1_050), ms(2_100), 105, &[]);
        series.add_reading(ms(2_100), ms(3_000), 90, &[]);
        let (points, _) = series.finish(ms(3_000));
        let rates: Vec<f64> = points.iter().map(|p| p.committed_tx_per_s).collect();
        assert_eq!(rates, [105.0, 105.0, 90.0], "none is empty, none doubled");
    }

    #[test]
    fn a_sliver_of_a_last_second_is_added_to_the_one_before() {
        let mut series = Series::default();
        series.add(ms(500), 100, &[ms(1)]);
        series.add(ms(1_050), 8, &[ms(2)]);
        let (points, all) = series.finish(ms(1_060));
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].committed_tx_per_s, 108.0);
        assert_eq!(all.max, ms(2), "its latencies still count");
        let (points, _) = Series::default().finish(ms(50));
        assert!(points.is_empty(), "nothing happened");
    }

    #[test]
    fn percentiles_of_a_hundred() {
        let mut durations: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let p = Percentiles::of(&mut durations);
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max),
            (ms(51), ms(95), ms(99), ms(100))
        );
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
