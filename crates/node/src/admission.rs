//! Mempool admission: which transactions a correct validator takes into its mempool, from its
//! own clients and from peers' forwards (docs/SECURITY.md, "Identities, keys and consent on
//! chain", §1 "Admission to the mempool").
//!
//! Admission is stricter than consensus validity, and local. Validity (what a backup accepts in
//! a pre-prepare) is the stateless edge check alone ([`crate::verify`]), so that validators never
//! split on state. Admission also runs the state machine's rules ([`ledger::rules::decide`]) at
//! `T = now` on this validator's committed state, and refuses an id already on chain: a correct
//! node then proposes a transaction that breaks a rule only if its state is stale or the
//! transaction lost a race in its block (a revocation ordered first, an expiry), and a dishonest
//! validator's well-signed but unlawful transactions reach a block only through its own
//! proposals, where every validator rejects them. It decides nothing for good: the rules decide
//! again, at the transaction's place in the chain.
//!
//! Ids pending in this validator's mempool are the caller's to check (they are not on chain).

use ledger::rules::{self, Reject};
use ledger::{Genesis, SignedTx, StateView};

/// Whether `tx` may enter the mempool: `Ok(Ok(()))`, or the rule that rejects it at `now_ms`
/// on `state`, the committed chain ([`ledger::Queries::state`]), as if it were in the next
/// block (a transaction on chain already is a duplicate). `Err` is a failure to read the
/// state, never a verdict.
pub(crate) fn admit(
    state: &dyn StateView,
    genesis: &Genesis,
    tx: &SignedTx,
    now_ms: u64,
) -> Result<Result<(), Reject>, ledger::Error> {
    Ok(rules::precheck(state, genesis, tx, now_ms)?.map(|_effects| ()))
}

#[cfg(test)]
mod tests {
    use ledger::testkit::{GENESIS_TIME_MS, TestNet};
    use ledger::tx::Scope;
    use ledger::{OpenOptions, Queries, Store, rules::reason};

    use super::*;

    /// The rules at `T = now` on the committed state: a record with no grant, a grant before
    /// its people are enrolled and a transaction already on chain are refused with the rule's
    /// reason; once the enrollments and the grant are on chain, the record is admitted.
    #[test]
    fn admission_runs_the_rules_on_committed_state() {
        let net = TestNet::new(4);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(
            &dir.path().join("chain.db"),
            &net.genesis,
            OpenOptions::default(),
        )
        .expect("store");
        let patient = net.patient(1, 0);
        let doctor = net.doctor(2, 0, "Cardiology");
        let grant = net.grant(
            &patient,
            &doctor.id,
            Scope::Write,
            None,
            &patient.custodial(),
        );
        let record = net.add_record(&doctor, &patient.id, net.id(&grant), &doctor.custodial());
        let now = GENESIS_TIME_MS + 10_000;
        let check = |store: &Store, tx: &ledger::SignedTx| {
            admit(&store.state(), &net.genesis, tx, now)
                .expect("reads")
                .map_err(|reject| reject.0)
        };
        assert_eq!(check(&store, &grant), Err(reason::SIGNER_KEY_NOT_OF_PERSON));
        assert_eq!(
            check(&store, &record),
            Err(reason::SIGNER_KEY_NOT_OF_PERSON)
        );
        let enrolled = net.next_block(
            (0, net.genesis.hash()),
            vec![net.enroll(&patient), net.enroll(&doctor)],
        );
        net.append(&mut store, &enrolled).expect("appended");
        assert_eq!(check(&store, &grant), Ok(()));
        assert_eq!(check(&store, &record), Err(reason::NO_SUCH_GRANT));
        let granted = net.next_block((1, enrolled.hash()), vec![grant.clone()]);
        net.append(&mut store, &granted).expect("appended");
        assert_eq!(check(&store, &grant), Err(reason::DUPLICATE));
        assert_eq!(check(&store, &record), Ok(()));
    }
}
