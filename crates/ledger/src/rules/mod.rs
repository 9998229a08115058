//! The replicated state machine: which transactions of a committed block apply, and what they
//! change (docs/SECURITY.md, "Identities, keys and consent on chain", §3 and §8).
//!
//! Every validator, and `medchain verify`, decides the same, because a decision depends only
//! on the transaction's metadata and signer, the block time `T` and the chain before it
//! (earlier transactions of the same block included). A transaction that breaks a rule stays in
//! its block (the block is what was agreed) and is stored with its reason ([`Reject`]); it never
//! becomes a person, key, grant, record or access entry.
//!
//! [`decide`] runs the checks common to every kind, then the kind's [`Rule`]. Each rule lives
//! beside the others of its family (`identity.rs`, `consent.rs`, `records.rs`) and declares
//! what it reads ([`Rule::reads`]) next to what it decides; the rule tests run every rule over a
//! [`StateView`] that fails on a read not declared. The state is read through one [`StateView`]
//! over the block's SQLite write transaction, and a decision's [`Effect`]s are written by the
//! store's one `apply`, so the next transaction of the block sees them.
use crate::genesis::ChainParams;
use crate::tx::{
    AskWhat, Attested, Decision, KeyKind, Meta, NewKey, PersonId, PublicKey, Role, Scope, Signer,
    SignerKind, TxHeader, TxId,
};
use crate::{Error, Result};

/// Returns the rejection from a rule's `decide` if `$e` is one.
macro_rules! check {
    ($e:expr) => {
        if let Err(reject) = $e {
            return Ok(Err(reject));
        }
    };
}

mod consent;
mod erasure;
mod identity;
pub mod reason;
mod records;
#[cfg(test)]
mod tests;

/// A write grant allows one record within 5 minutes of its block (the seed's OTP life).
pub const WRITE_GRANT_MS: u64 = 300_000;
/// The shortest read grant: one minute.
pub const READ_GRANT_MIN_MS: u64 = 60_000;
/// The longest read grant: 30 days.
pub const READ_GRANT_MAX_MS: u64 = 30 * 24 * 3_600_000;
/// A remote request is pending for 15 minutes.
pub const REQUEST_MS: u64 = 900_000;
/// An ask is pending for 10 minutes.
pub const ASK_MS: u64 = 600_000;
/// Pending requests from one doctor to one patient, at most.
pub const MAX_PENDING_PER_DOCTOR: usize = 3;
/// Pending requests from one hospital's doctors to one patient, at most: a hospital flooding a
/// patient with fake doctors fills only its own share.
pub const MAX_PENDING_PER_HOSPITAL: usize = 10;
/// Pending asks from one validator for one person, at most.
pub const MAX_PENDING_ASKS: usize = 2;
/// Unrevoked keys of one person, at most.
pub const MAX_KEYS: usize = 8;
/// The longest key label, department or doctor's name, in characters.
pub const MAX_TEXT_CHARS: usize = 64;

/// What a rule decides a transaction by, besides the state.
#[derive(Clone, Debug)]
pub struct Ctx<'a> {
    /// The transaction's id.
    pub id: TxId,
    pub header: &'a TxHeader,
    /// `T`: the time of the block holding the transaction (for a precheck, the clock).
    pub block_time_ms: u64,
    /// The height of that block (0 for a precheck).
    pub height: u64,
    /// The number of validators in the genesis.
    pub validators: u32,
    pub params: &'a ChainParams,
    /// The signer's key row, as the common checks read it ([`signer_key`] reads it again
    /// otherwise): the state does not change while one transaction is decided.
    signer_row: std::cell::OnceCell<KeyRow>,
}

impl<'a> Ctx<'a> {
    /// The context of transaction `id` with `header`, in the block at `height` with time
    /// `block_time_ms`, on the chain `genesis` starts.
    pub fn new(
        id: TxId,
        header: &'a TxHeader,
        block_time_ms: u64,
        height: u64,
        genesis: &'a crate::Genesis,
    ) -> Self {
        Ctx {
            id,
            header,
            block_time_ms,
            height,
            validators: genesis.len() as u32,
            params: genesis.params(),
            signer_row: std::cell::OnceCell::new(),
        }
    }
}

