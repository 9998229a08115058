//! `RequestErasure` and `AnswerErasure` (docs/SECURITY.md, "Confidential records", §7.1 and
//! §16 item 16): what each accepts, each reason each rejects for, and what an erasure changes.
use super::*;
use crate::tx::{Decision, Refusal};

const KEPT: Decision = Decision::Refuse {
    reason: Refusal::RetentionPeriod,
    until_ms: Some(T0 + 10 * 365 * 24 * HOUR),
};

impl World {
    /// A record by Dr `e` (Oncology, home 1) for `p` (home 0), under an in-person write grant:
    /// its id. Its sealer, which answers an erasure of it, is hospital 1.
    fn record_by_e(&mut self) -> TxId {
        let grant = self
            .c
            .net
            .grant(&self.p, &self.e.id, Scope::Write, None, &self.p.custodial());
        let grant_id = self.c.ok(&grant);
        let record = self
            .c
            .net
            .add_record(&self.e, &self.p.id, grant_id, &self.e.custodial());
        self.c.ok(&record)
    }
}

#[test]
fn an_erasure_is_requested_at_home_and_answered_by_the_sealer() {
    let mut w = world();
    let record = w.record_by_e();
    assert_eq!(w.c.records_of(&w.p.id).expect("q")[0].hospital, 1);
    assert!(w.c.pending_erasures_for(1).expect("q").is_empty());
    let t_request = w.c.now;
    let request = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    let request_id = w.c.ok(&request);
    let row = w.c.erasure(&request_id).expect("q").expect("row");
    assert_eq!(
        row,
        ErasureRow {
            id: request_id,
            patient: w.p.id,
            target: record,
            hospital: 1,
            requested_by: SignerKind::Custodial,
            requested_ms: t_request,
            answer: None,
        }
    );
    assert_eq!(
        w.c.pending_erasures_for(1).expect("q"),
        std::slice::from_ref(&row)
    );
    assert!(w.c.pending_erasures_for(0).expect("q").is_empty());
    assert_eq!(w.c.erasure_of(&record).expect("q"), Some(row));
    assert!(!w.c.is_erased(&record).expect("q"));
    assert_eq!(w.c.records_of(&w.p.id).expect("q")[0].erased, None);

    let t_answer = w.c.now;
    let answer = w.c.net.answer_erasure(1, request_id, Decision::Erase);
    let answer_id = w.c.ok(&answer);
    assert!(w.c.is_erased(&record).expect("q"));
    assert!(w.c.pending_erasures_for(1).expect("q").is_empty());
    let entry = &w.c.records_of(&w.p.id).expect("q")[0];
    assert_eq!(
        entry.erased,
        Some(crate::store::Erased {
            request: request_id,
            answer: answer_id,
            block_time_ms: t_answer,
        })
    );
    // The record stays on chain with its header and sealed body: only its keys go, off chain.
    assert_eq!(entry.header.id(&w.c.net.genesis.hash()), record);
    let content =
        w.c.net
            .open(&entry.header, &entry.body)
            .expect("opens with its key");
    assert_eq!(
        crate::tx::RecordBody::from_bytes(&content).expect("record"),
        testkit::sample_record(0)
    );
    let row = w.c.erasure(&request_id).expect("q").expect("row");
    assert_eq!(
        row.erased(),
        Some(&ErasureAnswer {
            tx: answer_id,
            block_time_ms: t_answer,
            decision: Decision::Erase,
        })
    );
    assert_eq!(w.c.erasures_of_patient(&w.p.id).expect("q"), [row]);
}

