//! The bench's ceiling (`node::offline::Ceiling`, `medchain bench --mode ceiling`) leaves the
//! network as its load would have left it, once the key services had exchanged the keys: the
//! next start has none to fetch (BENCHMARKS.md, twenty-fourth: the ceiling's keys, held at the
//! sealer only, were fetched during the next measured run and halved it).
use std::time::{Duration, Instant};

mod common;

use common::{data_dir, fast_timing};
use node::Cluster;
use node::offline::Ceiling;

#[test]
fn the_ceilings_keys_are_kept_at_every_home_entitled_to_them() {
    let dir = data_dir();
    // A network made and stopped: the ceiling runs on stopped validators.
    drop(Cluster::open(dir.path(), fast_timing()).unwrap());
    let key_dir = ledger::master::default_key_dir(dir.path());
    let mut ceiling = Ceiling::open(dir.path(), &key_dir).unwrap();
    // 600 records: past the first 200, a record's patient and doctor have different homes
    // (`Population::pair`), so each key has two holders.
    let blocks = ceiling.make(1_200).unwrap();
    let applied = ceiling.apply(&blocks).unwrap();
    assert_eq!(
        applied.iter().map(|block| block.transactions).sum::<u64>(),
        1_200
    );
    drop(ceiling);

    let cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let handles = cluster.handles();
    let head = handles[0].status().height;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !handles
        .iter()
        .all(|handle| handle.key_status().processed_height >= head)
    {
        assert!(
            Instant::now() < deadline,
            "the key services did not process the ceiling's blocks"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for handle in &handles {
        let status = handle.key_status();
        assert_eq!(
            (status.waiting, status.counters.keys_received),
            (0, 0),
            "{} wants keys of the ceiling's records",
            handle.name()
        );
        // The population's homes are spread over the four validators: each is a party to
        // some of the records, and holds their keys.
        assert!(status.held > 0, "{} holds no key", handle.name());
    }
}
