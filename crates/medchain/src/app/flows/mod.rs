//! The application's workflows: each local step (a password, a code, a reservation) paired
//! with the transaction that makes it real on chain, the signer that signs it and what it waits
//! for (docs/SECURITY.md, issue 9, §8). Handlers parse a request, call one flow and answer what
//! it returns; a flow's failure is one [`FlowError`], which the HTTP layer maps in one place.
//!
//! Who signs: a person's action is signed by their custodial key held here (the client signs
//! nothing: the seed's contract, scripts, the in-person screen), or by their device key, in
//! two steps: the flow keeps the envelope ([`Signing::NeedsSignature`]) and
//! [`Flows::sign_prepared`] brings the page's signature back. A hospital's own statement (an
//! enrollment, "I served this read") is signed by this validator's key. Content (a record, a
//! purpose) is sealed by this validator on the one signing path, after the signer is set and
//! before anything is signed or prepared (issue 10, §1.1, §5.5); the page is shown the content
//! it typed (`plain`) from the request, never from a store.
//!
//! What each waits for: *durable* (accepted and fsynced at this validator, ordered exactly once
//! from then on) where the chain cannot reject it later or a later rejection is harmless and
//! shown; *applied* (its block is on this validator's chain) where what is answered depends on
//! the chain's verdict: a code is drawn only for a grant that applied, a read (a doctor's or the
//! patient's own) is opened only once its access entry applied.

mod consent;
pub mod erasure;
mod identity;
mod records;
mod sealed;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger::rules::KeyRow;
use ledger::tx::{KeyKind, PurposeBody, RecordBody, Scope};
use ledger::{
    Meta, PersonId, PersonRow, PublicKey, Queries, Reader, SignedTx, Signer, TxHeader, TxId,
};
use node::{NodeError, NodeHandle, Verdict};
use zeroize::Zeroizing;

use super::custody::Custody;
use super::prepared::MAX_PREPARED_PER_ACCOUNT;
use super::{Account, AppDb, AppError, Clock, CodeError, Here, Role, new_header};

pub use crate::app::ask_code;
pub use consent::{Consent, GrantInfo, GrantKeys, InPersonGrant, PendingRequest, RequestGroup};
pub use identity::{AskView, IdentityView, KeyAdded, StartReport};
pub use records::{AccessView, AddedRecord, GrantRef, RecordInput, RecordView};
pub use sealed::{Readable, ReaderRole, date_of};

/// How long a flow that waits for its transaction's block waits (then 503).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub use ledger::tx::SIGNATURE_LIFE_MS;

/// How the acting person signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// With the custodial key their home holds (only at their home).
    Custodial,
    /// With this device key of theirs, through a prepared envelope.
    Device(PublicKey),
}

/// A flow's outcome: done, or waiting for a device signature.
#[derive(Debug)]
pub enum Signing<T> {
    Done(T),
    NeedsSignature(Box<PreparedView>),
}

impl<T> Signing<T> {
    /// The same outcome with what was done turned into `f`'s answer.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Signing<U> {
        match self {
            Signing::Done(done) => Signing::Done(f(done)),
            Signing::NeedsSignature(view) => Signing::NeedsSignature(view),
        }
    }
}

/// An envelope shown to the page for signing.
#[derive(Clone, Debug)]
pub struct PreparedView {
    pub id: String,
    /// `"medchain/tx/v2" || genesis_hash || borsh(header)`: what the device signs.
    pub signing_bytes: Vec<u8>,
    /// The kind, metadata and body (sealed, for a sealed kind), for the page to check
    /// against what the user clicked.
    pub meta: Meta,
    pub body: Vec<u8>,
    /// What a sealed body carries, as the person typed it: answered to the page from the
    /// request in memory, never stored (docs/SECURITY.md §1.2).
    pub plain: Content,
}

/// What a transaction carries: nothing, or content that is sealed (docs/SECURITY.md §1.1).
#[derive(Clone, Debug)]
pub enum Content {
    Empty,
    Record(RecordBody),
    Purpose(PurposeBody),
}

impl Content {
    /// The content's bytes (borsh), the plaintext of a sealed body; empty for none.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Content::Empty => Vec::new(),
            Content::Record(record) => record.to_bytes(),
            Content::Purpose(purpose) => purpose.to_bytes(),
        })
    }
}

