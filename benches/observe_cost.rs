//! What the `tracing` and `metrics` features cost when nobody listens: the uncontended
//! acquire-and-release cycle of a build without them against a build with them and no
//! subscriber or recorder installed, on the same three nodes, in alternating rounds.
//!
//! Features are chosen at build time, so there are two binaries: `scripts/observe-cost.sh`
//! builds both and runs one as the driver. The driver starts the nodes, and in each round
//! runs both binaries as child processes against them (`REDFENCE_NODES`), one after the
//! other, the first one alternating, so that both meet the same machine load.

use std::process::Command;
use std::time::{Duration, Instant};

use redfence::Client;
use redfence::testkit::Cluster;

const ROUNDS: usize = 20;
const WARMUP: usize = 200;
const CYCLES: usize = 2_000;

/// `CYCLES` timed acquire-and-release cycles (after `WARMUP` untimed ones), in µs.
async fn cycles(urls: &[String]) -> Vec<u64> {
    let mut b = Client::builder();
    for u in urls {
        b = b.node(u);
    }
    let c = b.build().expect("a client");
    let mut took = Vec::with_capacity(CYCLES);
    for k in 0..WARMUP + CYCLES {
        let start = Instant::now();
        let g = c
            .try_acquire("observe-cost")
            .await
            .expect("nodes answer")
            .expect("uncontended");
        g.release().await.expect("released");
        if k >= WARMUP {
            took.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
    }
    c.shutdown(Duration::from_secs(2)).await;
    took
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // The other build: run one round's cycles against the given nodes, print them.
    if let Ok(nodes) = std::env::var("REDFENCE_NODES") {
        let urls: Vec<String> = nodes.split(',').map(str::to_owned).collect();
        let took = rt.block_on(cycles(&urls));
        let line: Vec<String> = took.iter().map(u64::to_string).collect();
        println!("{}", line.join(" "));
        return;
    }
    let (Ok(off_bin), Ok(on_bin)) = (std::env::var("REDFENCE_OFF"), std::env::var("REDFENCE_ON"))
    else {
        eprintln!("run through scripts/observe-cost.sh (it builds the two binaries)");
        std::process::exit(2);
    };
    let cluster = Cluster::start(3).expect("redis-server");
    let nodes = cluster.urls().join(",");
    let run = |bin: &str| -> Vec<u64> {
        let out = Command::new(bin)
            .env("REDFENCE_NODES", &nodes)
            .output()
            .expect("the bench binary runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut took: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|t| t.parse().expect("µs"))
            .collect();
        took.sort_unstable();
        took
    };
    // `off` twice: how far apart two runs of one build land is the noise the
    // comparison has to be read against.
    let (mut off, mut again, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Each build runs as a child process; the order rotates every round.
        let mut legs: [(&str, &mut Vec<u64>); 3] = [
            (&off_bin, &mut off),
            (&off_bin, &mut again),
            (&on_bin, &mut on),
        ];
        legs.rotate_left(round % 3);
        let mut p50 = Vec::new();
        for (bin, into) in legs {
            let took = run(bin);
            p50.push(quantile(&took, 0.5));
            into.extend(took);
        }
        println!("round {round}: p50s {p50:?} µs");
    }
    let report = |name: &str, v: &mut Vec<u64>, base: (u64, u64)| {
        v.sort_unstable();
        let (p50, p99) = (quantile(v, 0.5), quantile(v, 0.99));
        #[allow(clippy::cast_precision_loss)]
        let ratio = |a: u64, b: u64| a as f64 / b as f64;
        println!(
            "{name:<34} p50 {p50:>4} µs  p99 {p99:>4} µs   vs off: p50 {:.3}  p99 {:.3}",
            ratio(p50, base.0),
            ratio(p99, base.1)
        );
    };
    off.sort_unstable();
    let base = (quantile(&off, 0.5), quantile(&off, 0.99));
    println!(
        "{} cycles per build (3 nodes, uncontended acquire + release, {ROUNDS} rounds)",
        off.len()
    );
    report("features off", &mut off, base);
    report("features off, second run (noise)", &mut again, base);
    report("tracing + metrics, no listener", &mut on, base);
}