/// A refusal carries its reason code and date; a refused erasure may be asked again, and the
/// latest request is the one that counts.
#[test]
fn a_refused_erasure_may_be_asked_again() {
    let mut w = world();
    let record = w.record_by_e();
    let first = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    let first_id = w.c.ok(&first);
    let refuse = w.c.net.answer_erasure(1, first_id, KEPT);
    w.c.ok(&refuse);
    let refused = w.c.erasure_of(&record).expect("q").expect("row");
    assert_eq!(refused.answer.map(|a| a.decision), Some(KEPT));
    assert!(!w.c.is_erased(&record).expect("q"));
    assert_eq!(w.c.records_of(&w.p.id).expect("q")[0].erased, None);
    let second = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    let second_id = w.c.ok(&second);
    assert_eq!(
        w.c.erasure_of(&record).expect("q").map(|e| e.id),
        Some(second_id)
    );
    let erase = w.c.net.answer_erasure(1, second_id, Decision::Erase);
    w.c.ok(&erase);
    assert!(w.c.is_erased(&record).expect("q"));
    let mine = w.c.erasures_of_patient(&w.p.id).expect("q");
    assert_eq!(
        mine.iter().map(|e| e.id).collect::<Vec<_>>(),
        [second_id, first_id],
        "newest first"
    );
}

/// §16 item 16: purposes are erasable too. A request's sealer is its doctor's home; a grant's
/// is the origin of the patient's signing key.
#[test]
fn requests_and_grants_are_erased_by_their_sealers() {
    let mut w = world();
    w.p_device_aged();
    let request =
        w.c.net
            .request_grant(&w.e, &w.p.id, read(HOUR), &w.e.custodial());
    let request_id = w.c.ok(&request);
    let grant =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), Some(request_id), &w.p.device());
    let grant_id = w.c.ok(&grant);
    let elsewhere = w.p_key_from(2);
    let grant_at_2 = w.c.net.grant(
        &w.p,
        &w.d.id,
        Scope::Write,
        None,
        &w.p.device_with(&elsewhere),
    );
    let grant_at_2_id = w.c.ok(&grant_at_2);
    for (target, sealer) in [(request_id, 1), (grant_id, 0), (grant_at_2_id, 2)] {
        assert_eq!(
            w.c.sealed(&target).expect("q").map(|s| s.sealer),
            Some(sealer)
        );
        let ask = w.c.net.request_erasure(&w.p, target, &w.p.device());
        let ask_id = w.c.ok(&ask);
        assert_eq!(
            w.c.erasure(&ask_id).expect("q").expect("row").hospital,
            sealer
        );
        let wrong =
            w.c.net
                .answer_erasure((sealer + 1) % 4, ask_id, Decision::Erase);
        assert_eq!(w.c.now(&wrong), Err(ERASURE_NOT_SEALER));
        let answer = w.c.net.answer_erasure(sealer, ask_id, Decision::Erase);
        w.c.ok(&answer);
        assert!(w.c.is_erased(&target).expect("q"));
    }
    // An erased grant still works as a grant: erasure removes its purpose, not its consent.
    let access = w.c.net.access(1, &w.p.id, &w.e.id, Some(grant_id));
    w.c.ok(&access);
}

#[test]
fn request_erasure_rejects_each_bad_request() {
    let mut w = world();
    let record = w.record_by_e();
    // Signed by a validator; by another patient for p; for another patient's record.
    let meta = Meta::RequestErasure(crate::tx::RequestErasure {
        patient: w.p.id,
        tx: record,
    });
    let tx = w.c.net.sign(meta, &w.c.net.validator(0), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NEEDS_PERSON_KEY[11]));
    assert_eq!(
        NEEDS_PERSON_KEY[11],
        "request_erasure must be signed by the person's key"
    );
    let tx = w.c.net.request_erasure(&w.p, record, &w.q.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_ACTING_PERSON));
    let tx = w.c.net.request_erasure(&w.q, record, &w.q.custodial());
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_SEALED));
    // Not a sealed transaction: nothing on chain; an access; a rejected record.
    let tx = w.c.net.request_erasure(&w.p, [3; 32], &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_SEALED));
    let access = w.c.net.access(0, &w.p.id, &w.p.id, None);
    let access_id = w.c.ok(&access);
    let tx = w.c.net.request_erasure(&w.p, access_id, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_SEALED));
    let rejected = w.record([9; 32]);
    assert_eq!(w.c.now(&rejected), Err(NO_SUCH_GRANT));
    let tx =
        w.c.net
            .request_erasure(&w.p, w.c.id(&rejected), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_SEALED));
    // A key made at another hospital's page (§7.1, finding 5), even past any wait.
    let elsewhere = w.p_key_from(2);
    w.c.now += w.c.net.genesis.recovery_wait_ms();
    let tx =
        w.c.net
            .request_erasure(&w.p, record, &w.p.device_with(&elsewhere));
    assert_eq!(w.c.now(&tx), Err(ERASURE_NOT_HOME_KEY));
    // A young key of the home (§4.2).
    let until = w.p_device_young();
    let tx = w.c.net.request_erasure(&w.p, record, &w.p.device());
    assert_eq!(w.c.now(&tx), Err(YOUNG_KEY));
    // Pending already; erased already.
    let tx = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    let request = w.c.ok(&tx);
    let tx = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ERASURE_PENDING));
    let answer = w.c.net.answer_erasure(1, request, Decision::Erase);
    w.c.ok(&answer);
    let tx = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ALREADY_ERASED));
    let tx = w.c.net.request_erasure(&w.p, record, &w.p.device());
    assert_eq!(w.c.at(w.c.now.max(until), &tx), Err(ALREADY_ERASED));
    assert_eq!(w.c.erasures_of_patient(&w.p.id).expect("q").len(), 1);
}

