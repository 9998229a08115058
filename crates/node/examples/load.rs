//! Quick load of an embedded cluster: `cargo run --release -p node --example load -- [rate] [secs]`
//! (rate 0 = as fast as possible). `medchain bench` is the full command.
use std::time::Duration;

use node::load::{Load, drive};
use node::{Cluster, Timing};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let timing = Timing {
        batch_window: Duration::from_millis(10),
        ..Timing::default()
    };
    let cluster = Cluster::open(dir.path(), timing).expect("cluster");
    let handles = cluster.handles();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = Load {
        rate: (rate > 0).then_some(rate),
        duration: Duration::from_secs(secs),
        concurrency: 256,
    };
    let report = runtime
        .block_on(drive(
            &handles,
            &load,
            Duration::from_secs(60),
            |elapsed, acked| eprintln!("{:>5.1}s {acked} acknowledged", elapsed.as_secs_f64()),
        ))
        .expect("load");
    println!("{report:#?}");
}
