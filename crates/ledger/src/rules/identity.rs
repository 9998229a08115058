//! Identities and keys: `Enroll`, `Ask`, `Link`, `AddKey`, `RevokeKey`, `Recover`.
use super::reason as why;
use super::{
    ASK_MS, Acts, AskRow, Ctx, Effect, KeyRow, LinkRow, MAX_KEYS, MAX_PENDING_ASKS, Outcome,
    PersonRow, Read, RecoveryRow, Reject, Rule, StateView, ensure, is_display_text, signer_key,
    signing_validator,
};
use crate::Result;
use crate::tx::{
    AddKey, Ask, AskWhat, Enroll, KeyKind, Link, NewKey, Recover, RevokeKey, Role, SignerKind,
    TxId, person_id,
};

/// The row of a key added by this transaction, of the origin its proof of possession binds
/// (checked by each rule against the transaction: the home, or the asking validator).
fn new_key_row(
    ctx: &Ctx<'_>,
    person: &[u8; 16],
    new: &NewKey,
    young_until_ms: u64,
    active_from_ms: u64,
    recovery: bool,
) -> KeyRow {
    KeyRow {
        key: new.key,
        person: *person,
        kind: new.kind,
        label: new.label.clone(),
        origin: new.origin,
        added: ctx.id,
        added_by: ctx.header.signer.kind(),
        added_ms: ctx.block_time_ms,
        young_until_ms,
        active_from_ms,
        revoked: None,
        recovery: recovery.then_some(ctx.id),
    }
}

/// The ask `id`, if it is pending at the block's time.
fn pending_ask(
    ctx: &Ctx<'_>,
    state: &dyn StateView,
    id: &TxId,
) -> Result<Result<AskRow, Reject>, crate::Error> {
    Ok(match state.ask(id)? {
        Some(ask) if ask.pending_at(ctx.block_time_ms) => Ok(ask),
        _ => Err(Reject(why::ASK_NOT_PENDING)),
    })
}

/// Rejects a key registered anywhere already (revoked keys included, for ever).
fn unregistered(state: &dyn StateView, key: &[u8; 32]) -> Result<Result<(), Reject>, crate::Error> {
    Ok(ensure(state.key(key)?.is_none(), why::KEY_REGISTERED))
}

impl Rule for Enroll {
    fn acts(&self) -> Acts {
        Acts::Validator(self.home, why::ENROLL_NOT_HOME)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        let mut reads = vec![Read::Person(self.person)];
        reads.extend(self.keys.iter().map(|k| Read::Key(k.key)));
        reads
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        check!(ensure(
            person_id(self.home, &self.nonce) == self.person,
            why::PERSON_ID_NOT_DERIVED
        ));
        check!(ensure(
            state.person(&self.person)?.is_none(),
            why::PERSON_ENROLLED
        ));
        let doctor = self.role == Role::Doctor;
        let text_ok = |text: &Option<String>| match text {
            Some(t) => doctor && is_display_text(t),
            None => !doctor,
        };
        check!(ensure(text_ok(&self.department), why::DEPARTMENT));
        check!(ensure(text_ok(&self.name), why::DOCTOR_NAME));
        let distinct = self
            .keys
            .iter()
            .enumerate()
            .all(|(i, k)| self.keys[..i].iter().all(|o| o.key != k.key));
        check!(ensure(
            (1..=MAX_KEYS).contains(&self.keys.len()) && distinct,
            why::ENROLL_KEYS
        ));
        for k in &self.keys {
            check!(unregistered(state, &k.key)?);
            check!(ensure(k.origin == self.home, why::KEY_ORIGIN));
        }
        let mut effects = vec![Effect::Person(PersonRow {
            person: self.person,
            role: self.role,
            department: self.department.clone(),
            name: self.name.clone(),
            home: self.home,
            enrolled: ctx.id,
        })];
        effects.extend(
            self.keys
                .iter()
                .map(|k| Effect::Key(new_key_row(ctx, &self.person, k, 0, 0, false))),
        );
        Ok(Ok(effects))
    }
}

impl Rule for Ask {
    fn acts(&self) -> Acts {
        Acts::AnyValidator
    }

    fn reads(&self, ctx: &Ctx<'_>) -> Vec<Read> {
        let v = signing_validator(ctx);
        let mut reads = vec![Read::Person(self.person), Read::PendingAsks(self.person, v)];
        match &self.what {
            AskWhat::Link => reads.push(Read::Link(self.person, v)),
            AskWhat::Key(k) => reads.push(Read::Key(k.key)),
        }
        reads
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let v = signing_validator(ctx);
        let Some(person) = state.person(&self.person)? else {
            return Ok(Err(Reject(why::UNKNOWN_PERSON)));
        };
        match &self.what {
            AskWhat::Link => {
                check!(ensure(v != person.home, why::VALIDATOR_IS_HOME));
                check!(ensure(!state.linked(&self.person, v)?, why::ALREADY_LINKED));
            }
            AskWhat::Key(k) => {
                check!(unregistered(state, &k.key)?);
                check!(ensure(
                    k.kind == KeyKind::Device || v == person.home,
                    why::CUSTODIAL_ASK_NOT_HOME
                ));
                check!(ensure(
                    person.role != Role::Doctor || v == person.home,
                    why::DOCTOR_KEY_NOT_HOME
                ));
                // The key was made at the asking validator's page (or custody), and its proof
                // says so: no validator can ask for a key another's page made.
                check!(ensure(k.origin == v, why::KEY_ORIGIN));
            }
        }
        check!(ensure(
            state.pending_asks(&self.person, v, ctx.block_time_ms)? < MAX_PENDING_ASKS,
            why::TOO_MANY_ASKS
        ));
        Ok(Ok(vec![Effect::Ask(AskRow {
            id: ctx.id,
            person: self.person,
            validator: v,
            what: self.what.clone(),
            expires_ms: ctx.block_time_ms.saturating_add(ASK_MS),
            answered: None,
        })]))
    }
}

