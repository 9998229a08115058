//! Identities: logins checked against the chain, and the outbox that enrolls and links people
//! (docs/SECURITY.md, issue 9, §5.1, §7 "--demo").

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::rules::reason;
use ledger::tx::{AddKey, Ask, AskWhat, KeyKind, Link, NewKey, RevokeKey};
use ledger::{Meta, PersonId, PersonRow, PublicKey, Queries, TxId, TxStatus};
use node::NodeError;

use super::{Action, Content, FlowError, FlowResult, Flows, SIGNATURE_LIFE_MS, Signing, Who};
use crate::app::{
    Account, AppDb, AppError, Enroller, NewAccount, OutboxState, Role, ask_code, new_header,
};

/// What [`Flows::start`] did.
#[derive(Debug, Default)]
pub struct StartReport {
    /// The store belonged to another chain and forgot it.
    pub reset: bool,
    /// Demo logins created.
    pub demo: Vec<String>,
    /// Logins without a person, enrolled here.
    pub enrolled: Vec<String>,
}

/// How often the outbox is looked at.
const OUTBOX_PERIOD: Duration = Duration::from_millis(500);

impl Flows {
    /// A login's identity on chain, checked when the person signs in: 503 while it is not on
    /// this validator's chain, 403 for a patient this hospital may not serve. A doctor may
    /// sign in anywhere (they act only at home).
    pub async fn check_login(&self, account: &Account) -> FlowResult<PersonRow> {
        match account.role {
            Role::Patient => self.served_patient(account).await,
            Role::Doctor => self.person_of(account).await,
        }
    }

    /// At start, before serving: binds the application store to this chain, creates the demo
    /// people (with `demo`: `Link`s to every other validator when `link_demo`), and enrolls
    /// every login that maps to no person. The steps wait in the outbox.
    pub async fn start(&self, demo: bool, link_demo: bool) -> FlowResult<StartReport> {
        let here = self.here;
        let node = self.node.clone();
        let now = self.now_ms();
        let links: Vec<u32> = if link_demo {
            (0..here.validators).collect()
        } else {
            Vec::new()
        };
        let report = self
            .store(move |app, custody| {
                let sign =
                    |header: ledger::TxHeader, body: Vec<u8>| node.sign_as_validator(header, body);
                let by = Enroller {
                    custody,
                    here: &here,
                    sign: &sign,
                };
                let reset = app.bind_chain(&here.genesis_hash)?;
                let demo = if demo {
                    app.setup_demo(&by, &links, now)?
                } else {
                    Vec::new()
                };
                let enrolled = app.enroll_unassigned(&by, now)?;
                app.outbox_resubmit_all()?;
                Ok(StartReport {
                    reset,
                    demo,
                    enrolled,
                })
            })
            .await?;
        Ok(report)
    }

    /// Enrolls a new login here (this hospital its home): its custodial key and its `Enroll`,
    /// queued in the outbox (as `medchain user add` does from the command line).
    pub async fn enroll(&self, new: NewAccount) -> FlowResult<(Account, TxId)> {
        self.enrolling(move |app, by, now| app.add_enrolled(by, new, None, &[], now))
            .await
    }

    /// Starts the recovery of `login`'s identity, enrolled here (§5.9, as `medchain user
    /// recover` does): a new custodial key and this hospital's `Recover`, queued in the outbox.
    /// The key signs once the chain's waiting period is over, unless one of the person's keys
    /// revokes it first.
    pub async fn start_recovery(&self, login: String) -> FlowResult<TxId> {
        self.enrolling(move |app, by, now| app.start_recovery(by, &login, now))
            .await
    }

    /// Runs `job` on the app store with this hospital's [`Enroller`] (its custody and its
    /// validator's signature) and the time now.
    async fn enrolling<T: Send + 'static>(
        &self,
        job: impl FnOnce(&AppDb, &Enroller<'_>, u64) -> Result<T, AppError> + Send + 'static,
    ) -> FlowResult<T> {
        let here = self.here;
        let node = self.node.clone();
        let now = self.now_ms();
        self.store(move |app, custody| {
            let sign =
                |header: ledger::TxHeader, body: Vec<u8>| node.sign_as_validator(header, body);
            let by = Enroller {
                custody,
                here: &here,
                sign: &sign,
            };
            job(app, &by, now)
        })
        .await
    }

    /// Links a new login here to `person`, enrolled at another hospital: this hospital's `Ask`
    /// queued in the outbox (as `medchain user link` does); the person approves its code.
    pub async fn link_login(
        &self,
        new: NewAccount,
        person: PersonId,
    ) -> FlowResult<(Account, TxId)> {
        let row = self
            .chain(move |r| r.person(&person))
            .await?
            .ok_or(FlowError::NotOnChain)?;
        self.enrolling(move |app, by, now| app.add_linked(by, new, person, row.home, now))
            .await
    }

