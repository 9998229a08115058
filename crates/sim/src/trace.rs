//! One-line descriptions of inputs, messages and actions for `--trace`.
use pbft::{Action, Digest, Durable, Input, Message};

use crate::network::Packet;

pub fn short(d: &Digest) -> String {
    format!("{:02x}{:02x}", d[0], d[1])
}

pub fn message(m: &Message) -> String {
    match m {
        Message::Forward(r) => format!("Forward({} requests)", r.len()),
        Message::PrePrepare(pp) => format!(
            "PrePrepare(v{} s{} {} prev {} {} reqs, {} ms)",
            pp.view,
            pp.proposal.seq,
            short(&pp.digest),
            short(&pp.proposal.prev),
            pp.proposal.requests.len(),
            pp.proposal.time_ms
        ),
        Message::Prepare(v) => format!("Prepare(v{} s{} {})", v.view, v.seq, short(&v.digest)),
        Message::Commit(v) => format!("Commit(v{} s{} {})", v.view, v.seq, short(&v.digest)),
        Message::Checkpoint(c) => format!("Checkpoint(s{} {})", c.seq, short(&c.digest)),
        Message::ViewChange(vc) => format!(
            "ViewChange(v{} ck s{} {} certs)",
            vc.new_view,
            vc.checkpoint.seq,
            vc.prepared.len()
        ),
        Message::NewView(nv) => format!(
            "NewView(v{} {} vcs, O = {:?})",
            nv.view,
            nv.view_changes.len(),
            nv.pre_prepares
                .iter()
                .map(|pp| (pp.proposal.seq, short(&pp.digest)))
                .collect::<Vec<_>>()
        ),
        Message::RecoveryQuery(q) => format!("RecoveryQuery({:x})", q.nonce),
        Message::Lives(lives) => format!(
            "Lives({:?})",
            lives
                .iter()
                .map(|l| (l.from, l.message.incarnation))
                .collect::<Vec<_>>()
        ),
        Message::RecoveryAnswer(a) => format!(
            "RecoveryAnswer(s{} with {} commits, querier's v{:?})",
            a.last_executed,
            a.executed_proof.len(),
            a.querier_message.as_ref().map(|m| m.message.view())
        ),
    }
}

pub fn packet(p: &Packet) -> String {
    match p {
        Packet::Pbft(m) => message(&m.message),
        Packet::FetchBlocks { after } => format!("FetchBlocks(after s{after})"),
        Packet::Blocks(b) => format!(
            "Blocks(s{:?}..s{:?})",
            b.first().map(|c| c.proposal.seq),
            b.last().map(|c| c.proposal.seq)
        ),
    }
}

pub fn input(i: &Input) -> String {
    match i {
        Input::Tick { now_ms } => format!("Tick({now_ms} ms)"),
        Input::Clock { now_ms } => format!("Clock({now_ms} ms)"),
        Input::Message(m) => format!("{} from {}", message(&m.message), m.from),
        Input::Request(r) => format!("Request({})", short(&r.id)),
        Input::Cut => "Cut".into(),
        Input::Withdraw(ids) => format!("Withdraw({} requests)", ids.len()),
        Input::Executed { seq, digest } => format!("Executed(s{seq} {})", short(digest)),
        Input::StateTransferred { seq, digest, .. } => {
            format!("StateTransferred(s{seq} {})", short(digest))
        }
    }
}

pub fn action(a: &Action) -> String {
    match a {
        Action::Send { to, message: m } => format!("send to {to}: {}", message(m)),
        Action::Broadcast(m) => format!("broadcast {}", message(m)),
        Action::Persist(d) => {
            let kind = match d {
                Durable::View(_) => "view",
                Durable::ViewChange(_) => "view-change",
                Durable::PrePrepare(_) => "pre-prepare",
                Durable::Withheld(_) => "withheld pre-prepare",
                Durable::Inherited { .. } => "inheritance",
                Durable::Prepared(_) => "prepared",
                Durable::StableCheckpoint { .. } => "stable checkpoint",
                Durable::NewView(_) => "new-view",
                Durable::Recovery { .. } => "recovery",
                Durable::Incarnation { .. } => "incarnation",
            };
            let seq = d.seq().map_or(String::new(), |s| format!(" s{s}"));
            format!("persist {kind}{seq}")
        }
        Action::Execute(c) => format!(
            "EXECUTE s{} {} (view {}, {} reqs, {} ms)",
            c.proposal.seq,
            short(&c.digest),
            c.commit_view,
            c.proposal.requests.len(),
            c.proposal.time_ms
        ),
        Action::FetchState { seq, peers, .. } => format!("fetch state to s{seq} from {peers:?}"),
        Action::ReadExecuted { seq } => format!("read the executed digest at s{seq}"),
        Action::Alarm(alarm) => format!("ALARM {alarm}"),
    }
}
