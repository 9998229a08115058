//! Red team s51: the writer's held persons and keys (`Index::persons`, `Index::keys`). Every
//! verdict must be the one the rows alone give: a revoked key never signs again, in its block or
//! later, whatever the writer held before the revocation.
use super::*;

/// Forgets every held row (and nothing else: a mark at the current cover takes no entry back).
fn drop_held(c: &Chain) {
    c.index.truncate(c.index.mark());
}

fn grant_by(w: &World, doctor: &TestPerson, by: &testkit::Signing) -> SignedTx {
    w.c.net.grant(&w.p, &doctor.id, Scope::Write, None, by)
}

/// In one block, a grant signed by the patient's device key (so the writer holds the key),
/// `revoking` (which revokes that key), and another grant signed by it: the last is refused,
/// and so is one in the next block.
fn device_key_signs_nothing_after(w: &mut World, revoking: SignedTx) {
    let first = grant_by(w, &w.d, &w.p.device());
    let read = Scope::Read { duration_ms: HOUR };
    let after = w.c.net.grant(&w.p, &w.d.id, read, None, &w.p.device());
    let t = w.c.now;
    assert_eq!(
        w.c.append(t, &[&first, &revoking, &after]),
        [Ok(()), Ok(()), Err(SIGNER_KEY_REVOKED)]
    );
    let next = w.c.net.grant(&w.p, &w.e.id, read, None, &w.p.device());
    assert_eq!(w.c.now(&next), Err(SIGNER_KEY_REVOKED));
}

/// A key held by the writer since the block before is revoked inside a block: it signs nothing
/// after, in that block or later.
#[test]
fn a_key_held_then_revoked_in_its_block_signs_nothing_after() {
    let mut w = world();
    w.p_device();
    let before = grant_by(&w, &w.e, &w.p.device());
    assert_eq!(w.c.now(&before), Ok(()));
    let revoke =
        w.c.net
            .revoke_key(&w.p, public(&w.p.device), &w.p.custodial());
    device_key_signs_nothing_after(&mut w, revoke);
}

/// A recovery revokes the person's young keys through the same effect: a young key held by the
/// writer signs nothing once the recovery is applied, in its block or later.
#[test]
fn a_held_young_key_revoked_by_a_recovery_signs_nothing_after() {
    let mut w = world();
    w.p_device_young();
    let secret = key_from("p's recovered custodial key");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Custodial, 0, &secret);
    let recover = w.c.net.recover(&w.p, new);
    device_key_signs_nothing_after(&mut w, recover);
}

/// The same transactions give the same verdicts to a writer that holds rows across blocks and
/// to one that holds none at the start of each block (a validator just restarted): the held
/// rows decide nothing the rows do not.
#[test]
fn held_rows_decide_as_a_fresh_writer() {
    let script = |drop_each: bool| -> Vec<Vec<Verdict>> {
        let mut w = world();
        let mut out = Vec::new();
        w.p_device_young();
        let key2 = key_from("p's second device key");
        let added = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &key2);
        let add2 = w.c.net.add_key(&w.p, added, None, &w.p.custodial());
        let second = w.p.device_with(&key2);
        let blocks: Vec<Vec<SignedTx>> = vec![
            vec![grant_by(&w, &w.d, &w.p.device()), add2],
            vec![
                grant_by(&w, &w.e, &second),
                w.c.net.revoke_key(&w.p, public(&key2), &w.p.custodial()),
            ],
            vec![
                w.c.net.grant(
                    &w.p,
                    &w.d.id,
                    Scope::Read { duration_ms: HOUR },
                    None,
                    &second,
                ),
                w.c.net
                    .revoke_key(&w.p, public(&w.p.device), &w.p.custodial()),
                w.c.net.grant(
                    &w.p,
                    &w.e.id,
                    Scope::Read { duration_ms: HOUR },
                    None,
                    &w.p.device(),
                ),
            ],
            vec![w.c.net.grant(
                &w.p,
                &w.e.id,
                Scope::Read {
                    duration_ms: 2 * HOUR,
                },
                None,
                &w.p.device(),
            )],
        ];
        for txs in &blocks {
            if drop_each {
                drop_held(&w.c);
            }
            let t = w.c.now;
            let refs: Vec<&SignedTx> = txs.iter().collect();
            out.push(w.c.append(t, &refs));
        }
        out
    };
    let held = script(false);
    assert_eq!(held, script(true));
    assert!(
        held.iter().flatten().any(|v| *v == Err(SIGNER_KEY_REVOKED)),
        "{held:?}"
    );
}