    /// One pass over the outbox: submits the rows that are due (the bytes stored, never
    /// signed again) and records the chain's verdict on the submitted ones. Returns how many
    /// rows are still open (queued or waiting for their block).
    pub async fn drain_outbox(&self) -> FlowResult<usize> {
        let rows = self.store(|app, _| app.outbox_due()).await?;
        let mut submitted = false;
        for row in rows {
            let id = row.id;
            let (state, reason, height) = match row.state {
                OutboxState::Queued => match self.node.submit(row.tx).await {
                    Ok(_) => (OutboxState::Submitted, None, None),
                    // On chain already: its verdict is read on the next pass.
                    Err(NodeError::Refused(why)) if why == reason::DUPLICATE => {
                        (OutboxState::Submitted, None, None)
                    }
                    Err(NodeError::Refused(why)) => (OutboxState::Failed, Some(why), None),
                    Err(NodeError::Invalid(invalid)) => (
                        OutboxState::Failed,
                        Some(invalid.reason().to_string()),
                        None,
                    ),
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox: the node did not take a step yet");
                        continue;
                    }
                },
                OutboxState::Submitted => {
                    let tx_id = row.tx_id;
                    match self.chain(move |r| r.tx_status(&tx_id)).await? {
                        TxStatus::Committed {
                            height,
                            rejected: None,
                            ..
                        } => (OutboxState::Done, None, Some(height)),
                        TxStatus::Committed {
                            height,
                            rejected: Some(why),
                            ..
                        } => (OutboxState::Failed, Some(why), Some(height)),
                        TxStatus::Unknown => continue,
                    }
                }
                OutboxState::Done | OutboxState::Failed => continue,
            };
            submitted |= state == OutboxState::Submitted;
            if state == OutboxState::Failed {
                tracing::warn!(
                    kind = %row.kind,
                    account = row.account.as_deref().unwrap_or(""),
                    reason = reason.as_deref().unwrap_or(""),
                    "outbox: a chain step failed"
                );
            }
            let now = self.now_ms();
            self.store(move |app, _| app.outbox_mark(id, state, reason.as_deref(), height, now))
                .await?;
        }
        if submitted {
            // Enrollments are rare: commit them now rather than after the batch window.
            match self.node.cut().await {
                Ok(_) | Err(NodeError::NothingPending) => {}
                Err(e) => tracing::debug!(error = %e, "outbox: cut failed"),
            }
        }
        self.store(|app, _| app.outbox_open()).await
    }

    /// Drains the outbox until nothing is waiting, or `timeout`: serving starts with the demo
    /// people on chain. Returns whether everything was done.
    pub async fn settle_outbox(&self, timeout: Duration) -> FlowResult<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.drain_outbox().await? == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drains the outbox every 500 ms for as long as the process runs (rows queued by
    /// `medchain user add` while the node runs, and after a restart).
    pub async fn run_outbox(self: Arc<Self>) {
        loop {
            match self.drain_outbox().await {
                Ok(_) => {}
                Err(FlowError::Node(NodeError::Stopped)) => return,
                Err(e) => tracing::warn!(error = %e, "outbox: pass failed"),
            }
            tokio::time::sleep(OUTBOX_PERIOD).await;
        }
    }
}

/// A key added for a page, or the ask another of the person's keys must approve.
#[derive(Clone, Debug)]
pub enum KeyAdded {
    /// Added by the home with the person's custodial key (origin: the home).
    Added { tx: TxId },
    /// Asked: approve `code` on a page that holds one of the person's keys.
    Asked { ask: TxId, code: String },
}

impl Flows {
    /// A page made a device key for the signed-in person (§5.8). At the person's home with
    /// their custodial key live, the home adds it (`AddKey` signed custodially, origin home);
    /// elsewhere this validator asks (`Ask`), and the person approves the code on a page that
    /// holds one of their keys. A doctor's keys are made at their home only.
    pub async fn add_device_key(
        &self,
        account: &Account,
        key: PublicKey,
        pop: [u8; 64],
        label: String,
    ) -> FlowResult<KeyAdded> {
        let row = match account.role {
            Role::Doctor => self.home_doctor(account).await?,
            Role::Patient => self.served_patient(account).await?,
        };
        // Made at this validator's page: its origin is this validator, the home (which adds
        // it) or the validator that asks for it.
        let new_key = NewKey {
            key,
            kind: KeyKind::Device,
            origin: self.here.index,
            label,
            pop,
        };
        if !ledger::crypto::verify_signature_bytes(
            &key,
            &new_key.pop_bytes(&self.here.genesis_hash, &row.person),
            &pop,
        ) {
            return Err(FlowError::Invalid(
                "The key's proof of possession does not verify".into(),
            ));
        }
        if row.home == self.here.index {
            let meta = Meta::AddKey(AddKey {
                person: row.person,
                key: new_key,
                ask: None,
            });
            let Signing::Done(tx) = self
                .sign_as(
                    account,
                    row.person,
                    Who::Custodial,
                    Action::Durable,
                    meta,
                    Content::Empty,
                )
                .await?
            else {
                return Err(FlowError::Invalid("a custodial step is signed here".into()));
            };
            let (tx, _) = self.submit_and_apply(tx).await?;
            return Ok(KeyAdded::Added { tx });
        }
        let meta = Meta::Ask(Ask {
            person: row.person,
            what: AskWhat::Key(new_key),
        });
        let now = self.now_ms();
        let tx = self.node.sign_as_validator(
            new_header(meta, now, now.saturating_add(SIGNATURE_LIFE_MS)),
            Vec::new(),
        );
        let (ask, _) = self.submit_and_apply(tx).await?;
        Ok(KeyAdded::Asked {
            ask,
            code: ask_code(&ask),
        })
    }