impl Rule for Link {
    fn acts(&self) -> Acts {
        Acts::Person(self.person)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        let mut reads = vec![Read::Link(self.person, self.validator)];
        reads.extend(self.ask.map(Read::Ask));
        reads
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let Some(person) = state.person(&self.person)? else {
            return Ok(Err(Reject(why::UNKNOWN_PERSON)));
        };
        check!(ensure(
            self.validator < ctx.validators,
            why::UNKNOWN_VALIDATOR
        ));
        check!(ensure(
            self.validator != person.home,
            why::VALIDATOR_IS_HOME
        ));
        check!(ensure(
            !state.linked(&self.person, self.validator)?,
            why::ALREADY_LINKED
        ));
        let mut effects = vec![Effect::Link(LinkRow {
            person: self.person,
            validator: self.validator,
            tx: ctx.id,
        })];
        if let Some(ask_id) = self.ask {
            let ask = match pending_ask(ctx, state, &ask_id)? {
                Ok(ask) => ask,
                Err(reject) => return Ok(Err(reject)),
            };
            check!(ensure(
                ask.what == AskWhat::Link
                    && ask.person == self.person
                    && ask.validator == self.validator,
                why::ASK_MISMATCH
            ));
            effects.push(Effect::AnswerAsk(ask_id));
        }
        Ok(Ok(effects))
    }
}

impl Rule for AddKey {
    fn acts(&self) -> Acts {
        Acts::Person(self.person)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        let mut reads = vec![Read::Key(self.key.key), Read::KeysOf(self.person)];
        reads.extend(self.ask.map(Read::Ask));
        reads
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let Some(person) = state.person(&self.person)? else {
            return Ok(Err(Reject(why::UNKNOWN_PERSON)));
        };
        check!(unregistered(state, &self.key.key)?);
        let unrevoked = state
            .keys_of(&self.person)?
            .iter()
            .filter(|k| k.revoked.is_none())
            .count();
        check!(ensure(unrevoked < MAX_KEYS, why::TOO_MANY_KEYS));
        let signer = ctx.header.signer.kind();
        let mut effects = Vec::with_capacity(2);
        let origin = match self.ask {
            None => {
                // Only the home, holding the custodial key, vouches for a device key without
                // an ask: the key was made at its own page.
                check!(ensure(
                    self.key.kind == KeyKind::Device,
                    why::CUSTODIAL_KEY_NEEDS_HOME_ASK
                ));
                check!(ensure(
                    signer == SignerKind::Custodial,
                    why::DEVICE_KEY_NEEDS_ASK
                ));
                person.home
            }
            Some(ask_id) => {
                let ask = match pending_ask(ctx, state, &ask_id)? {
                    Ok(ask) => ask,
                    Err(reject) => return Ok(Err(reject)),
                };
                check!(ensure(
                    ask.person == self.person && ask.what == AskWhat::Key(self.key.clone()),
                    why::ASK_MISMATCH
                ));
                if self.key.kind == KeyKind::Custodial {
                    // The person re-adopts custody: the home offers the key, a device accepts.
                    check!(ensure(
                        ask.validator == person.home && signer == SignerKind::Device,
                        why::CUSTODIAL_KEY_NEEDS_HOME_ASK
                    ));
                }
                effects.push(Effect::AnswerAsk(ask_id));
                ask.validator
            }
        };
        // A doctor's device keys are made at the home's page: the `Ask` rule refuses an ask for
        // a doctor's key from any other validator, and without an ask the origin is the home.
        // The origin is bound by the key's proof, so a key seen in another validator's ask
        // cannot be added here as the home's.
        check!(ensure(self.key.origin == origin, why::KEY_ORIGIN));
        // A new key may share the history with another hospital at once only if the key that
        // vouches for it could itself (docs/SECURITY.md, "Confidential records", §4.2). Any
        // other waits its full wait, and at least as long as its approver: a key added on a
        // password alone (the custodial key signs what a password at the home allows); a key
        // made at another hospital's page approving a key the home's page made (else that
        // hospital, with the password, mints a home key that shares at once: red team of the
        // code, break 2); a young key approving a second one (else the wait is skipped).
        let t = ctx.block_time_ms;
        let approver = signer_key(ctx, state)?;
        let young_until_ms = if approver.shares_history_at(person.home, t) {
            0
        } else {
            t.saturating_add(ctx.params.recovery_wait_ms)
                .max(approver.young_until_ms)
        };
        effects.insert(
            0,
            Effect::Key(new_key_row(
                ctx,
                &self.person,
                &self.key,
                young_until_ms,
                0,
                false,
            )),
        );
        Ok(Ok(effects))
    }
}

