//! The bench's ceiling (`node::offline::Ceiling`, `medchain bench --mode ceiling`) leaves the
//! network as its load would have left it, once the key services had exchanged the keys: the
//! next start has none to fetch (BENCHMARKS.md, twenty-fourth: the ceiling's keys, held at the
//! sealer only, were fetched during the next measured run and halved it).
use std::time::Duration;

mod common;

use common::tcp::wait_until;
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
    wait_until(
        Duration::from_secs(60),
        "the key services to process the ceiling's blocks",
        || {
            handles
                .iter()
                .all(|handle| handle.key_status().processed_height >= head)
        },
    );
    // Each validator holds the key of every sealed transaction it is a party to
    // (`ledger::entitled::Parties`), and no other (red team s51).
    let reader =
        ledger::Reader::open(&dir.path().join(handles[0].name()).join("chain.db")).unwrap();
    let mut entitled = vec![0u64; handles.len()];
    for height in 1..=head {
        let Some(block) = ledger::entitled::applied_block(&reader, height).unwrap() else {
            continue;
        };
        for entry in block.entries {
            let (Some(header), ledger::entitled::EntryVerdict::Applied) =
                (entry.header, entry.verdict)
            else {
                continue;
            };
            if let Some(parties) = ledger::entitled::parties(&reader, &header).unwrap() {
                for (validator, count) in entitled.iter_mut().enumerate() {
                    *count += u64::from(parties.includes(validator as u32));
                }
            }
        }
    }
    for (validator, handle) in handles.iter().enumerate() {
        let status = handle.key_status();
        assert_eq!(
            (status.waiting, status.counters.keys_received),
            (0, 0),
            "{} wants keys of the ceiling's records",
            handle.name()
        );
        assert_eq!(status.held, entitled[validator], "{}", handle.name());
    }
}