    /// The signed-in person's identity on chain: who they are, where they are linked, their
    /// keys and any recovery.
    pub async fn identity(&self, account: &Account) -> FlowResult<IdentityView> {
        let row = self.person_of(account).await?;
        let person = row.person;
        let (links, keys, recoveries) = self
            .chain(move |r| {
                Ok((
                    r.links_of(&person)?,
                    r.keys_of(&person)?,
                    r.recoveries_of(&person)?,
                ))
            })
            .await?;
        Ok(IdentityView {
            person: row,
            links,
            keys,
            recoveries,
        })
    }
}

/// A person's identity as the chain holds it.
#[derive(Clone, Debug)]
pub struct IdentityView {
    pub person: PersonRow,
    pub links: Vec<ledger::LinkRow>,
    pub keys: Vec<ledger::KeyRow>,
    pub recoveries: Vec<ledger::RecoveryRow>,
}

/// A pending ask as the person's page shows it.
#[derive(Clone, Debug)]
pub struct AskView {
    pub row: ledger::AskRow,
    pub code: String,
}

impl Flows {
    /// The signed-in person's asks pending on chain (at `T = now`), newest first, each with
    /// its code.
    pub async fn asks(&self, account: &Account) -> FlowResult<Vec<AskView>> {
        let row = self.person_of(account).await?;
        let (person, now) = (row.person, self.now_ms());
        let rows = self
            .chain(move |r| r.pending_asks_for(&person, now))
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| AskView {
                code: ask_code(&row.id),
                row,
            })
            .collect())
    }

    /// The person approves, with a key they hold, the one pending ask whose code they typed
    /// (§5.7, 5.8): a `Link` to the asking hospital, or an `AddKey` of the key its page made.
    /// With a device key through a prepared envelope; without one, custodially at the home
    /// ("the home approves"). A code that matches asks of two hospitals approves neither.
    pub async fn approve_ask(
        &self,
        account: &Account,
        who: Who,
        code: &str,
    ) -> FlowResult<Signing<TxId>> {
        let row = self.person_of(account).await?;
        if who == Who::Custodial && row.home != self.here.index {
            return Err(FlowError::ApproveOnDevice {
                home: self.hospital(row.home),
            });
        }
        let matching: Vec<AskView> = self
            .asks(account)
            .await?
            .into_iter()
            .filter(|a| a.code == code.trim())
            .collect();
        let mut validators: Vec<u32> = matching.iter().map(|a| a.row.validator).collect();
        validators.sort_unstable();
        validators.dedup();
        if validators.len() > 1 {
            return Err(FlowError::CodeCollision {
                validators: validators.iter().map(|v| self.hospital(*v)).collect(),
            });
        }
        let Some(ask) = matching.into_iter().next() else {
            return Err(FlowError::NotFound(
                "No request to approve has this code: check it, or ask for a new one".into(),
            ));
        };
        let meta = match ask.row.what {
            AskWhat::Link => Meta::Link(Link {
                person: row.person,
                validator: ask.row.validator,
                ask: Some(ask.row.id),
            }),
            AskWhat::Key(key) => Meta::AddKey(AddKey {
                person: row.person,
                key,
                ask: Some(ask.row.id),
            }),
        };
        match self
            .sign_as(
                account,
                row.person,
                who,
                Action::Applied,
                meta,
                Content::Empty,
            )
            .await?
        {
            Signing::Done(tx) => Ok(Signing::Done(self.submit_and_apply(tx).await?.0)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }

    /// The person revokes one of their keys (§5.9); revoking a key that waits for its
    /// recovery cancels that recovery. With a device key, or custodially at the home. Applied
    /// before it answers: a key signs nothing after its revocation commits.
    pub async fn revoke_key(
        &self,
        account: &Account,
        who: Who,
        key: PublicKey,
    ) -> FlowResult<Signing<TxId>> {
        let row = self.person_of(account).await?;
        if who == Who::Custodial && row.home != self.here.index {
            return Err(FlowError::ApproveOnDevice {
                home: self.hospital(row.home),
            });
        }
        let meta = Meta::RevokeKey(RevokeKey {
            person: row.person,
            key,
        });
        match self
            .sign_as(
                account,
                row.person,
                who,
                Action::Applied,
                meta,
                Content::Empty,
            )
            .await?
        {
            Signing::Done(tx) => Ok(Signing::Done(self.submit_and_apply(tx).await?.0)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }
}
