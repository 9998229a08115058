//! Erasure: `RequestErasure`, `AnswerErasure` (docs/SECURITY.md, "Confidential records", §7).
//!
//! A patient asks, with a key of their home, for one of their sealed transactions (a record, a
//! request or a grant) to be erased; the hospital that sealed it answers, erasing or refusing
//! with a reason code. The chain records the decision; what an erasure does (every correct
//! validator deletes the keys that open the body) is each node's key service's, off chain.
use super::reason as why;
use super::{
    Acts, Ctx, Effect, ErasureRow, Outcome, Read, Reject, Rule, StateView, ensure, signer_key,
    signing_validator,
};
use crate::Result;
use crate::tx::{AnswerErasure, RequestErasure};

impl Rule for RequestErasure {
    fn acts(&self) -> Acts {
        Acts::Person(self.patient)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![Read::Sealed(self.tx), Read::ErasureOf(self.tx)]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let t = ctx.block_time_ms;
        let Some(patient) = state.person(&self.patient)? else {
            return Ok(Err(Reject(why::UNKNOWN_PERSON)));
        };
        // An erasure is as irreversible as a read grant is wide: it takes the same key, one of
        // the home's (custodial, or a device key made at the home's page) past its wait.
        let key = signer_key(ctx, state)?;
        check!(ensure(
            key.origin == patient.home,
            why::ERASURE_NOT_HOME_KEY
        ));
        check!(ensure(!key.young_at(t), why::YOUNG_KEY));
        let Some(target) = state
            .sealed(&self.tx)?
            .filter(|s| s.patient == self.patient)
        else {
            return Ok(Err(Reject(why::NO_SUCH_SEALED)));
        };
        // The latest request decides: after an erasure no request is accepted, so at most one
        // erases; a refused one may be made again.
        if let Some(latest) = state.erasure_of(&self.tx)? {
            check!(ensure(latest.erased().is_none(), why::ALREADY_ERASED));
            check!(ensure(!latest.pending(), why::ERASURE_PENDING));
        }
        Ok(Ok(vec![Effect::Erasure(ErasureRow {
            id: ctx.id,
            patient: self.patient,
            target: self.tx,
            hospital: target.sealer,
            requested_by: ctx.header.signer.kind(),
            requested_ms: t,
            answer: None,
        })]))
    }
}

impl Rule for AnswerErasure {
    fn acts(&self) -> Acts {
        // Which validator is decided by the request (its target's sealer), read below.
        Acts::AnyValidator
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![Read::Erasure(self.request)]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let Some(request) = state.erasure(&self.request)?.filter(ErasureRow::pending) else {
            return Ok(Err(Reject(why::ERASURE_NOT_PENDING)));
        };
        check!(ensure(
            signing_validator(ctx) == request.hospital,
            why::ERASURE_NOT_SEALER
        ));
        Ok(Ok(vec![Effect::AnswerErasure {
            request: self.request,
            decision: self.decision,
            at_ms: ctx.block_time_ms,
        }]))
    }
}