#[test]
fn answer_erasure_rejects_each_bad_answer() {
    let mut w = world();
    let record = w.record_by_e();
    let tx = w.c.net.answer_erasure(1, [4; 32], Decision::Erase);
    assert_eq!(w.c.now(&tx), Err(ERASURE_NOT_PENDING));
    let request = w.c.net.request_erasure(&w.p, record, &w.p.custodial());
    let request_id = w.c.ok(&request);
    // Signed by a person; by the patient's home, which did not seal the record.
    let meta = Meta::AnswerErasure(crate::tx::AnswerErasure {
        request: request_id,
        decision: Decision::Erase,
    });
    let tx = w.c.net.sign(meta, &w.p.custodial(), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NEEDS_VALIDATOR[12]));
    assert_eq!(
        NEEDS_VALIDATOR[12],
        "answer_erasure must be signed by a validator"
    );
    let tx = w.c.net.answer_erasure(0, request_id, Decision::Erase);
    assert_eq!(w.c.now(&tx), Err(ERASURE_NOT_SEALER));
    assert!(w.c.erasure(&request_id).expect("q").expect("row").pending());
    // Answered once, for good.
    let tx = w.c.net.answer_erasure(1, request_id, KEPT);
    w.c.ok(&tx);
    let tx = w.c.net.answer_erasure(1, request_id, Decision::Erase);
    assert_eq!(w.c.now(&tx), Err(ERASURE_NOT_PENDING));
    assert!(!w.c.is_erased(&record).expect("q"));
}

/// A replayed sealed transaction (the same bytes in a later block) is a duplicate: it changes
/// no record and no erasure, and an erased record stays erased (§16 item 18: a duplicate never
/// deletes, nor adds, anything).
#[test]
fn a_replayed_sealed_transaction_changes_no_record_or_erasure() {
    let mut w = world();
    let grant =
        w.c.net
            .grant(&w.p, &w.e.id, Scope::Write, None, &w.p.custodial());
    w.c.ok(&grant);
    let record =
        w.c.net
            .add_record(&w.e, &w.p.id, w.c.id(&grant), &w.e.custodial());
    let record_id = w.c.ok(&record);
    let request = w.c.net.request_erasure(&w.p, record_id, &w.p.custodial());
    let request_id = w.c.ok(&request);
    let answer = w.c.net.answer_erasure(1, request_id, Decision::Erase);
    w.c.ok(&answer);
    let records = w.c.records_of(&w.p.id).expect("q");
    let erasures = w.c.erasures_of_patient(&w.p.id).expect("q");
    let t = w.c.now;
    assert_eq!(
        w.c.append(t, &[&grant, &record, &request, &answer]),
        [Err(DUPLICATE); 4]
    );
    assert_eq!(w.c.records_of(&w.p.id).expect("q"), records);
    assert_eq!(w.c.erasures_of_patient(&w.p.id).expect("q"), erasures);
    assert!(w.c.is_erased(&record_id).expect("q"));
    assert!(w.c.pending_erasures_for(1).expect("q").is_empty());
}