/// Decides `tx` as if it were in a block at time `now_ms` on top of the committed state
/// `state` (a [`crate::Queries::state`]): the admission check of a node's mempool and the
/// precheck of the application's flows. The chain may still decide otherwise if something is
/// ordered before it (a revocation, an expiry).
pub fn precheck(
    state: &dyn StateView,
    genesis: &crate::Genesis,
    tx: &crate::SignedTx,
    now_ms: u64,
) -> Result<Outcome> {
    let ctx = Ctx::new(tx.id(&genesis.hash()), &tx.header, now_ms, 0, genesis);
    decide(&ctx, state)
}

/// Why a transaction does not apply: one of the constants of [`reason`], stored in the entry's
/// `rejected` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject(pub &'static str);

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A rule's decision: the effects of an applied transaction, or why it is rejected.
pub type Outcome = std::result::Result<Vec<Effect>, Reject>;

/// Rejects with `reason` unless `condition` holds.
pub(crate) fn ensure(condition: bool, reason: &'static str) -> std::result::Result<(), Reject> {
    if condition {
        Ok(())
    } else {
        Err(Reject(reason))
    }
}

/// A person as enrolled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonRow {
    pub person: PersonId,
    pub role: Role,
    pub department: Option<String>,
    /// A doctor's public name.
    pub name: Option<String>,
    pub home: u32,
    /// The `Enroll` transaction.
    pub enrolled: TxId,
}

/// A key of a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub key: PublicKey,
    pub person: PersonId,
    pub kind: KeyKind,
    pub label: String,
    /// A custodial key: the home that holds it. A device key: the validator whose page made it
    /// (the asking validator's, or the home's).
    pub origin: u32,
    /// The transaction that added it (`Enroll`, `AddKey` or `Recover`).
    pub added: TxId,
    /// Who signed that transaction: the home's validator, a device or a custodial key.
    pub added_by: SignerKind,
    /// The block time of that transaction.
    pub added_ms: u64,
    /// A key added by an `AddKey` whose signer could not itself share the history with
    /// another hospital (the custodial key, i.e. a password at the home; a key made at another
    /// hospital's page; a young key) is **young** until this time: it signs no read grant to a
    /// doctor of another hospital and no erasure request, and revokes only itself and other
    /// young keys, before (docs/SECURITY.md, "Confidential records", §4.2). 0 for a key that
    /// never was young.
    pub young_until_ms: u64,
    /// 0, or the time its recovery takes effect: it signs nothing before.
    pub active_from_ms: u64,
    /// The `RevokeKey` that revoked it, or for a young key the `Recover` that did.
    pub revoked: Option<TxId>,
    /// The `Recover` that added it.
    pub recovery: Option<TxId>,
}

impl KeyRow {
    /// Not revoked, and past its recovery wait.
    pub fn live_at(&self, t_ms: u64) -> bool {
        self.revoked.is_none() && self.active_from_ms <= t_ms
    }

    /// Still waiting, at `t_ms`, before it may share the person's history with another
    /// hospital (see [`KeyRow::young_until_ms`]).
    pub fn young_at(&self, t_ms: u64) -> bool {
        t_ms < self.young_until_ms
    }

    /// Could sign, at `t_ms`, a read grant to a doctor of any hospital for a person whose home
    /// is `home`: a device key made at the home's page, past its wait (the `Grant` rule's
    /// checks). Only such a key vouches for a new key that is not young.
    pub fn shares_history_at(&self, home: u32, t_ms: u64) -> bool {
        self.kind == KeyKind::Device && self.origin == home && !self.young_at(t_ms)
    }