/// What a prepared envelope does once signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// A record: reserves its grant, then durable.
    AddRecord,
    /// A grant: applied (its expiry is the block's time plus its length).
    Grant,
    /// Anything else the person signs: durable.
    Durable,
    /// A step whose answer depends on the chain's verdict (a link, a key): applied.
    Applied,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::AddRecord => "add_record",
            Action::Grant => "grant",
            Action::Durable => "durable",
            Action::Applied => "applied",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "add_record" => Action::AddRecord,
            "grant" => Action::Grant,
            "durable" => Action::Durable,
            "applied" => Action::Applied,
            _ => return None,
        })
    }
}

/// What a signed envelope did.
#[derive(Clone, Debug)]
pub enum Signed {
    Record(AddedRecord),
    Grant {
        grant: TxId,
        expires_ms: u64,
    },
    /// A remote request, durable here (answered as `POST /api/consents/request` answers).
    Requested {
        request: TxId,
    },
    Submitted {
        tx: TxId,
    },
}

/// Why a flow did not happen. Each variant is one answer of the API (mapped in
/// `http::error`).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// 403 `wrong_hospital`: a doctor acts only through their home's node.
    #[error("{person} works through {home}'s node")]
    NotHome { person: String, home: String },
    /// 403 `consent_elsewhere`: in-person consent is given at the patient's home.
    #[error(
        "{patient}'s in-person consent is given at {home} or approved on their device: send a remote request"
    )]
    ConsentElsewhere { patient: String, home: String },
    /// 403 `approve_on_device`: a remote approval needs the patient's device key.
    #[error("approve on your device, or in person at {home}")]
    ApproveOnDevice { home: String },
    /// 403 `approve_at_home`: a read approval away from the patient's home, or of a request
    /// whose purpose this hospital cannot open (docs/SECURITY.md §4.2, §16.15).
    #[error("approve this at your home hospital, {home}")]
    ApproveAtHome { home: String },
    /// 503: the person's enrollment (or link) is not on this validator's chain yet.
    #[error("not on chain yet")]
    NotOnChain,
    /// 403: the person is enrolled, but this hospital is neither their home nor linked.
    #[error(
        "login not linked yet: approve {} on your device or at {home}",
        code.as_ref().map_or("it".to_string(), |c| format!("code {c}"))
    )]
    NotLinkedHere { home: String, code: Option<String> },
    /// 403 `field: department`: a record is for the doctor's own department.
    #[error("department must be your own ({own})")]
    Department { own: String },
    /// 409: the code matches asks of two hospitals (one ground its ask to copy the other's
    /// code): neither is approved.
    #[error(
        "another hospital tried to take over this code ({}): ask for a new one",
        validators.join(", ")
    )]
    CodeCollision { validators: Vec<String> },
    /// 400 `blockchain_validation`, the seed's messages.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 403: not allowed (no live grant, a key that is not the person's, the chain refused a
    /// read).
    #[error("{0}")]
    Denied(String),
    /// 400: a malformed or unverifiable input (a signature that does not verify).
    #[error("{0}")]
    Invalid(String),
    /// 409: the chain (or admission, on the committed chain) rejected the transaction.
    #[error("{0}")]
    Rejected(String),
    /// 429: a cap of pending requests.
    #[error("{0}")]
    TooManyPending(String),
    /// 503: the step could not be completed now (nothing was answered that the chain did not
    /// confirm); retry.
    #[error("{0}")]
    Unavailable(String),
    /// 503 (busy, stopped, timed out), 413, 400, ...: the node's answer.
    #[error(transparent)]
    Node(NodeError),
    /// 500.
    #[error(transparent)]
    Store(#[from] AppError),
}

impl From<NodeError> for FlowError {
    fn from(e: NodeError) -> Self {
        use ledger::rules::reason;
        match e {
            NodeError::Refused(why)
                if why == reason::TOO_MANY_REQUESTS_DOCTOR
                    || why == reason::TOO_MANY_REQUESTS_HOSPITAL =>
            {
                FlowError::TooManyPending(why)
            }
            NodeError::Refused(why) => FlowError::Rejected(why),
            other => FlowError::Node(other),
        }
    }
}

impl From<ledger::Error> for FlowError {
    fn from(e: ledger::Error) -> Self {
        FlowError::Node(NodeError::Ledger(e))
    }
}

impl From<tokio::task::JoinError> for FlowError {
    fn from(e: tokio::task::JoinError) -> Self {
        FlowError::Store(AppError::Storage(format!("blocking task failed: {e}")))
    }
}

pub type FlowResult<T> = Result<T, FlowError>;

/// The workflows of one hospital: its application store, the custodial keys it holds, its
/// validator, and its clock.
pub struct Flows {
    app: Arc<AppDb>,
    custody: Arc<Custody>,
    node: NodeHandle,
    clock: Clock,
    here: Here,
    /// When the oldest transaction submitted here and not yet committed was submitted (ms),
    /// for the UI's countdown to the next block.
    pending_since: Mutex<Option<u64>>,
}

