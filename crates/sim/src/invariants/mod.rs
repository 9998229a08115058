//! Safety invariants, checked after every step of every replica. One file each; each keeps a
//! cursor per replica so a check only looks at what changed.
mod agreement;
mod bounded_log;
mod checkpoint_agreement;
mod total_order;
mod validity;

use crate::world::World;

pub struct Checkers {
    agreement: agreement::Agreement,
    total_order: total_order::TotalOrder,
    validity: validity::Validity,
    checkpoints: checkpoint_agreement::CheckpointAgreement,
    bounded: bounded_log::BoundedLog,
}

impl Checkers {
    pub fn new(n: usize) -> Self {
        Checkers {
            agreement: agreement::Agreement::new(n),
            total_order: total_order::TotalOrder::new(n),
            validity: validity::Validity::new(n),
            checkpoints: checkpoint_agreement::CheckpointAgreement::default(),
            bounded: bounded_log::BoundedLog,
        }
    }

    /// Runs every checker; the first violation wins.
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        self.agreement.check(w)?;
        self.total_order.check(w)?;
        self.validity.check(w)?;
        self.checkpoints.check(w, self.agreement.chain())?;
        self.bounded.check(w)
    }
}
