//! Chaos-testing your own critical section with the test kit: workers run it against
//! local nodes while a nemesis freezes, kills and restarts them; every acquisition and
//! fenced write goes into a `History`, and the checker holds the run to the lock's
//! promises (no two valid holders at once, tokens increasing, storage never accepting
//! an older token, losses reported in time).
//!
//! `cargo run --example chaos_test` (about 10 s; `redis-server` on the `PATH`, or
//! `REDFENCE_REDIS_SERVER`). Replace `critical_section` with yours.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redfence::fence::RedisFencedStore;
use redfence::testkit::history::{Event, History};
use redfence::testkit::{Cluster, Persistence};
use redfence::{AcquireOptions, Client, LockGuard};

const RESOURCE: &str = "counter";

/// The code under test: a read-modify-write of a shared counter, fenced by the token.
async fn critical_section(
    worker: usize,
    guard: &LockGuard,
    store: &RedisFencedStore,
    history: &History,
) -> Result<(), redfence::fence::StoreError> {
    let current = store.read(RESOURCE).await?;
    let n: u64 = current
        .and_then(|f| String::from_utf8_lossy(&f.value).parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let verdict = store
        .write(RESOURCE, guard.token(), (n + 1).to_string().as_bytes())
        .await?;
    history.record(Event::Write {
        worker,
        resource: RESOURCE.into(),
        token: guard.token(),
        verdict,
        stale_by_design: false,
    });
    Ok(())
}

async fn worker(
    id: usize,
    client: Client,
    store: Arc<RedisFencedStore>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let guard = match client
            .acquire_with(RESOURCE, AcquireOptions::new().watchdog(true))
            .await
        {
            Ok(g) => g,
            Err(e) => {
                history.record(Event::AcquireFailed {
                    worker: id,
                    resource: RESOURCE.into(),
                    reason: e.to_string().chars().take(40).collect(),
                });
                continue;
            }
        };
        history.record(Event::Acquired {
            worker: id,
            resource: RESOURCE.into(),
            token: guard.token(),
            started,
            acquired: Instant::now(),
        });
        // Stop at a loss: the section is cancelled at its next await.
        let lost = tokio::select! {
            _ = guard.lost() => true,
            r = critical_section(id, &guard, &store, &history) => {
                r.expect("the store itself failed");
                false
            }
        };
        let deadline = guard.deadline();
        if lost {
            history.record(Event::Lost {
                worker: id,
                resource: RESOURCE.into(),
                token: guard.token(),
                at: Instant::now(),
                deadline,
                reason: "watchdog".into(),
            });
        }
        history.record(Event::Ended {
            worker: id,
            resource: RESOURCE.into(),
            token: guard.token(),
            at: Instant::now(),
            deadline,
        });
        let _ = guard.release().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // AOF with fsync on every write: a killed node restarts with every acknowledged key.
    let cluster = Arc::new(
        Cluster::builder()
            .nodes(3)
            .persistence(Persistence::AofAlways)
            .start()?,
    );
    let storage = Cluster::start(1)?;
    let store = Arc::new(
        RedisFencedStore::connect(&storage.url(0))
            .await?
            .with_audit_log(),
    );
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|id| {
            let client = cluster
                .client_builder()
                .ttl(Duration::from_secs(1))
                .node_timeout(Duration::from_millis(100))
                .build()
                .expect("client");
            tokio::spawn(worker(
                id,
                client,
                store.clone(),
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis: in turn, freeze a node for half a second, then kill one and restart it.
    for round in 0..6 {
        let i = round % 3;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let what = if round % 2 == 0 {
            cluster.pause(i)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.resume(i)?;
            format!("SIGSTOP node {i} for 0.5 s")
        } else {
            cluster.kill(i)?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            cluster.restart(i)?;
            format!("kill -9 node {i}, restart after 0.3 s")
        };
        println!("nemesis: {what}");
        history.record(Event::Nemesis {
            at: Instant::now(),
            what,
            breaks_assumptions_until: None,
        });
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await?;
    }
    let logs = HashMap::from([(RESOURCE.to_owned(), store.accepted_log(RESOURCE).await?)]);
    let report = history.check(&logs);
    println!("{report}");
    if !report.is_clean() || report.acquisitions < 20 {
        return Err("the critical section broke a promise (or hardly ran)".into());
    }
    Ok(())
}
