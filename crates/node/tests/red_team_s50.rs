//! Red team s50: the busy flag (`Shared::turning_away`) the handles read before any check.
mod common;

use common::{enrollment, fast_timing, runtime};
use node::Cluster;

/// A validator whose runtime stopped while it was turning submissions away must answer its
/// clients "stopped" (`NodeError::Stopped`, "the validator is not running"), not "busy; please
/// retry shortly" for ever: the flag is the runtime's judgement, and nothing judges it again
/// once the runtime is gone (a storage error, e.g. a full disk, stops the runtime while the
/// process keeps serving, and is most likely exactly when the validator is behind).
#[test]
fn a_stopped_validator_is_not_busy_for_ever() {
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let hospital = cluster.handle(0).unwrap();
    let rt = runtime();
    // 64 waiting make the validator busy.
    common::queue_with_no_quorum(&mut cluster, &rt, 64);
    let refused = rt.block_on(hospital.submit(enrollment(&hospital)));
    assert!(matches!(refused, Err(node::NodeError::Busy)), "{refused:?}");
    assert!(hospital.shared().turning_away());
    // Its runtime stops (the handle, as the HTTP server's, stays).
    cluster.stop(0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let after = rt.block_on(hospital.submit(enrollment(&hospital)));
    assert!(
        matches!(after, Err(node::NodeError::Stopped)),
        "a stopped validator answers {after:?}"
    );
    assert!(
        !hospital.shared().turning_away(),
        "the busy flag outlives the runtime that set it"
    );
}

/// The records made before the run (`bench --premade`) wait in a file as large as the run;
/// "the file is gone after" must hold however the run ends, a run that times out included
/// (here: two validators stop once the run starts, so nothing acknowledged commits in time).
#[test]
fn the_made_records_file_is_removed_when_the_run_fails() {
    use node::load::{Load, MadeBefore, Progress, drive};
    use std::time::Duration;
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let handles = cluster.handles();
    let made = tempfile::tempdir().unwrap();
    let file = made.path().join("made.bin");
    let load = Load {
        rate: Some(100),
        duration: Duration::from_millis(500),
        concurrency: 1,
        made_before: Some(MadeBefore {
            records: 40,
            file: file.clone(),
        }),
    };
    let rt = runtime();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let run = rt.spawn(async move {
        drive(&handles, &load, Duration::from_secs(4), move |progress| {
            if matches!(progress, Progress::Started) {
                let _ = started_tx.send(());
            }
        })
        .await
    });
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run starts");
    assert!(file.exists(), "the made records wait in their file");
    cluster.stop(2);
    cluster.stop(3);
    let report = rt.block_on(run).unwrap();
    assert!(report.is_err(), "nothing could commit: {report:?}");
    assert!(
        !file.exists(),
        "the made records' file is left behind by a failed run: {report:?}"
    );
}
