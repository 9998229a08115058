//! Identities: logins checked against the chain, and the outbox that enrolls and links people
//! (docs/SECURITY.md, issue 9, §5.1, §7 "--demo").

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::rules::reason;
use ledger::{PersonRow, Queries, TxStatus};
use node::NodeError;

use super::{FlowError, FlowResult, Flows};
use crate::app::{Account, OutboxState, Role};

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
                let sign = |header: ledger::TxHeader, body: Vec<u8>| {
                    node.sign_as_validator(header, body)
                };
                let reset = app.bind_chain(&here.genesis_hash)?;
                let demo = if demo {
                    app.setup_demo(custody, &here, &sign, &links, now)?
                } else {
                    Vec::new()
                };
                let enrolled = app.enroll_unassigned(custody, &here, &sign, now)?;
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

    /// One pass over the outbox: submits the rows that are due (the bytes stored, never
    /// signed again) and records the chain's verdict on the submitted ones. Returns how many
    /// rows are still waiting.
    pub async fn drain_outbox(&self) -> FlowResult<usize> {
        let rows = self.store(|app, _| app.outbox_due()).await?;
        let mut waiting = 0;
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
                    Err(NodeError::Invalid(invalid)) => {
                        (OutboxState::Failed, Some(invalid.reason().to_string()), None)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox: the node did not take a step yet");
                        waiting += 1;
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
                        TxStatus::Unknown => {
                            waiting += 1;
                            continue;
                        }
                    }
                }
                OutboxState::Done | OutboxState::Failed => continue,
            };
            if state == OutboxState::Submitted {
                submitted = true;
                waiting += 1;
            }
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
        Ok(waiting)
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
