//! Consent: `RequestGrant`, `Grant`, `Revoke`.
use super::reason as why;
use super::{
    Acts, Answer, Ctx, Effect, GrantRow, MAX_PENDING_PER_DOCTOR, MAX_PENDING_PER_HOSPITAL, Outcome,
    READ_GRANT_MAX_MS, READ_GRANT_MIN_MS, REQUEST_MS, Read, Reject, RequestRow, Rule, StateView,
    WRITE_GRANT_MS, ensure, person_with_role, signer_key,
};
use crate::Result;
use crate::tx::{Attested, Grant, KeyKind, RequestGrant, Revoke, Role, Scope, SignerKind};

/// A read grant lasts 1 minute to 30 days.
fn scope_ok(scope: &Scope) -> bool {
    match scope {
        Scope::Write => true,
        Scope::Read { duration_ms } => {
            (READ_GRANT_MIN_MS..=READ_GRANT_MAX_MS).contains(duration_ms)
        }
    }
}

impl Rule for RequestGrant {
    fn acts(&self) -> Acts {
        Acts::Person(self.doctor)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![
            Read::Person(self.patient),
            Read::PendingRequests {
                doctor: self.doctor,
                patient: self.patient,
            },
            Read::PendingRequestsFromHospitalOf {
                doctor: self.doctor,
                patient: self.patient,
            },
        ]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let t = ctx.block_time_ms;
        check!(ensure(
            person_with_role(state, &self.patient, Role::Patient)?.is_some(),
            why::NOT_A_PATIENT
        ));
        let Some(doctor) = person_with_role(state, &self.doctor, Role::Doctor)? else {
            return Ok(Err(Reject(why::NOT_A_DOCTOR)));
        };
        let home_of_doctor = doctor.home;
        check!(ensure(scope_ok(&self.scope), why::READ_DURATION));
        check!(ensure(
            state.pending_requests(&self.doctor, &self.patient, t)? < MAX_PENDING_PER_DOCTOR,
            why::TOO_MANY_REQUESTS_DOCTOR
        ));
        check!(ensure(
            state.pending_requests_from_hospital_of(&self.doctor, &self.patient, t)?
                < MAX_PENDING_PER_HOSPITAL,
            why::TOO_MANY_REQUESTS_HOSPITAL
        ));
        Ok(Ok(vec![Effect::Request(RequestRow {
            id: ctx.id,
            patient: self.patient,
            doctor: self.doctor,
            doctor_home: home_of_doctor,
            scope: self.scope,
            created_ms: t,
            expires_ms: t.saturating_add(REQUEST_MS),
            answered: None,
        })]))
    }
}

impl Rule for Grant {
    fn acts(&self) -> Acts {
        Acts::Person(self.patient)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        let mut reads = vec![Read::Person(self.doctor)];
        reads.extend(self.request.map(Read::Request));
        reads
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let t = ctx.block_time_ms;
        let Some(patient) = person_with_role(state, &self.patient, Role::Patient)? else {
            return Ok(Err(Reject(why::NOT_A_PATIENT)));
        };
        let Some(doctor) = person_with_role(state, &self.doctor, Role::Doctor)? else {
            return Ok(Err(Reject(why::NOT_A_DOCTOR)));
        };
        // The chain records how the patient gave it: a custodial signature is the home's word
        // that the patient was there; a device signature is the patient's own.
        let expected = match ctx.header.signer.kind() {
            SignerKind::Custodial => Attested::InPerson,
            _ => Attested::Device,
        };
        check!(ensure(self.attested == expected, why::ATTESTATION_MISMATCH));
        check!(ensure(scope_ok(&self.scope), why::READ_DURATION));
        let mut effects = Vec::with_capacity(2);
        if let Some(request_id) = self.request {
            let Some(request) = state.request(&request_id)? else {
                return Ok(Err(Reject(why::REQUEST_NOT_PENDING)));
            };
            check!(ensure(request.pending_at(t), why::REQUEST_NOT_PENDING));
            let scope_matches = match (request.scope, self.scope) {
                (Scope::Write, Scope::Write) => true,
                (Scope::Read { duration_ms: asked }, Scope::Read { duration_ms }) => {
                    duration_ms <= asked
                }
                _ => false,
            };
            check!(ensure(
                request.patient == self.patient && request.doctor == self.doctor && scope_matches,
                why::GRANT_REQUEST_MISMATCH
            ));
            effects.push(Effect::AnswerRequest(request_id, Answer::Granted));
        }
        // The signing key's origin seals the grant's purpose (docs/SECURITY.md, "Confidential
        // records", §1).
        let key = signer_key(ctx, state)?;
        if matches!(self.scope, Scope::Read { .. }) {
            // Keys follow read grants (ibid. §4.2): a read grant is the confidentiality gate,
            // so it takes a key of the patient's home: not a device key another hospital's
            // page made (that hospital could grant itself the history), not the in-person
            // screen for another hospital's doctor, not a key added on a password alone before
            // its wait for another hospital's doctor.
            let home_doctor = doctor.home == patient.home;
            check!(ensure(
                key.origin == patient.home,
                why::READ_GRANT_NOT_HOME_KEY
            ));
            check!(ensure(
                key.kind != KeyKind::Custodial || home_doctor,
                why::READ_GRANT_IN_PERSON_NOT_HOME_DOCTOR
            ));
            check!(ensure(home_doctor || !key.young_at(t), why::YOUNG_KEY));
        }
        let expires_ms = t.saturating_add(match self.scope {
            Scope::Write => WRITE_GRANT_MS,
            Scope::Read { duration_ms } => duration_ms,
        });
        effects.insert(
            0,
            Effect::Grant(GrantRow {
                id: ctx.id,
                patient: self.patient,
                doctor: self.doctor,
                scope: self.scope,
                attested: self.attested,
                request: self.request,
                granted_ms: t,
                expires_ms,
                sealer: key.origin,
                used: None,
                revoked: None,
            }),
        );
        Ok(Ok(effects))
    }
}

impl Rule for Revoke {
    fn acts(&self) -> Acts {
        Acts::Person(self.patient)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![Read::Grant(self.target), Read::Request(self.target)]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let t = ctx.block_time_ms;
        if let Some(grant) = state
            .grant(&self.target)?
            .filter(|g| g.patient == self.patient)
        {
            check!(ensure(grant.used.is_none(), why::GRANT_USED));
            check!(ensure(grant.revoked.is_none(), why::GRANT_REVOKED));
            check!(ensure(t < grant.expires_ms, why::GRANT_EXPIRED));
            return Ok(Ok(vec![Effect::RevokeGrant(self.target)]));
        }
        match state.request(&self.target)? {
            Some(request) if request.patient == self.patient && request.pending_at(t) => {
                Ok(Ok(vec![Effect::AnswerRequest(self.target, Answer::Denied)]))
            }
            _ => Ok(Err(Reject(why::NO_SUCH_TARGET))),
        }
    }
}