    /// Could revoke, at `t_ms`, any key of a person whose home is `home` (a key of the home's
    /// origin past its wait): what a person keeps while one of their keys is young.
    pub fn cancels_young_keys_at(&self, home: u32, t_ms: u64) -> bool {
        self.live_at(t_ms) && self.origin == home && !self.young_at(t_ms)
    }
}

/// Validator `validator` may serve `person`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRow {
    pub person: PersonId,
    pub validator: u32,
    /// The `Link` transaction.
    pub tx: TxId,
}

/// A validator's ask for the person's approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AskRow {
    pub id: TxId,
    pub person: PersonId,
    /// The asking validator.
    pub validator: u32,
    pub what: AskWhat,
    pub expires_ms: u64,
    /// The `Link` or `AddKey` that answered it.
    pub answered: Option<TxId>,
}

impl AskRow {
    pub fn pending_at(&self, t_ms: u64) -> bool {
        self.answered.is_none() && t_ms < self.expires_ms
    }
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Granted,
    Denied,
}

/// A doctor's request to a patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRow {
    pub id: TxId,
    pub patient: PersonId,
    pub doctor: PersonId,
    /// The doctor's home: the requesting hospital.
    pub doctor_home: u32,
    pub scope: Scope,
    /// The block time of the request.
    pub created_ms: u64,
    pub expires_ms: u64,
    pub answered: Option<(TxId, Answer)>,
}

impl RequestRow {
    pub fn pending_at(&self, t_ms: u64) -> bool {
        self.answered.is_none() && t_ms < self.expires_ms
    }
}

/// A patient's grant to a doctor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRow {
    pub id: TxId,
    pub patient: PersonId,
    pub doctor: PersonId,
    pub scope: Scope,
    pub attested: Attested,
    /// The request it answered.
    pub request: Option<TxId>,
    /// The block time of the grant.
    pub granted_ms: u64,
    pub expires_ms: u64,
    /// The validator that sealed it: the origin of the patient's signing key (the home for a
    /// custodial key; the page that made a device key).
    pub sealer: u32,
    /// The `AddRecord` that used it (write grants).
    pub used: Option<TxId>,
    /// The `Revoke` that revoked it.
    pub revoked: Option<TxId>,
}

impl GrantRow {
    /// Not used, not revoked, not expired.
    pub fn live_at(&self, t_ms: u64) -> bool {
        self.used.is_none() && self.revoked.is_none() && t_ms < self.expires_ms
    }
}

/// A recovery started by a person's home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryRow {
    pub id: TxId,
    pub person: PersonId,
    /// The key it adds.
    pub key: PublicKey,
    /// When the key may sign.
    pub effective_ms: u64,
    /// The `RevokeKey` that cancelled it (by revoking its key).
    pub cancelled: Option<TxId>,
}

impl RecoveryRow {
    pub fn pending_at(&self, t_ms: u64) -> bool {
        self.cancelled.is_none() && t_ms < self.effective_ms
    }
}

/// An applied transaction of a sealed kind (`AddRecord`, `RequestGrant`, `Grant`), as an
/// erasure request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRow {
    pub id: TxId,
    pub patient: PersonId,
    /// The validator that sealed it, which answers an erasure of it: the origin of its signing
    /// key (for a record or a request, the doctor's home).
    pub sealer: u32,
}

/// A patient's request to erase a sealed transaction, and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureRow {
    /// The `RequestErasure`.
    pub id: TxId,
    pub patient: PersonId,
    /// The sealed transaction to erase.
    pub target: TxId,
    /// The hospital that answers: the target's sealer.
    pub hospital: u32,
    /// How the request was signed: in person at the home (custodial) or on the patient's
    /// device.
    pub requested_by: SignerKind,
    /// The block time of the request.
    pub requested_ms: u64,
    pub answer: Option<ErasureAnswer>,
}

/// The `AnswerErasure` of an erasure request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureAnswer {
    pub tx: TxId,
    /// Its block time: when the target was erased, or refused.
    pub block_time_ms: u64,
    pub decision: Decision,
}