impl Flows {
    pub fn new(app: Arc<AppDb>, custody: Arc<Custody>, node: NodeHandle, clock: Clock) -> Self {
        let here = Here {
            genesis_hash: node.genesis_hash(),
            index: node.id(),
            validators: node.genesis().len() as u32,
        };
        Flows {
            app,
            custody,
            node,
            clock,
            here,
            pending_since: Mutex::new(None),
        }
    }

    pub fn app(&self) -> &Arc<AppDb> {
        &self.app
    }

    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    pub fn here(&self) -> &Here {
        &self.here
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The name of validator `index` (its hospital), or its number.
    pub fn hospital(&self, index: u32) -> String {
        self.node
            .genesis()
            .validators()
            .get(index as usize)
            .map_or_else(|| format!("validator {index}"), |v| v.name.clone())
    }

    /// When the oldest transaction submitted here and not yet in a block was submitted.
    pub fn pending_since(&self) -> Option<u64> {
        *self.pending_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the pending mark (nothing is pending any more).
    pub fn clear_pending(&self) {
        *self.pending_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn note_pending(&self) {
        self.pending_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(super::now_ms);
    }

    /// Runs a blocking application-store call off the async threads.
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppDb, &Custody) -> Result<T, AppError> + Send + 'static,
    ) -> FlowResult<T> {
        let app = self.app.clone();
        let custody = self.custody.clone();
        Ok(tokio::task::spawn_blocking(move || f(&app, &custody)).await??)
    }

    /// Runs a read of this validator's committed chain off the async threads.
    pub async fn chain<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Reader) -> ledger::Result<T> + Send + 'static,
    ) -> FlowResult<T> {
        let node = self.node.clone();
        Ok(tokio::task::spawn_blocking(move || node.read(query)).await??)
    }

    /// Submits `tx`; its id once durable here.
    async fn submit(&self, tx: SignedTx) -> FlowResult<TxId> {
        let id = self.node.submit(tx).await?;
        self.note_pending();
        Ok(id)
    }

    /// Submits `tx`, cuts a block and waits until it is applied here: its verdict.
    async fn submit_applied(&self, tx: SignedTx) -> FlowResult<Verdict> {
        Ok(self.node.submit_applied(tx, APPLY_TIMEOUT).await?)
    }

    /// Submits `tx` and waits until it is applied; a rejection is [`FlowError::Rejected`].
    /// Returns its id and its block's time.
    async fn submit_and_apply(&self, tx: SignedTx) -> FlowResult<(TxId, u64)> {
        let id = tx.id(&self.here.genesis_hash);
        match self.submit_applied(tx).await? {
            Verdict::Applied { block_time_ms, .. } => Ok((id, block_time_ms)),
            Verdict::Rejected { reason, .. } => Err(FlowError::Rejected(reason)),
        }
    }

    /// The person behind `account`, enrolled on this chain; [`FlowError::NotOnChain`] until
    /// its enrollment is applied here.
    async fn person_of(&self, account: &Account) -> FlowResult<PersonRow> {
        let person = account.person.ok_or(FlowError::NotOnChain)?;
        self.chain(move |r| r.person(&person))
            .await?
            .ok_or(FlowError::NotOnChain)
    }

    /// A doctor acting here: their person on chain, with this validator as their home.
    async fn home_doctor(&self, doctor: &Account) -> FlowResult<PersonRow> {
        if let Some(home) = doctor.home
            && home != self.here.index
        {
            return Err(FlowError::NotHome {
                person: doctor.id.clone(),
                home: self.hospital(home),
            });
        }
        let row = self.person_of(doctor).await?;
        if row.home != self.here.index || row.role != ledger::tx::Role::Doctor {
            return Err(FlowError::NotHome {
                person: doctor.id.clone(),
                home: self.hospital(row.home),
            });
        }
        Ok(row)
    }

    /// A patient served here: enrolled, and this validator is their home or linked.
    async fn served_patient(&self, patient: &Account) -> FlowResult<PersonRow> {
        let row = self.person_of(patient).await?;
        if row.role != ledger::tx::Role::Patient {
            return Err(FlowError::NotFound("No such patient".into()));
        }
        if row.home != self.here.index {
            let (person, me) = (row.person, self.here.index);
            let linked = self
                .chain(move |r| Ok(r.links_of(&person)?.iter().any(|l| l.validator == me)))
                .await?;
            if !linked {
                let login = patient.id.clone();
                let code = self
                    .store(move |app, _| {
                        Ok(app
                            .outbox()?
                            .into_iter()
                            .rfind(|r| r.kind == "ask" && r.account.as_deref() == Some(&login))
                            .map(|r| ask_code(&r.tx_id)))
                    })
                    .await?;
                return Err(FlowError::NotLinkedHere {
                    home: self.hospital(row.home),
                    code,
                });
            }
        }
        Ok(row)
    }

    /// A patient named by a client: a login at this hospital first, else 32 hex digits read
    /// as a person id. Returns the person and how to name them.
    async fn resolve_patient(&self, given: &str) -> FlowResult<Option<(PersonId, String)>> {
        let login = given.to_string();
        let account = self.store(move |app, _| app.account(&login)).await?;
        if let Some(account) = account {
            if account.role != Role::Patient {
                return Ok(None);
            }
            return Ok(account.person.map(|p| (p, account.id)));
        }
        Ok(parse_person(given).map(|p| (p, given.to_ascii_lowercase())))
    }

    /// The live custodial key this hospital holds for `person` (at `T = now`).
    async fn custodial_key(&self, person: PersonId) -> FlowResult<PublicKey> {
        let held = self
            .store(move |app, custody| custody.keys_of(app, &person))
            .await?;
        let now = self.now_ms();
        let keys = self.chain(move |r| r.keys_of(&person)).await?;
        held.into_iter()
            .find(|k| {
                keys.iter()
                    .any(|row| row.key == *k && row.kind == KeyKind::Custodial && row.live_at(now))
            })
            .ok_or_else(|| {
                FlowError::Denied(
                    "This hospital holds no live key for this person: approve on a device, or \
                     ask the home hospital to recover the identity"
                        .into(),
                )
            })
    }

    /// A device key of `person`, live on chain.
    async fn device_key(&self, person: PersonId, key: PublicKey) -> FlowResult<KeyRow> {
        let now = self.now_ms();
        let row = self.chain(move |r| r.key(&key)).await?;
        match row {
            Some(row)
                if row.person == person && row.kind == KeyKind::Device && row.live_at(now) =>
            {
                Ok(row)
            }
            _ => Err(FlowError::Denied(
                "This device key is not a live key of yours: add it first".into(),
            )),
        }
    }

    /// Signs `meta` with `content` as `person`, as `who` says: custodially now, or prepared
    /// for a device signature (kept for `account`'s session, to do `action` once signed). The
    /// one path every person's transaction takes: the header is fixed with its signer, a
    /// sealed kind's content is sealed by this validator (its key durable here before anything
    /// is signed, docs/SECURITY.md §1.1, §5.5), then it is signed or prepared.
    #[allow(clippy::too_many_arguments)]
    async fn sign_as(
        &self,
        account: &Account,
        person: PersonId,
        who: Who,
        action: Action,
        meta: Meta,
        content: Content,
    ) -> FlowResult<Signing<SignedTx>> {
        let now = self.now_ms();
        let mut header = new_header(meta, now, now.saturating_add(SIGNATURE_LIFE_MS));
        header.signer = match who {
            Who::Custodial => Signer::Custodial {
                person,
                key: self.custodial_key(person).await?,
            },
            Who::Device(key) => {
                self.device_key(person, key).await?;
                Signer::Device { person, key }
            }
        };
        // A device signature waits in an envelope: its slot is reserved before anything is
        // sealed, so one login cannot make the key service seal without bound (§5.3).
        let slot = match who {
            Who::Custodial => None,
            Who::Device(_) => {
                let (login, action) = (account.id.clone(), action.as_str());
                let reserved = self
                    .store(move |app, _| app.reserve_prepared(&login, action, now))
                    .await?;
                Some(reserved.ok_or_else(|| {
                    FlowError::TooManyPending(format!(
                        "{MAX_PREPARED_PER_ACCOUNT} actions already wait for your device's \
                         signature: sign them, or wait until they expire (10 minutes)"
                    ))
                })?)
            }
        };
        let (header, body) = match self.seal(header, &content).await {
            Ok(sealed) => sealed,
            Err(error) => {
                if let Some(id) = slot {
                    self.store(move |app, _| app.drop_prepared(&id)).await?;
                }
                return Err(error);
            }
        };
        match header.signer {
            Signer::Custodial { key, .. } => {
                let genesis = self.here.genesis_hash;
                let signed = self
                    .store(move |app, custody| {
                        custody.sign(app, &genesis, &person, &key, header, body)
                    })
                    .await?
                    .ok_or_else(|| {
                        FlowError::Denied("This hospital holds no key for this person".into())
                    })?;
                Ok(Signing::Done(signed))
            }
            _ => {
                let signing_bytes = header.signing_bytes(&self.here.genesis_hash);
                let (kept_header, kept_body) = (header.clone(), body.clone());
                let id = slot.ok_or_else(|| {
                    FlowError::Unavailable("a device signature without its envelope".into())
                })?;
                let kept_id = id.clone();
                // The sealed body and the header only: `plain` is answered from `content`,
                // in memory, and never stored (§1.2).
                self.store(move |app, _| app.fill_prepared(&kept_id, &kept_header, &kept_body))
                    .await?;
                Ok(Signing::NeedsSignature(Box::new(PreparedView {
                    id,
                    signing_bytes,
                    meta: header.meta,
                    body,
                    plain: content,
                })))
            }
        }
    }

    /// `header`'s body: a sealed kind's content sealed by this validator (which sets
    /// `body_hash`), any other kind's empty.
    async fn seal(&self, header: TxHeader, content: &Content) -> FlowResult<(TxHeader, Vec<u8>)> {
        let plain = content.to_bytes();
        if ledger::seal::is_sealed_kind(&header.meta) {
            return Ok(self.node.seal(header, &plain).await?);
        }
        if !plain.is_empty() {
            return Err(FlowError::Invalid(format!(
                "a {} carries no content",
                header.meta.kind()
            )));
        }
        let mut header = header;
        header.body_hash = ledger::sha256(&[]);
        Ok((header, Vec::new()))
    }

    /// `POST /api/sign/{id}`: the device signature of envelope `id`, prepared for `account`.
    /// Checks it, then submits as the action needs.
    pub async fn sign_prepared(
        &self,
        account: &Account,
        id: &str,
        signature: [u8; 64],
    ) -> FlowResult<Signed> {
        let (login, prepared_id, now) = (account.id.clone(), id.to_string(), self.now_ms());
        let prepared = self
            .store(move |app, _| app.prepared(&prepared_id, &login, now))
            .await?
            .ok_or_else(|| {
                FlowError::NotFound("No such envelope waiting for a signature".into())
            })?;
        let Signer::Device { key, .. } = prepared.header.signer else {
            return Err(FlowError::Invalid(
                "This envelope is not for a device".into(),
            ));
        };
        let tx = SignedTx {
            header: prepared.header,
            body: prepared.body,
            signature,
        };
        if !ledger::crypto::verify_signature_bytes(
            &key,
            &tx.signing_bytes(&self.here.genesis_hash),
            &signature,
        ) {
            return Err(FlowError::Invalid(
                "The signature does not verify under your device key".into(),
            ));
        }
        let action = Action::parse(&prepared.action)
            .ok_or_else(|| FlowError::Invalid("Unknown prepared action".into()))?;
        let outcome = match action {
            Action::AddRecord => {
                // The grant may have been used or revoked, or come near its end, meanwhile.
                if let Meta::AddRecord(record) = tx.meta() {
                    self.usable_write_grant(record.grant, record.patient, record.doctor)
                        .await?;
                }
                Signed::Record(self.submit_record(tx).await?)
            }
            Action::Grant => {
                let (grant, expires_ms) = self.submit_grant(tx).await?;
                Signed::Grant { grant, expires_ms }
            }
            Action::Durable if matches!(tx.meta(), Meta::RequestGrant(_)) => Signed::Requested {
                request: self.submit(tx).await?,
            },
            Action::Durable => Signed::Submitted {
                tx: self.submit(tx).await?,
            },
            Action::Applied => Signed::Submitted {
                tx: self.submit_and_apply(tx).await?.0,
            },
        };
        let id = prepared.id;
        self.store(move |app, _| app.drop_prepared(&id)).await?;
        Ok(outcome)
    }
}

/// 32 hex digits as a person id.
pub fn parse_person(text: &str) -> Option<PersonId> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(text.trim(), &mut id).ok()?;
    Some(id)
}

/// 64 hex digits as a transaction id.
pub fn parse_tx_id(text: &str) -> Option<TxId> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut id).ok()?;
    Some(id)
}

/// 64 hex digits as a public key.
pub fn parse_key(text: &str) -> Option<PublicKey> {
    parse_tx_id(text)
}

/// The expiry of a grant of `scope` applied at `block_time_ms`.
pub fn grant_expiry(scope: Scope, block_time_ms: u64) -> u64 {
    block_time_ms.saturating_add(match scope {
        Scope::Write => ledger::rules::WRITE_GRANT_MS,
        Scope::Read { duration_ms } => duration_ms,
    })
}
