//! Records and reads: `AddRecord`, `Access`.
use super::reason as why;
use super::{
    Acts, Ctx, Effect, Outcome, Read, Reject, Rule, StateView, ensure, person_with_role, signer_key,
};
use crate::Result;
use crate::tx::{Access, AddRecord, Role, Scope};

impl Rule for AddRecord {
    fn acts(&self) -> Acts {
        Acts::Person(self.doctor)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        vec![Read::Grant(self.grant)]
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let Some(doctor) = person_with_role(state, &self.doctor, Role::Doctor)? else {
            return Ok(Err(Reject(why::NOT_A_DOCTOR)));
        };
        check!(ensure(
            doctor.department.as_deref() == Some(self.department.as_str()),
            why::NOT_OWN_DEPARTMENT
        ));
        let Some(grant) = state.grant(&self.grant)? else {
            return Ok(Err(Reject(why::NO_SUCH_GRANT)));
        };
        check!(ensure(
            grant.scope == Scope::Write
                && grant.patient == self.patient
                && grant.doctor == self.doctor,
            why::NOT_A_WRITE_GRANT
        ));
        check!(ensure(grant.revoked.is_none(), why::GRANT_WAS_REVOKED));
        check!(ensure(grant.used.is_none(), why::GRANT_USED));
        check!(ensure(
            ctx.block_time_ms < grant.expires_ms,
            why::GRANT_HAS_EXPIRED
        ));
        // The sealer is the origin of the doctor's signing key: their home, where every key of
        // a doctor is made.
        let hospital = signer_key(ctx, state)?.origin;
        Ok(Ok(vec![
            Effect::UseGrant(self.grant),
            Effect::Record {
                patient: self.patient,
                doctor: self.doctor,
                grant: self.grant,
                hospital,
            },
        ]))
    }
}

impl Rule for Access {
    fn acts(&self) -> Acts {
        Acts::Validator(self.serving, why::ACCESS_NOT_SERVING)
    }

    fn reads(&self, _: &Ctx<'_>) -> Vec<Read> {
        let mut reads = vec![Read::Person(self.patient)];
        match self.grant {
            None => reads.push(Read::Link(self.patient, self.serving)),
            Some(grant) => {
                reads.push(Read::Person(self.reader));
                reads.push(Read::Grant(grant));
            }
        }
        reads
    }

    fn decide(&self, ctx: &Ctx<'_>, state: &dyn StateView) -> Result<Outcome> {
        let Some(patient) = person_with_role(state, &self.patient, Role::Patient)? else {
            return Ok(Err(Reject(why::NOT_A_PATIENT)));
        };
        match self.grant {
            None => {
                check!(ensure(self.reader == self.patient, why::OWN_READ_ONLY));
                check!(ensure(
                    self.serving == patient.home || state.linked(&self.patient, self.serving)?,
                    why::NOT_SERVED_HERE
                ));
            }
            Some(grant_id) => {
                let Some(reader) = person_with_role(state, &self.reader, Role::Doctor)? else {
                    return Ok(Err(Reject(why::NOT_A_DOCTOR)));
                };
                check!(ensure(
                    self.serving == reader.home,
                    why::DOCTOR_READS_AT_HOME
                ));
                let Some(grant) = state.grant(&grant_id)? else {
                    return Ok(Err(Reject(why::NO_SUCH_GRANT)));
                };
                check!(ensure(
                    matches!(grant.scope, Scope::Read { .. })
                        && grant.patient == self.patient
                        && grant.doctor == self.reader,
                    why::NOT_A_READ_GRANT
                ));
                check!(ensure(grant.revoked.is_none(), why::GRANT_WAS_REVOKED));
                check!(ensure(
                    ctx.block_time_ms < grant.expires_ms,
                    why::GRANT_HAS_EXPIRED
                ));
            }
        }
        Ok(Ok(vec![Effect::Access {
            patient: self.patient,
            reader: self.reader,
            serving: self.serving,
            grant: self.grant,
        }]))
    }
}