impl ErasureRow {
    /// Not answered yet (a request has no expiry).
    pub fn pending(&self) -> bool {
        self.answer.is_none()
    }

    /// The answer that erased the target, if it was erased.
    pub fn erased(&self) -> Option<&ErasureAnswer> {
        self.answer
            .as_ref()
            .filter(|a| a.decision == Decision::Erase)
    }
}

/// One read a rule may make: what [`Rule::reads`] declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Person(PersonId),
    Key(PublicKey),
    KeysOf(PersonId),
    Link(PersonId, u32),
    Ask(TxId),
    PendingAsks(PersonId, u32),
    Request(TxId),
    PendingRequests { doctor: PersonId, patient: PersonId },
    PendingRequestsFromHospitalOf { doctor: PersonId, patient: PersonId },
    Grant(TxId),
    PendingRecovery(PersonId),
    Sealed(TxId),
    Erasure(TxId),
    ErasureOf(TxId),
}

/// Reads over the chain's state, as of the transaction being decided.
pub trait StateView {
    /// Whether an entry with this id is already on chain (or earlier in the block):
    /// `created_ms` is that of the header the id is the hash of.
    fn seen(&self, id: &TxId, created_ms: u64) -> Result<bool>;
    fn person(&self, person: &PersonId) -> Result<Option<PersonRow>>;
    fn key(&self, key: &PublicKey) -> Result<Option<KeyRow>>;
    /// Every key of the person, revoked or waiting ones included.
    fn keys_of(&self, person: &PersonId) -> Result<Vec<KeyRow>>;
    fn linked(&self, person: &PersonId, validator: u32) -> Result<bool>;
    fn ask(&self, id: &TxId) -> Result<Option<AskRow>>;
    /// Asks from `validator` for `person` pending at `at_ms`.
    fn pending_asks(&self, person: &PersonId, validator: u32, at_ms: u64) -> Result<usize>;
    fn request(&self, id: &TxId) -> Result<Option<RequestRow>>;
    /// Requests from `doctor` to `patient` pending at `at_ms`.
    fn pending_requests(&self, doctor: &PersonId, patient: &PersonId, at_ms: u64) -> Result<usize>;
    /// Requests to `patient` pending at `at_ms` from the doctors whose home is `doctor`'s: the
    /// requesting hospital's share.
    fn pending_requests_from_hospital_of(
        &self,
        doctor: &PersonId,
        patient: &PersonId,
        at_ms: u64,
    ) -> Result<usize>;
    fn grant(&self, id: &TxId) -> Result<Option<GrantRow>>;
    /// The person's recovery pending at `at_ms`, if any.
    fn pending_recovery(&self, person: &PersonId, at_ms: u64) -> Result<Option<RecoveryRow>>;
    /// The applied transaction `id` if it is of a sealed kind.
    fn sealed(&self, id: &TxId) -> Result<Option<SealedRow>>;
    /// The erasure request `id`.
    fn erasure(&self, id: &TxId) -> Result<Option<ErasureRow>>;
    /// The latest erasure request of transaction `target` (pending, refused or erasing it).
    fn erasure_of(&self, target: &TxId) -> Result<Option<ErasureRow>>;
}

/// A change to the state, written by the store's `apply` in the order listed; `by` of an update
/// is the transaction that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Person(PersonRow),
    Key(KeyRow),
    RevokeKey(PublicKey),
    Link(LinkRow),
    Ask(AskRow),
    AnswerAsk(TxId),
    Request(RequestRow),
    AnswerRequest(TxId, Answer),
    Grant(GrantRow),
    UseGrant(TxId),
    RevokeGrant(TxId),
    Recovery(RecoveryRow),
    CancelRecovery(TxId),
    Record {
        patient: PersonId,
        doctor: PersonId,
        grant: TxId,
        /// The sealer: the doctor's home, the origin of their signing key.
        hospital: u32,
    },
    Access {
        patient: PersonId,
        reader: PersonId,
        serving: u32,
        grant: Option<TxId>,
    },
    Erasure(ErasureRow),
    AnswerErasure {
        request: TxId,
        decision: Decision,
        /// The answer's block time.
        at_ms: u64,
    },
}

