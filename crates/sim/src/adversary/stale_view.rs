//! Stale views: re-labels its votes and view-changes with the view before.
use pbft::Message;

pub fn rewrite(m: Message) -> Message {
    match m {
        Message::Prepare(mut v) if v.view > 0 => {
            v.view -= 1;
            Message::Prepare(v)
        }
        Message::Commit(mut v) if v.view > 0 => {
            v.view -= 1;
            Message::Commit(v)
        }
        Message::ViewChange(mut vc) if vc.new_view > 1 => {
            vc.new_view -= 1;
            Message::ViewChange(vc)
        }
        m => m,
    }
}
