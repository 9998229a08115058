//! `medchain bench --mode http`: the seed's flow over HTTP with remote consent. Each validator
//! serves its hospital's API on loopback; its doctors and patients are enrolled there (as
//! `medchain user add` does) and sign in over HTTP; then many clients, each a doctor's and a
//! patient's kept-alive connection, run records one after another, each three steps of the API:
//! the doctor's consent request (`/api/consents/request`), the patient's approval with their
//! device key (`/api/consents/{id}/approve`, then `/api/sign/{preparedId}`: the API signs a
//! remote approval only on a device) and the doctor's `/api/add_record` under the grant.
//!
//! A client learns that its request is on chain from its hospital's validator (as a
//! notification would tell the patient's phone), not by polling; a record counts as committed
//! when the doctor's validator has applied the block that holds it, and at the end every
//! acknowledged transaction is looked for in the run's blocks (`lost`).

mod client;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::StatusCode;
use ed25519_dalek::{Signer, SigningKey};
use indicatif::ProgressBar;
use ledger::TxId;
use medchain::app::flows::{Flows, parse_tx_id};
use medchain::app::{NewAccount, Role};
use medchain::http::{AppState, Chain, Settings};
use node::load::{Percentiles, Second, Series};
use node::{NodeHandle, Verdict};
use rand::RngCore;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use super::super::service;
use super::usage::{Meter, Process, Used};
use client::Connection;

/// Clients that share one doctor (each with its own connection, as tabs of one browser).
const CLIENTS_PER_DOCTOR: usize = 4;

/// What a client waits before starting its flow again after a refusal.
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// How to load the hospitals' APIs.
#[derive(Clone, Debug)]
pub struct HttpLoad {
    /// Clients in all, spread over the hospitals.
    pub clients: usize,
    pub duration: Duration,
    pub batch_window: Duration,
    /// How long acknowledged transactions may take to commit once the load stops.
    pub settle: Duration,
}

/// What a run over HTTP found.
#[derive(Debug, Default)]
pub struct HttpReport {
    pub clients: usize,
    /// Records `add_record` acknowledged (200: durable at the doctor's hospital).
    pub records_acknowledged: u64,
    /// Of them, those applied on chain at the doctor's validator.
    pub records_committed: u64,
    /// Acknowledged records in no block of the run.
    pub records_lost: u64,
    /// Every transaction the clients' requests made (requests, grants, records) and were
    /// acknowledged for.
    pub acknowledged: u64,
    /// Entries of the run's blocks at the first validator.
    pub committed: u64,
    /// Acknowledged transactions in no block of the run.
    pub lost: u64,
    /// Flows that a refusal or an error cut short, by what the API answered.
    pub refusals: BTreeMap<String, u64>,
    /// Transactions committed in the run's blocks that no answer acknowledged, by kind: a
    /// step answered with a refusal or an error whose transaction still committed.
    pub unacknowledged: BTreeMap<&'static str, u64>,
    /// From the first request to the last commit.
    pub elapsed: Duration,
    /// A record from `add_record`'s answer to applied at the doctor's validator.
    pub record_latency: Percentiles,
    /// A record's whole flow: from the doctor's consent request to the record applied.
    pub flow_latency: Percentiles,
    /// Records committed, and the p99 of their latency, second by second.
    pub series: Vec<Second>,
    pub blocks: u64,
    pub tx_bytes: f64,
}

/// One hospital's API as the bench serves it.
struct Hospital {
    index: u32,
    addr: SocketAddr,
    validator: NodeHandle,
    flows: Arc<Flows>,
}