/// Whose signature a kind needs (common checks 3 to 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acts {
    /// A live key of this person (device or custodial).
    Person(PersonId),
    /// This validator; otherwise rejected with the reason.
    Validator(u32, &'static str),
    /// The home of this person (who must be enrolled); otherwise rejected with the reason.
    HomeOf(PersonId, &'static str),
    /// Any validator: the signer is the one acting.
    AnyValidator,
}

/// One kind's rule. Implemented by each metadata struct, in the file of its family.
pub trait Rule {
    /// Whose signature this kind needs.
    fn acts(&self) -> Acts;
    /// Everything [`Rule::decide`] reads besides what the common checks read (`seen(id)`, and
    /// for a person's signature `key(signer key)` and `person(signer)`).
    fn reads(&self, ctx: &Ctx<'_>) -> Vec<Read>;
    /// The kind's rule, after the common checks passed.
    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome>;
}

impl Meta {
    /// The one match over kinds.
    pub fn rule(&self) -> &dyn Rule {
        match self {
            Meta::Enroll(m) => m,
            Meta::Ask(m) => m,
            Meta::Link(m) => m,
            Meta::AddKey(m) => m,
            Meta::RevokeKey(m) => m,
            Meta::Recover(m) => m,
            Meta::RequestGrant(m) => m,
            Meta::Grant(m) => m,
            Meta::Revoke(m) => m,
            Meta::AddRecord(m) => m,
            Meta::Access(m) => m,
            Meta::RequestErasure(m) => m,
            Meta::AnswerErasure(m) => m,
        }
    }
}

/// Every read [`decide`] may make for this transaction: the common checks' and the kind's.
pub fn reads(ctx: &Ctx<'_>) -> Vec<Read> {
    let mut reads = Vec::new();
    if let Some((person, key)) = ctx.header.signer.person_key() {
        reads.push(Read::Person(*person));
        reads.push(Read::Key(*key));
    }
    reads.extend(ctx.header.meta.rule().reads(ctx));
    reads
}

/// The checks common to every kind, in order (docs/SECURITY.md §3), then the kind's rule:
/// the effects of an applied transaction, or why it is rejected. `Err` is a failure to read
/// the state (the block cannot be applied now), never a verdict.
pub fn decide(ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
    if state.seen(&ctx.id, ctx.header.created_ms)? {
        return Ok(Err(Reject(reason::DUPLICATE)));
    }
    if let Err(reject) = common(ctx, state)? {
        return Ok(Err(reject));
    }
    ctx.header.meta.rule().decide(ctx, state)
}

/// Checks 2 to 5 and the labels of new keys.
fn common(ctx: &Ctx<'_>, state: &dyn StateView) -> Result<std::result::Result<(), Reject>> {
    let header = ctx.header;
    let t = ctx.block_time_ms;
    if t > header.not_after_ms {
        return Ok(Err(Reject(reason::EXPIRED)));
    }
    let rule = header.meta.rule();
    let acts = rule.acts();
    let kind = usize::from(header.meta.kind_byte());
    match (&header.signer, acts) {
        (Signer::Validator { .. }, Acts::Person(_)) => {
            return Ok(Err(Reject(reason::NEEDS_PERSON_KEY[kind])));
        }
        (Signer::Device { .. } | Signer::Custodial { .. }, Acts::Person(_)) => {}
        (Signer::Validator { .. }, _) => {}
        (Signer::Device { .. } | Signer::Custodial { .. }, _) => {
            return Ok(Err(Reject(reason::NEEDS_VALIDATOR[kind])));
        }
    }
    if let Some((person, key)) = header.signer.person_key()
        && let Err(reject) = check_person_key(ctx, state, person, key)?
    {
        return Ok(Err(reject));
    }
    let acting = match (&header.signer, acts) {
        (Signer::Device { person, .. } | Signer::Custodial { person, .. }, Acts::Person(p)) => {
            ensure(*person == p, reason::NOT_ACTING_PERSON)
        }
        (Signer::Validator { index }, Acts::Validator(v, why)) => ensure(*index == v, why),
        (Signer::Validator { index }, Acts::HomeOf(p, why)) => match state.person(&p)? {
            None => Err(Reject(reason::UNKNOWN_PERSON)),
            Some(row) => ensure(row.home == *index, why),
        },
        _ => Ok(()),
    };
    if let Err(reject) = acting {
        return Ok(Err(reject));
    }
    for (_, new) in header.meta.new_keys() {
        if let Err(reject) = check_new_key(new) {
            return Ok(Err(reject));
        }
    }
    Ok(Ok(()))
}

/// Check 4: the signing key is a live key of `person`, of the signer's kind, and a custodial
/// key is held by the person's home.
fn check_person_key(
    ctx: &Ctx<'_>,
    state: &dyn StateView,
    person: &PersonId,
    key: &PublicKey,
) -> Result<std::result::Result<(), Reject>> {
    let Some(row) = state.key(key)? else {
        return Ok(Err(Reject(reason::SIGNER_KEY_NOT_OF_PERSON)));
    };
    if row.person != *person {
        return Ok(Err(Reject(reason::SIGNER_KEY_NOT_OF_PERSON)));
    }
    if SignerKind::from(row.kind) != ctx.header.signer.kind() {
        return Ok(Err(Reject(reason::SIGNER_KIND_MISMATCH)));
    }
    if row.revoked.is_some() {
        return Ok(Err(Reject(reason::SIGNER_KEY_REVOKED)));
    }
    if row.active_from_ms > ctx.block_time_ms {
        return Ok(Err(Reject(reason::SIGNER_KEY_WAITING)));
    }
    if row.kind == KeyKind::Custodial {
        let home = state.person(person)?.map(|p| p.home);
        if home != Some(row.origin) {
            return Ok(Err(Reject(reason::CUSTODIAL_NOT_HOME)));
        }
    }
    let _ = ctx.signer_row.set(row);
    Ok(Ok(()))
}

/// A new key's label is at most [`MAX_TEXT_CHARS`] characters.
fn check_new_key(new: &NewKey) -> std::result::Result<(), Reject> {
    ensure(
        new.label.chars().count() <= MAX_TEXT_CHARS,
        reason::LABEL_TOO_LONG,
    )
}

/// Text shown to people (a department, a doctor's name): 1 to [`MAX_TEXT_CHARS`] characters, no
/// control characters.
pub(crate) fn is_display_text(text: &str) -> bool {
    let n = text.chars().count();
    (1..=MAX_TEXT_CHARS).contains(&n) && !text.chars().any(char::is_control)
}

/// The signer's key row (the common checks read it and found it live).
pub(crate) fn signer_key(ctx: &Ctx<'_>, state: &dyn StateView) -> Result<KeyRow> {
    if let Some(row) = ctx.signer_row.get() {
        return Ok(row.clone());
    }
    let key = ctx
        .header
        .signer
        .person_key()
        .map(|(_, k)| *k)
        .ok_or_else(|| Error::State("a person's rule signed by a validator".into()))?;
    state
        .key(&key)?
        .ok_or_else(|| Error::State("the signer's key vanished".into()))
}

/// The signing validator's index (the common checks made sure the signer is one).
pub(crate) fn signing_validator(ctx: &Ctx<'_>) -> u32 {
    match ctx.header.signer {
        Signer::Validator { index } => index,
        _ => u32::MAX,
    }
}

/// The enrolled person `person`, if they have `role`.
pub(crate) fn person_with_role(
    state: &dyn StateView,
    person: &PersonId,
    role: Role,
) -> Result<Option<PersonRow>> {
    Ok(state.person(person)?.filter(|p| p.role == role))
}

/// A [`StateView`] that answers only what was declared ([`reads`]) and fails on any other read:
/// the rule tests run every rule through it, so a rule cannot read what it does not declare.
pub struct Declared<'a> {
    inner: &'a dyn StateView,
    allowed: Vec<Read>,
}

impl<'a> Declared<'a> {
    /// Over `inner`, allowing the reads [`reads`] declares for `ctx` (and `seen`).
    pub fn new(inner: &'a dyn StateView, ctx: &Ctx<'_>) -> Self {
        Declared {
            inner,
            allowed: reads(ctx),
        }
    }

    fn allow(&self, read: Read) -> Result<()> {
        if self.allowed.contains(&read) {
            Ok(())
        } else {
            Err(Error::UndeclaredRead(format!("{read:?}")))
        }
    }
}

impl StateView for Declared<'_> {
    fn seen(&self, id: &TxId, created_ms: u64) -> Result<bool> {
        self.inner.seen(id, created_ms)
    }
    fn person(&self, person: &PersonId) -> Result<Option<PersonRow>> {
        self.allow(Read::Person(*person))?;
        self.inner.person(person)
    }
    fn key(&self, key: &PublicKey) -> Result<Option<KeyRow>> {
        self.allow(Read::Key(*key))?;
        self.inner.key(key)
    }
    fn keys_of(&self, person: &PersonId) -> Result<Vec<KeyRow>> {
        self.allow(Read::KeysOf(*person))?;
        self.inner.keys_of(person)
    }
    fn linked(&self, person: &PersonId, validator: u32) -> Result<bool> {
        self.allow(Read::Link(*person, validator))?;
        self.inner.linked(person, validator)
    }
    fn ask(&self, id: &TxId) -> Result<Option<AskRow>> {
        self.allow(Read::Ask(*id))?;
        self.inner.ask(id)
    }
    fn pending_asks(&self, person: &PersonId, validator: u32, at_ms: u64) -> Result<usize> {
        self.allow(Read::PendingAsks(*person, validator))?;
        self.inner.pending_asks(person, validator, at_ms)
    }
    fn request(&self, id: &TxId) -> Result<Option<RequestRow>> {
        self.allow(Read::Request(*id))?;
        self.inner.request(id)
    }
    fn pending_requests(&self, doctor: &PersonId, patient: &PersonId, at_ms: u64) -> Result<usize> {
        self.allow(Read::PendingRequests {
            doctor: *doctor,
            patient: *patient,
        })?;
        self.inner.pending_requests(doctor, patient, at_ms)
    }
    fn pending_requests_from_hospital_of(
        &self,
        doctor: &PersonId,
        patient: &PersonId,
        at_ms: u64,
    ) -> Result<usize> {
        self.allow(Read::PendingRequestsFromHospitalOf {
            doctor: *doctor,
            patient: *patient,
        })?;
        self.inner
            .pending_requests_from_hospital_of(doctor, patient, at_ms)
    }
    fn grant(&self, id: &TxId) -> Result<Option<GrantRow>> {
        self.allow(Read::Grant(*id))?;
        self.inner.grant(id)
    }
    fn pending_recovery(&self, person: &PersonId, at_ms: u64) -> Result<Option<RecoveryRow>> {
        self.allow(Read::PendingRecovery(*person))?;
        self.inner.pending_recovery(person, at_ms)
    }
    fn sealed(&self, id: &TxId) -> Result<Option<SealedRow>> {
        self.allow(Read::Sealed(*id))?;
        self.inner.sealed(id)
    }
    fn erasure(&self, id: &TxId) -> Result<Option<ErasureRow>> {
        self.allow(Read::Erasure(*id))?;
        self.inner.erasure(id)
    }
    fn erasure_of(&self, target: &TxId) -> Result<Option<ErasureRow>> {
        self.allow(Read::ErasureOf(*target))?;
        self.inner.erasure_of(target)
    }
}
