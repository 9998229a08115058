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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger::crypto::{self, SigningKey};
use ledger::tx::{
    AddRecord, Attested, Enroll, Grant, KeyKind, NewKey, PurposeBody, RecordBody, Role, Scope,
};
use ledger::{Hash, Meta, PersonId, SignedTx, Signer, TxHeader, TxId, person_id};
use pbft::ReplicaId;
use rand::RngCore;
use tokio::task::JoinHandle;

use crate::error::NodeError;
use crate::handle::{NodeHandle, Verdict};

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
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Grants and records acknowledged (durable at the validator that accepted them).
    pub acknowledged: u64,
    /// Grants and records refused (busy, or refused by admission), and records not submitted
    /// because their grant was not applied.
    pub refused: u64,
    pub committed: u64,
    /// From the first submission to the last commit (the enrollment before is not counted).
    pub elapsed: Duration,
    pub committed_per_second: f64,
    /// Acknowledgement to commit, at the validator that accepted the transaction.
    pub commit_latency_p50: Duration,
    pub commit_latency_p99: Duration,
    /// A grant from the start of its seal (the data key drawn, its row made durable in
    /// `keys.db`) to applied at the patient's home: what a person waits, sealing included.
    pub grant_latency_p50: Duration,
    pub grant_latency_p99: Duration,
    pub blocks: u64,
    /// The key services' counters, summed over the validators driven.
    pub keys: crate::KeyCounters,
}

/// The wall clock in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A header for `meta` signed by `signer`: created now, a random nonce, no deadline. The body
/// hash is set when it is signed ([`SignedTx::sign`]).
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

    /// `meta` with `content` sealed at this person's home `home` (which stores the data key,
    /// [`NodeHandle::seal`]), signed with the custodial key, or the device key if `device`.
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
        let (signer, key) = if device {
            (self.device_signer(), &self.device)
        } else {
            (self.signer(), &self.custodial)
        };
        let (header, stored) = home.seal(header(meta, signer), content).await?;
        Ok(SignedTx::sign(header, stored, &home.genesis_hash(), key))
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
        self.sealed(home, meta, &body.to_bytes(), device).await
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
        let meta = Meta::AddRecord(AddRecord {
            patient: *patient,
            doctor: self.id,
            department: self.department.clone().unwrap_or_default(),
            grant,
        });
        self.sealed(home, meta, &body.to_bytes(), false).await
    }
}