/// Starts the embedded cluster of `options`, serves each validator's API, and runs `load`
/// against them; what the run found, and what this process used from the first request to
/// the last commit.
pub fn run(
    dir: &Path,
    options: node::ClusterOptions,
    load: &HttpLoad,
    bar: &ProgressBar,
) -> anyhow::Result<(HttpReport, Used)> {
    let cluster = node::Cluster::start(options)?;
    let runtime = service::runtime()?;
    let handles = cluster.handles();
    let result = runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut hospitals = Vec::new();
        let mut servers = JoinSet::new();
        for handle in &handles {
            let key = cluster
                .operator_key(handle.id())
                .context("a validator without its operator key")?;
            let dir = node::validator_dir(dir, handle.name());
            let (app, custody) = service::open_app(&dir, key)?;
            let clock = cluster.clock().clone();
            let flows =
                service::start_flows(app, custody, handle.clone(), clock.clone(), false, false)
                    .await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let chain = Chain::new(handle.clone(), handles.clone(), load.batch_window);
            let state = AppState::new(flows.clone(), chain, settings(load, handles.len()), clock);
            let mut stopped = stopped.clone();
            servers.spawn(medchain::http::serve(listener, state, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
            hospitals.push(Hospital {
                index: handle.id(),
                addr,
                validator: handle.clone(),
                flows,
            });
        }
        let measured = measure(&hospitals, &handles, load, bar, dir).await;
        let _ = stop.send(true);
        while servers.join_next().await.is_some() {}
        measured
    });
    drop(runtime);
    let mut cluster = cluster;
    cluster.shutdown();
    result
}

/// The bench's HTTP settings: the defaults, but for the connections one client address may
/// hold. All the bench's clients come from 127.0.0.1, as a hospital's front end behind one
/// address does: the per-client share (an eighth of the cap by default, against one network
/// taking every connection) is set to what they open, with the documented setting
/// (`--max-connections-per-client`, node.toml's `http.max_connections_per_client`).
fn settings(load: &HttpLoad, hospitals: usize) -> Settings {
    // Each client holds two connections (the doctor's and the patient's) at its hospital;
    // set-up opens one more per doctor.
    let per_hospital = 2 * load.clients.div_ceil(hospitals.max(1)) + load.clients;
    let mut limits = node::ConnectionLimits::default();
    limits.max_connections = limits.max_connections.max(per_hospital);
    limits.max_connections_per_client = Some(per_hospital);
    Settings {
        limits,
        ..Settings::default()
    }
}

/// A password of the run's: random, long enough for the password rules.
fn password() -> Zeroizing<String> {
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Zeroizing::new(hex::encode(bytes))
}

/// One client: a doctor's connection and their patient's, the patient's device key.
struct Client {
    doctor: Connection,
    patient: Connection,
    patient_id: String,
    device: SigningKey,
    genesis: [u8; 32],
    validator: NodeHandle,
}

/// Enrolls each hospital's people, signs them in over HTTP and adds each patient's device key;
/// the clients.
async fn populate(hospitals: &[Hospital], clients: usize) -> anyhow::Result<Vec<Client>> {
    let per_hospital = clients.div_ceil(hospitals.len().max(1)).max(1);
    let mut all = Vec::new();
    for hospital in hospitals {
        let doctors = per_hospital.div_ceil(CLIENTS_PER_DOCTOR);
        let i = hospital.index;
        let people: Vec<(String, Role)> = (0..doctors)
            .map(|k| (format!("d{i}-{k}"), Role::Doctor))
            .chain((0..per_hospital).map(|j| (format!("p{i}-{j}"), Role::Patient)))
            .collect();
        let mut passwords = BTreeMap::new();
        let mut enrolling = JoinSet::new();
        for (id, role) in people {
            let secret = password();
            passwords.insert(id.clone(), secret.clone());
            let flows = hospital.flows.clone();
            enrolling.spawn(async move {
                let doctor = role == Role::Doctor;
                flows
                    .enroll(NewAccount {
                        id,
                        role,
                        department: doctor.then(|| "Cardiology".to_string()),
                        name: doctor.then(|| "Dr Bench".to_string()),
                        password: secret,
                    })
                    .await
            });
        }
        while let Some(enrolled) = enrolling.join_next().await {
            enrolled??;
        }
        anyhow::ensure!(
            hospital
                .flows
                .settle_outbox(Duration::from_secs(60))
                .await?,
            "the enrollments at {} did not reach the chain in a minute",
            hospital.validator.name()
        );
        let mut signed_in = Vec::new();
        for k in 0..doctors {
            let id = format!("d{i}-{k}");
            signed_in.push(login(hospital.addr, "doctor", &id, &passwords[&id]).await?);
        }
        let (status, blocks) = signed_in[0].get("/api/blocks?before=1&limit=1").await?;
        let genesis: [u8; 32] = blocks["blocks"][0]["hash"]
            .as_str()
            .and_then(parse_tx_id)
            .with_context(|| format!("no genesis block shown ({status}): {blocks}"))?;
        let mut setting_up = JoinSet::new();
        for j in 0..per_hospital {
            let doctor = signed_in[j / CLIENTS_PER_DOCTOR].another().await?;
            let (addr, validator) = (hospital.addr, hospital.validator.clone());
            let patient_id = format!("p{i}-{j}");
            let secret = passwords[&patient_id].clone();
            setting_up.spawn(async move {
                let mut patient = login(addr, "patient", &patient_id, &secret).await?;
                let device = add_device(&mut patient, &genesis, i).await?;
                anyhow::Ok(Client {
                    doctor,
                    patient,
                    patient_id,
                    device,
                    genesis,
                    validator,
                })
            });
        }
        while let Some(client) = setting_up.join_next().await {
            all.push(client??);
        }
    }
    Ok(all)
}