impl Rule for RevokeKey {
    fn acts(&self) -> Acts {
        Acts::Person(self.person)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![Read::Key(self.key), Read::KeysOf(self.person)]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let t = ctx.block_time_ms;
        let Some(person) = state.person(&self.person)? else {
            return Ok(Err(Reject(why::UNKNOWN_PERSON)));
        };
        let Some(target) = state.key(&self.key)?.filter(|k| k.person == self.person) else {
            return Ok(Err(Reject(why::KEY_NOT_OF_PERSON)));
        };
        check!(ensure(target.revoked.is_none(), why::KEY_ALREADY_REVOKED));
        // A key of the home's origin (the custodial key, or a device key made at the home's
        // page) may revoke any key; a key made at validator V's page only keys made there, so
        // V cannot take the person away from their home (attack finding 2).
        let signer = signer_key(ctx, state)?;
        check!(ensure(
            signer.origin == person.home || signer.origin == target.origin,
            why::REVOKE_OTHER_ORIGIN
        ));
        // A young key's wait is visible and cancellable (docs/SECURITY.md, "Confidential
        // records", §4.2; red team of the code, break 3): before its wait ends it revokes only
        // itself and other young keys (so neither the keys that could cancel it nor a
        // recovering key, which is never young), and while any young key is live the person
        // keeps a key of the home past its wait, which can revoke it.
        check!(ensure(
            !signer.young_at(t) || target.young_at(t) || target.key == signer.key,
            why::YOUNG_KEY_REVOKES_YOUNG_ONLY
        ));
        let others: Vec<KeyRow> = state
            .keys_of(&self.person)?
            .into_iter()
            .filter(|k| k.key != self.key && k.live_at(t))
            .collect();
        if target.live_at(t) {
            check!(ensure(!others.is_empty(), why::WOULD_LEAVE_NO_KEY));
        }
        if target.cancels_young_keys_at(person.home, t) && others.iter().any(|k| k.young_at(t)) {
            check!(ensure(
                others
                    .iter()
                    .any(|k| k.cancels_young_keys_at(person.home, t)),
                why::KEEPS_KEY_THAT_CANCELS
            ));
        }
        let mut effects = vec![Effect::RevokeKey(self.key)];
        if let Some(recovery) = target.recovery
            && t < target.active_from_ms
        {
            effects.push(Effect::CancelRecovery(recovery));
        }
        Ok(Ok(effects))
    }
}

impl Rule for Recover {
    fn acts(&self) -> Acts {
        Acts::HomeOf(self.person, why::RECOVER_NOT_HOME)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![
            Read::Person(self.person),
            Read::PendingRecovery(self.person),
            Read::Key(self.key.key),
            Read::KeysOf(self.person),
        ]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let t = ctx.block_time_ms;
        let Some(person) = state.person(&self.person)? else {
            return Ok(Err(Reject(why::UNKNOWN_PERSON)));
        };
        check!(ensure(
            self.key.kind == KeyKind::Custodial,
            why::RECOVER_CUSTODIAL_ONLY
        ));
        check!(ensure(
            state.pending_recovery(&self.person, t)?.is_none(),
            why::RECOVERY_PENDING
        ));
        check!(unregistered(state, &self.key.key)?);
        check!(ensure(self.key.origin == person.home, why::KEY_ORIGIN));
        // One key past the cap: a person who lost every key (all still unrevoked) must still be
        // recoverable, and revokes the lost ones with the recovered key; never more than one.
        let keys = state.keys_of(&self.person)?;
        let unrevoked = keys.iter().filter(|k| k.revoked.is_none()).count();
        check!(ensure(unrevoked <= MAX_KEYS, why::TOO_MANY_KEYS));
        let effective_ms = t.saturating_add(ctx.params.recovery_wait_ms);
        // A recovery revokes every young key of the person at once (docs/SECURITY.md,
        // "Confidential records", §4.2): a key added on a password, or approved by a key made
        // at another hospital's page, must not outwait the recovery that answers its theft
        // where the person holds no key of the home that could revoke it.
        let mut effects: Vec<Effect> = keys
            .into_iter()
            .filter(|k| k.live_at(t) && k.young_at(t))
            .map(|k| Effect::RevokeKey(k.key))
            .collect();
        effects.extend([
            Effect::Recovery(RecoveryRow {
                id: ctx.id,
                person: self.person,
                key: self.key.key,
                effective_ms,
                cancelled: None,
            }),
            Effect::Key(new_key_row(
                ctx,
                &self.person,
                &self.key,
                0,
                effective_ms,
                true,
            )),
        ]);
        Ok(Ok(effects))
    }
}