/// The handle of validator `id` among `handles`.
fn handle_of(handles: &[NodeHandle], id: ReplicaId) -> Result<&NodeHandle, NodeError> {
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
            ids.push(handle.submit(tx.clone()).await?);
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

/// The people of a load: patients and doctors spread over the validators driven.
struct Population {
    patients: Vec<Person>,
    doctors: Vec<Person>,
}

impl Population {
    fn new(handles: &[NodeHandle]) -> Population {
        let home = |i: usize| handles[i % handles.len()].id();
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

    fn everyone(&self) -> Vec<&Person> {
        self.patients.iter().chain(&self.doctors).collect()
    }

    /// The patient and the doctor of record `i`.
    fn pair(&self, i: u64) -> (&Person, &Person) {
        let i = i as usize;
        (
            &self.patients[i % self.patients.len()],
            &self.doctors[(i / self.patients.len() + i) % self.doctors.len()],
        )
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
    refused: AtomicU64,
    /// The second halves of the records (wait for the grant, submit the record), awaited at
    /// the end.
    records: Mutex<Vec<JoinHandle<()>>>,
    /// Each applied grant's time from the start of its seal to applied at the patient's home.
    grant_latencies: Mutex<Vec<Duration>>,
}

impl Counters {
    fn count(&self, submitted: &Result<TxId, NodeError>) {
        let counter = match submitted {
            Ok(_) => &self.acknowledged,
            Err(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Submits the grant of record `i` and returns once it is acknowledged; the record follows,
/// in a task of its own, once the grant is applied.
async fn submit_pair(
    handles: Arc<Vec<NodeHandle>>,
    people: Arc<Population>,
    counters: Arc<Counters>,
    settle: Duration,
) {
    let i = counters.next.fetch_add(1, Ordering::Relaxed);
    let sealing = Instant::now();
    let (patient, doctor) = people.pair(i);
    let (Ok(patient_home), Ok(doctor_home)) = (
        handle_of(&handles, patient.home),
        handle_of(&handles, doctor.home),
    ) else {
        counters.refused.fetch_add(2, Ordering::Relaxed);
        return;
    };
    let submitted = match patient
        .write_grant(patient_home, &doctor.id, "follow-up visit")
        .await
    {
        Ok(grant) => patient_home.submit(grant).await,
        Err(error) => Err(error),
    };
    counters.count(&submitted);
    let Ok(grant) = submitted else {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (patient_home, doctor_home) = (patient_home.clone(), doctor_home.clone());
    let (patient_id, doctor) = (patient.id, doctor.clone());
    let record = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let applied = patient_home.wait_applied(grant, settle).await;
            if !matches!(applied, Ok(Verdict::Applied { .. })) {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Ok(mut latencies) = counters.grant_latencies.lock() {
                latencies.push(sealing.elapsed());
            }
            let submitted = match doctor
                .record(&doctor_home, &patient_id, grant, &sample_record(i))
                .await
            {
                Ok(record) => doctor_home.submit(record).await,
                Err(error) => Err(error),
            };
            counters.count(&submitted);
        })
    };
    if let Ok(mut records) = counters.records.lock() {
        records.push(record);
    }
}

/// Enrolls a population (through `handles`, which must include every home), then drives
/// `handles` with `load`, then waits (up to `settle`) until nothing is pending.
pub async fn drive(
    handles: &[NodeHandle],
    load: &Load,
    settle: Duration,
    on_progress: impl Fn(Duration, u64),
) -> Result<LoadReport, NodeError> {
    if handles.is_empty() {
        return Err(NodeError::Config("no validator to load".into()));
    }
    let people = Arc::new(Population::new(handles));
    enroll(handles, &people.everyone(), settle).await?;
    for handle in handles {
        handle.shared().reset_latencies();
    }
    let committed_before: u64 = handles[0].shared().committed_transactions();
    let height_before = handles[0].status().height;
    let shared_handles = Arc::new(handles.to_vec());
    let counters = Arc::new(Counters::default());
    let submit = {
        let (handles, people, counters) = (shared_handles, people.clone(), counters.clone());
        move || submit_pair(handles.clone(), people.clone(), counters.clone(), settle)
    };
    let acknowledged = || counters.acknowledged.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
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
                    tasks.push(tokio::spawn(submit()));
                    sent += 1;
                }
                if last_progress.elapsed() >= Duration::from_millis(250) {
                    last_progress = Instant::now();
                    on_progress(started.elapsed(), acknowledged());
                }
            }
        }
        None => {
            for _ in 0..load.concurrency.max(1) {
                let submit = submit.clone();
                let duration = load.duration;
                tasks.push(tokio::spawn(async move {
                    while started.elapsed() < duration {
                        submit().await;
                    }
                }));
            }
            while started.elapsed() < load.duration {
                tokio::time::sleep(Duration::from_millis(250)).await;
                on_progress(started.elapsed(), acknowledged());
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let records = counters
        .records
        .lock()
        .map(|mut records| std::mem::take(&mut *records))
        .unwrap_or_default();
    for record in records {
        let _ = record.await;
    }
    let deadline = Instant::now() + settle;
    while handles.iter().any(|handle| handle.status().pending > 0) {
        if Instant::now() > deadline {
            return Err(NodeError::Timeout("acknowledged transactions to commit"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let committed = handles[0].shared().committed_transactions() - committed_before;
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.shared().latencies());
    }
    latencies.sort_unstable();
    let mut grant_latencies = counters
        .grant_latencies
        .lock()
        .map(|mut latencies| std::mem::take(&mut *latencies))
        .unwrap_or_default();
    grant_latencies.sort_unstable();
    let mut keys = crate::KeyCounters::default();
    for handle in handles {
        keys.add(&handle.key_status().counters);
    }
    Ok(LoadReport {
        acknowledged: acknowledged(),
        refused: counters.refused.load(Ordering::Relaxed),
        committed,
        elapsed,
        committed_per_second: committed as f64 / elapsed.as_secs_f64(),
        commit_latency_p50: percentile(&latencies, 50.0),
        commit_latency_p99: percentile(&latencies, 99.0),
        grant_latency_p50: percentile(&grant_latencies, 50.0),
        grant_latency_p99: percentile(&grant_latencies, 99.0),
        blocks: handles[0].status().height - height_before,
        keys,
    })
}

/// The `p`th percentile of `sorted`, zero when it is empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((p / 100.0) * sorted.len().saturating_sub(1) as f64).round() as usize)
        .copied()
        .unwrap_or_default()
}