/// A connection to `addr` signed in as `id`.
async fn login(
    addr: SocketAddr,
    role: &str,
    id: &str,
    password: &str,
) -> anyhow::Result<Connection> {
    let mut connection = Connection::open(addr).await?;
    let field = if role == "doctor" {
        "doctorId"
    } else {
        "patientId"
    };
    let (status, answer) = connection
        .post(
            "/api/login",
            &json!({"role": role, field: id, "password": password}),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::OK, "login of {id}: {status} {answer}");
    Ok(connection)
}

/// Makes a device key for the patient signed in on `patient`, as their page does, and adds it
/// at their home (`origin`): the key.
async fn add_device(
    patient: &mut Connection,
    genesis: &[u8; 32],
    origin: u32,
) -> anyhow::Result<SigningKey> {
    let (status, identity) = patient.get("/api/identity").await?;
    let person: [u8; 16] = identity["personId"]
        .as_str()
        .and_then(|hex| hex::decode(hex).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("no person id ({status}): {identity}"))?;
    let device = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = device.verifying_key().to_bytes();
    let pop = device.sign(&ledger::key_pop_bytes(
        genesis,
        &person,
        &public,
        ledger::tx::KeyKind::Device,
        origin,
    ));
    let (status, answer) = patient
        .post(
            "/api/keys",
            &json!({
                "publicKey": hex::encode(public),
                "pop": hex::encode(pop.to_bytes()),
                "label": "web browser",
            }),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK && answer["status"] == "added",
        "adding a device key: {status} {answer}"
    );
    Ok(device)
}

/// What the clients count, shared between their tasks.
#[derive(Default)]
struct Counters {
    records_acknowledged: AtomicU64,
    /// Every transaction acknowledged: requests, grants and records.
    acknowledged: Mutex<HashSet<TxId>>,
    records: Mutex<HashSet<TxId>>,
    refusals: Mutex<BTreeMap<String, u64>>,
    /// Per committed record: when it was applied (from the start), its latency from
    /// acknowledgement, and its whole flow's.
    commits: Mutex<Vec<(Duration, Duration, Duration)>>,
    /// The tasks waiting for records to commit.
    waiting: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Counters {
    fn acknowledge(&self, id: TxId) {
        if let Ok(mut ids) = self.acknowledged.lock() {
            ids.insert(id);
        }
    }

    fn refused(&self, step: &str, status: StatusCode, answer: &Value) {
        let why = format!(
            "{step}: {} {}",
            status.as_u16(),
            answer["message"].as_str().unwrap_or("")
        );
        if let Ok(mut refusals) = self.refusals.lock() {
            *refusals.entry(why).or_default() += 1;
        }
    }
}

/// The transaction id at `pointer` in an answer.
fn id_in(answer: &Value, pointer: &str) -> Option<TxId> {
    answer
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(parse_tx_id)
}

impl Client {
    /// Runs records one after another until `until`.
    async fn run(
        mut self,
        started: Instant,
        until: Instant,
        settle: Duration,
        counters: Arc<Counters>,
    ) {
        let mut i = 0u64;
        while Instant::now() < until {
            i += 1;
            if let Err(error) = self.record(i, started, settle, &counters).await {
                counters.refused(
                    "error",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"message": error.to_string()}),
                );
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }

    /// One record's flow: request, approval on the device, `add_record`. A refusal is counted
    /// and ends the flow.
    async fn record(
        &mut self,
        i: u64,
        started: Instant,
        settle: Duration,
        counters: &Arc<Counters>,
    ) -> anyhow::Result<()> {
        let flow_started = Instant::now();
        let (status, answer) = self
            .doctor
            .post(
                "/api/consents/request",
                &json!({"patientId": self.patient_id, "purpose": "Follow-up", "scope": "write"}),
            )
            .await?;
        let Some(request) = id_in(&answer, "/consent/id").filter(|_| status == StatusCode::OK)
        else {
            counters.refused("request", status, &answer);
            tokio::time::sleep(RETRY_AFTER).await;
            return Ok(());
        };
        counters.acknowledge(request);
        // The patient's phone is told once the request is on chain at their hospital.
        match self.validator.wait_applied(request, settle).await {
            Ok(Verdict::Applied { .. }) => {}
            other => anyhow::bail!("the request did not apply: {other:?}"),
        }
        let device_key = hex::encode(self.device.verifying_key().to_bytes());
        let (status, answer) = self
            .patient
            .post(
                &format!("/api/consents/{}/approve", hex::encode(request)),
                &json!({"devicePublicKey": device_key}),
            )
            .await?;
        if status != StatusCode::ACCEPTED {
            counters.refused("approve", status, &answer);
            tokio::time::sleep(RETRY_AFTER).await;
            return Ok(());
        }
        // What a page checks before it signs: the envelope's tag and this chain.
        let signing = answer["signingBytes"]
            .as_str()
            .and_then(|hex| hex::decode(hex).ok())
            .context("no signingBytes")?;
        anyhow::ensure!(
            signing.starts_with(b"medchain/tx/v2")
                && signing.get(14..46) == Some(&self.genesis[..]),
            "an envelope for another chain"
        );
        let prepared = answer["preparedId"].as_str().context("no preparedId")?;
        let signature = self.device.sign(&signing);
        let (status, answer) = self
            .patient
            .post(
                &format!("/api/sign/{prepared}"),
                &json!({"signature": hex::encode(signature.to_bytes())}),
            )
            .await?;
        let Some(grant) = id_in(&answer, "/grantTxId").filter(|_| status == StatusCode::OK) else {
            counters.refused("sign", status, &answer);
            tokio::time::sleep(RETRY_AFTER).await;
            return Ok(());
        };
        counters.acknowledge(grant);
        let record = node::load::sample_record(i);
        let (status, answer) = self
            .doctor
            .post(
                "/api/add_record",
                &json!({
                    "patientId": self.patient_id,
                    "grantId": hex::encode(grant),
                    "medical_data": {
                        "diagnosis": record.diagnosis,
                        "prescription": record.prescription,
                        "notes": record.notes,
                    },
                }),
            )
            .await?;
        let Some(tx) = id_in(&answer, "/txId").filter(|_| status == StatusCode::OK) else {
            counters.refused("add_record", status, &answer);
            tokio::time::sleep(RETRY_AFTER).await;
            return Ok(());
        };
        let acknowledged_at = Instant::now();
        counters.acknowledge(tx);
        counters
            .records_acknowledged
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut records) = counters.records.lock() {
            records.insert(tx);
        }
        let (validator, counters_for_wait) = (self.validator.clone(), counters.clone());
        let waiting = tokio::spawn(async move {
            if let Ok(Verdict::Applied { .. }) = validator.wait_applied(tx, settle).await
                && let Ok(mut commits) = counters_for_wait.commits.lock()
            {
                commits.push((
                    started.elapsed(),
                    acknowledged_at.elapsed(),
                    flow_started.elapsed(),
                ));
            }
        });
        if let Ok(mut tasks) = counters.waiting.lock() {
            tasks.push(waiting);
        }
        Ok(())
    }
}

