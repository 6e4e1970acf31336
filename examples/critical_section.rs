//! A critical section with the scoped runner, and what a loss does to it.
//!
//! `cargo run --example critical_section` starts three local `redis-server` nodes
//! through the test kit (`redis-server` on the `PATH`, or `REDFENCE_REDIS_SERVER`).
//!
//! 1. `Client::run` holds the lock while the section runs and releases it when the
//!    section returns; a watchdog renews the lease meanwhile.
//! 2. Two of the three nodes freeze mid-section: the watchdog cannot renew on a
//!    majority, reports the loss before the lease runs out, and the runner cancels the
//!    section at its next `.await` and returns `Error::Lost`.

use std::time::{Duration, Instant};

use redfence::Error;
use redfence::testkit::Cluster;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(3)?;
    let client = cluster
        .client_builder()
        .ttl(Duration::from_secs(2))
        .build()?;

    let total = client
        .run("report", async |lock| {
            println!(
                "1. holding {:?} with fencing token {}",
                lock.resource(),
                lock.token()
            );
            tokio::time::sleep(Duration::from_secs(3)).await; // longer than the TTL
            println!("   still held after 3 s: the watchdog renewed it");
            42
        })
        .await?;
    println!("   the section returned {total}; the lock is released");

    let started = Instant::now();
    let outcome = client
        .run("report", async |_lock| {
            println!("2. holding again; freezing two of the three nodes");
            cluster.pause(0).expect("SIGSTOP node 0");
            cluster.pause(1).expect("SIGSTOP node 1");
            tokio::time::sleep(Duration::from_secs(60)).await; // never finishes
            "finished"
        })
        .await;
    cluster.resume(0)?;
    cluster.resume(1)?;
    match outcome {
        Err(Error::Lost { reason, .. }) => {
            println!(
                "   the section was stopped {:.1?} after it started: {reason}",
                started.elapsed()
            );
            Ok(())
        }
        other => Err(format!("expected the loss to stop the section, got {other:?}").into()),
    }
}