/// Populates the hospitals, runs the clients for the load's duration, waits for what they
/// were acknowledged to commit, and audits the run's blocks at the first validator; what this
/// process, and the disk holding `data_dir`, used meanwhile.
async fn measure(
    hospitals: &[Hospital],
    handles: &[NodeHandle],
    load: &HttpLoad,
    bar: &ProgressBar,
    data_dir: &Path,
) -> anyhow::Result<(HttpReport, Used)> {
    bar.set_message("enrolling and signing in");
    let setting_up = Instant::now();
    let clients = populate(hospitals, load.clients).await?;
    bar.suspend(|| {
        println!(
            "{} clients enrolled, signed in and with a device key each in {:.1} s; measuring",
            clients.len(),
            setting_up.elapsed().as_secs_f64()
        )
    });
    let first = &handles[0];
    // The run's blocks start after every enrollment and device key, at every validator (from
    // the stored heads: a device key's block once began the run, read from the statuses).
    let set_up = node::load::highest_stored_head(handles)?;
    wait_for_height(first, set_up, load.settle).await?;
    let height_before = first.status().height;
    Process::This.reset_peak_rss();
    let meter = Meter::start(vec![Process::This], data_dir);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let until = started + load.duration;
    let client_count = clients.len();
    let mut running = JoinSet::new();
    for client in clients {
        running.spawn(client.run(started, until, load.settle, counters.clone()));
    }
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{} records acknowledged",
            counters.records_acknowledged.load(Ordering::Relaxed)
        ));
    }
    while running.join_next().await.is_some() {}
    let waiting = counters
        .waiting
        .lock()
        .map(|mut tasks| std::mem::take(&mut *tasks))
        .unwrap_or_default();
    for task in waiting {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let used = meter.used();
    let take = |set: &Mutex<HashSet<TxId>>| {
        set.lock()
            .map(|mut ids| std::mem::take(&mut *ids))
            .unwrap_or_default()
    };
    let (acknowledged, records) = (take(&counters.acknowledged), take(&counters.records));
    let acknowledged_count = acknowledged.len() as u64;
    // Lost: acknowledged and not committed within the settling time. A record whose client
    // stopped waiting (its own settle) may commit a block after the furthest head seen here.
    let settled_by = Instant::now() + load.settle;
    let (audit, height) = loop {
        let height = handles.iter().map(|h| h.status().height).max().unwrap_or(0);
        wait_for_height(first, height, load.settle).await?;
        let (first_for_audit, acknowledged) = (first.clone(), acknowledged.clone());
        let audit = tokio::task::spawn_blocking(move || {
            node::load::audit(&first_for_audit, height_before + 1, height, acknowledged)
        })
        .await??;
        if audit.missing.is_empty() || Instant::now() >= settled_by {
            break (audit, height);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Counted in the audited blocks, not read from the validator's counter after them: a step
    // cut short whose transaction commits in a block past `height` would be in the counter and
    // in no figure of the audit (red team s44).
    let committed = audit.entries;
    let mut commits = counters
        .commits
        .lock()
        .map(|mut commits| std::mem::take(&mut *commits))
        .unwrap_or_default();
    commits.sort_unstable();
    let mut series = Series::default();
    let mut flows = Vec::with_capacity(commits.len());
    for (at, latency, flow) in &commits {
        series.add(*at, 1, &[*latency]);
        flows.push(*flow);
    }
    let (series, record_latency) = series.finish(elapsed);
    Ok((
        HttpReport {
            clients: client_count,
            records_acknowledged: records.len() as u64,
            records_committed: commits.len() as u64,
            records_lost: records.intersection(&audit.missing).count() as u64,
            acknowledged: acknowledged_count,
            committed,
            lost: audit.missing.len() as u64,
            refusals: counters
                .refusals
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
            unacknowledged: audit.unacknowledged,
            elapsed,
            record_latency,
            flow_latency: Percentiles::of(&mut flows),
            series,
            blocks: height - height_before,
            tx_bytes: audit.mean_tx_bytes,
        },
        used,
    ))
}

/// Waits (at most `timeout`) until `handle`'s chain is `height` high.
async fn wait_for_height(
    handle: &NodeHandle,
    height: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while handle.status().height < height {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not reach height {height} in {timeout:?}",
            handle.name()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The figures of a run over HTTP that the table does not show.
pub fn print(found: &HttpReport) {
    println!(
        "{} clients; {} blocks; {} transactions acknowledged ({} records)",
        found.clients, found.blocks, found.acknowledged, found.records_acknowledged
    );
    for (why, count) in &found.refusals {
        println!("cut short {count} times: {why}");
    }
    for (kind, count) in &found.unacknowledged {
        println!("committed without an acknowledgement: {count} {kind}");
    }
}
