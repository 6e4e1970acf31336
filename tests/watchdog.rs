//! The watchdog against real nodes: it keeps a lock alive, reports its loss (with the
//! reason) before the validity deadline it handed out, cancels the scoped runner's work,
//! and never outlives its guard.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redfence::{AcquireOptions, Error, LockGuard, LockState, LossReason, NodeErrorKind};
use support::{client, cluster, cmd, lock_key, loss, wait_expired};

const TTL: Duration = Duration::from_secs(1);

/// A 1 s lease needs short node timeouts: two rounds of the default test client's 500 ms
/// would use it up.
fn short(cluster: &redfence::testkit::Cluster) -> redfence::ClientBuilder {
    client(cluster)
        .ttl(TTL)
        .node_timeout(Duration::from_millis(200))
}

/// Waits (bounded) for the loss and checks it was published no later than the deadline
/// the holder was last given.
async fn lost_before_deadline(guard: &LockGuard) -> LossReason {
    let reason = tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("no loss reported");
    let state = guard.state().borrow().clone();
    let LockState::Lost {
        at,
        reason: published,
    } = state
    else {
        panic!("lost() returned but the state is {state:?}");
    };
    assert_eq!(published, reason);
    assert!(
        at <= guard.deadline(),
        "loss published {:?} after the deadline",
        at - guard.deadline()
    );
    assert_eq!(guard.validity(), Duration::ZERO);
    reason
}

fn named(errors: &[redfence::NodeError], cluster: &redfence::testkit::Cluster, nodes: &[usize]) {
    for i in nodes {
        let name = format!("127.0.0.1:{}", cluster.port(*i));
        assert!(
            errors.iter().any(|e| e.node() == name),
            "{name} not in {errors:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_a_one_second_lock_for_ten_seconds() {
    let cluster = cluster(5);
    let holder = short(&cluster).build().unwrap();
    let other = short(&cluster).build().unwrap();
    let guard = holder.acquire("long").await.unwrap();
    assert!(guard.has_watchdog());
    let token = guard.token();
    let start = Instant::now();
    let mut tries = 0;
    while start.elapsed() < Duration::from_secs(10) {
        assert!(
            other.try_acquire("long").await.unwrap().is_none(),
            "taken while held"
        );
        assert!(matches!(*guard.state().borrow(), LockState::Held { .. }));
        tries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tries > 50);
    assert_eq!(guard.token(), token);
    // Extended all along: the deadline is within one TTL of now, not of the acquisition.
    assert!(guard.deadline() > start + Duration::from_secs(9));
    assert!(guard.release().await.unwrap());
    assert_eq!(holder.active_watchdogs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_majority_is_reported_before_the_deadline() {
    let cluster = cluster(5);
    let c = short(&cluster).build().unwrap();
    let guard = c.acquire("paused").await.unwrap();
    for i in [0, 2, 4] {
        cluster.pause(i).unwrap();
    }
    let reason = lost_before_deadline(&guard).await;
    let LossReason::QuorumUnreachable { errors } = &reason else {
        panic!("{reason:?}");
    };
    named(errors, &cluster, &[0, 2, 4]);
    assert!(
        errors.iter().all(|e| e.kind() == NodeErrorKind::Timeout),
        "{errors:?}"
    );
    // Each cause names the budget that ran out: the node timeout (200 ms) or the lock's
    // validity, never the validity left dressed up as a node timeout.
    for e in errors {
        let text = e.to_string();
        assert!(
            text.contains("within 200ms") || text.contains("validity ran out"),
            "{text}"
        );
    }
    for i in [0, 2, 4] {
        cluster.resume(i).unwrap();
    }
}

/// The scoped runner drops the work the moment the loss is reported: the work never
/// reaches the marker it would reach after its (long) write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_cancels_work_when_the_lock_is_lost() {
    let cluster = cluster(5);
    let c = short(&cluster).build().unwrap();
    let (started, finished) = (AtomicBool::new(false), AtomicBool::new(false));
    let start = Instant::now();
    let result = c
        .run("cancel", async |guard| {
            started.store(true, Ordering::SeqCst);
            for i in [1, 2, 3] {
                cluster.pause(i).unwrap();
            }
            // A critical section far longer than the lock can survive without a quorum.
            tokio::time::sleep(Duration::from_secs(30)).await;
            finished.store(true, Ordering::SeqCst);
            guard.token()
        })
        .await;
    assert!(started.load(Ordering::SeqCst));
    assert!(!finished.load(Ordering::SeqCst), "work ran past the loss");
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = result.unwrap_err();
    assert!(
        matches!(loss(&err), Some(LossReason::QuorumUnreachable { .. })),
        "{err:?}"
    );
    for i in [1, 2, 3] {
        cluster.resume(i).unwrap();
    }
    assert_eq!(c.active_watchdogs(), 0);
}

/// Work that blocks its thread (here a one-thread runtime, so the watchdog cannot run)
/// past the validity deadline has overrun the lock, even if the keys, kept a while longer
/// by the drift allowance, are still there to release: `run` reports the loss, not the
/// value.
#[tokio::test]
async fn the_runner_reports_work_that_overran_the_deadline() {
    let cluster = cluster(5);
    // A wide drift allowance: the local deadline is ~0.7 s, the keys live 1 s.
    let c = short(&cluster).drift_factor(0.3).build().unwrap();
    let result = c
        .run("overrun", async |guard| {
            let past = guard.validity() + Duration::from_millis(100);
            std::thread::sleep(past);
            guard.token()
        })
        .await;
    let err = result.unwrap_err();
    assert!(
        matches!(loss(&err), Some(LossReason::ValidityElapsed)),
        "{err:?}"
    );
    assert_eq!(c.active_watchdogs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_deleted_behind_the_holders_back_are_reported_as_not_owner() {
    let cluster = cluster(5);
    let c = short(&cluster).build().unwrap();
    let guard = c.acquire("stolen").await.unwrap();
    for i in [0, 1, 3] {
        cmd::<()>(&cluster, i, &["DEL", &lock_key("stolen")]).await;
    }
    let reason = lost_before_deadline(&guard).await;
    assert_eq!(reason, LossReason::NotOwner { nodes: 3 });
    assert!(!guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_majority_is_reported_and_release_does_not_hang() {
    let cluster = cluster(5);
    let c = short(&cluster).build().unwrap();
    let guard = c.acquire("killed").await.unwrap();
    for i in [1, 3, 4] {
        cluster.kill(i).unwrap();
    }
    let reason = lost_before_deadline(&guard).await;
    let LossReason::QuorumUnreachable { errors } = &reason else {
        panic!("{reason:?}");
    };
    named(errors, &cluster, &[1, 3, 4]);
    let released = tokio::time::timeout(Duration::from_secs(5), guard.release())
        .await
        .expect("release hung");
    let err = released.unwrap_err();
    assert!(matches!(err, Error::NoQuorum { failed: 3, .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_stops_extending_and_passes_the_lock_on() {
    let cluster = cluster(5);
    let c = short(&cluster)
        .ttl(TTL)
        .max_hold(Duration::from_millis(1500))
        .build()
        .unwrap();
    let other = short(&cluster).build().unwrap();

    // A plain guard: the loss is reported, the lock then expires within a TTL.
    let guard = c.acquire("capped").await.unwrap();
    let reason = lost_before_deadline(&guard).await;
    let LossReason::MaxHoldReached { held } = reason else {
        panic!("{reason:?}");
    };
    assert!(held >= Duration::from_millis(1500), "{held:?}");
    let next = other
        .acquire_with("capped", AcquireOptions::new().wait(2 * TTL))
        .await
        .unwrap();
    assert!(next.token() > guard.token());
    next.release().await.unwrap();
    drop(guard);

    // The scoped runner releases as soon as it cancels: the next holder need not wait.
    let err = c
        .run("capped", async |_| {
            tokio::time::sleep(Duration::from_secs(30)).await
        })
        .await
        .unwrap_err();
    assert!(
        matches!(loss(&err), Some(LossReason::MaxHoldReached { .. })),
        "{err:?}"
    );
    assert!(
        other.try_acquire("capped").await.unwrap().is_some(),
        "not released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_drop_stop_the_watchdog() {
    let cluster = cluster(3);
    let c = short(&cluster).build().unwrap();
    let g = c.acquire("stop").await.unwrap();
    assert_eq!(c.active_watchdogs(), 1);
    assert!(g.release().await.unwrap());
    assert_eq!(
        c.active_watchdogs(),
        0,
        "release returned before its watchdog ended"
    );

    let g = c.acquire("stop").await.unwrap();
    let no_watchdog = c.try_acquire("other").await.unwrap().unwrap();
    assert_eq!(c.active_watchdogs(), 1);
    drop(no_watchdog);
    drop(g);
    let start = Instant::now();
    while c.active_watchdogs() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "watchdog outlived its guard"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing extends it any more: dropped means released (and not kept alive).
    wait_expired(&cluster, "stop", Duration::from_secs(3)).await;
}

/// 1,000 locks held at once on one client, each with a watchdog, for longer than their
/// TTL: all extended, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchdogs_on_one_client() {
    let cluster = cluster(5);
    let ttl = Duration::from_secs(3);
    let c = client(&cluster)
        .ttl(ttl)
        .node_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let opts = AcquireOptions::new().watchdog(true);
    let mut guards = Vec::new();
    for batch in 0..10 {
        let calls = (0..100).map(|i| {
            let (c, opts) = (c.clone(), opts.clone());
            async move { c.try_acquire_with(&format!("many-{batch}-{i}"), opts).await }
        });
        for g in futures::future::join_all(calls).await {
            guards.push(g.unwrap().expect("free key refused"));
        }
    }
    assert_eq!(c.active_watchdogs(), 1000);
    let held_from = Instant::now();
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let lost = guards
        .iter()
        .filter(|g| !matches!(*g.state().borrow(), LockState::Held { .. }))
        .count();
    assert_eq!(lost, 0, "{lost} of 1000 locks lost");
    for g in &guards {
        assert!(
            g.deadline() > held_from + ttl / 2,
            "{} was not extended",
            g.resource()
        );
    }
    let released = futures::future::join_all(guards.into_iter().map(LockGuard::release)).await;
    assert!(released.into_iter().all(|r| r.unwrap()));
    assert_eq!(c.active_watchdogs(), 0);
}

/// Takes `n` locks named `{prefix}-{i}` with watchdogs, 100 at a time.
async fn many(c: &redfence::Client, prefix: &str, n: usize) -> Vec<LockGuard> {
    let opts = AcquireOptions::new().watchdog(true);
    let mut guards = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(100) {
        let calls = (batch * 100..((batch + 1) * 100).min(n)).map(|i| {
            let (c, opts) = (c.clone(), opts.clone());
            async move { c.try_acquire_with(&format!("{prefix}-{i}"), opts).await }
        });
        for g in futures::future::join_all(calls).await {
            guards.push(g.unwrap().expect("free key refused"));
        }
    }
    guards
}

/// The batched watchdog judges each lease on its own: of 40 leases renewed together,
/// the 7 whose keys were deleted on a majority are reported lost (not owner), and the
/// other 33 stay held and keep being renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_renewal_judges_each_lease_on_its_own() {
    let cluster = cluster(3);
    let c = short(&cluster).build().unwrap();
    let guards = many(&c, "own", 40).await;
    let stolen = [3, 5, 11, 17, 23, 29, 37];
    for i in stolen {
        for node in [0, 2] {
            cmd::<()>(&cluster, node, &["DEL", &lock_key(&format!("own-{i}"))]).await;
        }
    }
    for i in stolen {
        let reason = lost_before_deadline(&guards[i]).await;
        assert_eq!(reason, LossReason::NotOwner { nodes: 2 }, "own-{i}");
    }
    // Two more TTLs: every other lease is renewed all along.
    let from = Instant::now();
    tokio::time::sleep(2 * TTL).await;
    for (i, g) in guards
        .iter()
        .enumerate()
        .filter(|(i, _)| !stolen.contains(i))
    {
        assert!(
            matches!(*g.state().borrow(), LockState::Held { .. }),
            "own-{i}: {:?}",
            g.state().borrow()
        );
        assert!(g.deadline() > from + TTL, "own-{i} was not renewed");
    }
    assert_eq!(c.stats().losses.not_owner, 7);
    assert_eq!(c.active_watchdogs(), 33);
}

/// 10,000 leases held through the batched watchdog, then two of three nodes paused: every
/// one of them is reported lost, each no later than the deadline it was last given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_batched_leases_each_report_their_loss_in_time() {
    let cluster = cluster(3);
    let ttl = Duration::from_secs(4);
    let c = client(&cluster)
        .ttl(ttl)
        .node_timeout(Duration::from_millis(300))
        .max_in_flight(20_000)
        .build()
        .unwrap();
    let guards = many(&c, "ten-k", 10_000).await;
    assert_eq!(c.active_watchdogs(), 10_000);
    // At least one renewal of every lease before the pause.
    let renewed = Instant::now() + ttl / 2;
    tokio::time::sleep_until(renewed.into()).await;
    cluster.pause(0).unwrap();
    cluster.pause(1).unwrap();
    let losses = futures::future::join_all(
        guards
            .iter()
            .map(|g| async move { tokio::time::timeout(Duration::from_secs(20), g.lost()).await }),
    )
    .await;
    cluster.resume(0).unwrap();
    cluster.resume(1).unwrap();
    let mut late = 0;
    for (g, lost) in guards.iter().zip(&losses) {
        let reason = lost.as_ref().expect("a loss was not reported");
        assert!(
            matches!(reason, LossReason::QuorumUnreachable { .. }),
            "{}: {reason:?}",
            g.resource()
        );
        let LockState::Lost { at, .. } = *g.state().borrow() else {
            panic!("{}: not lost", g.resource());
        };
        if at > g.deadline() {
            late += 1;
        }
    }
    assert_eq!(
        late, 0,
        "{late} of 10,000 losses published after their deadline"
    );
    assert_eq!(c.stats().losses.quorum_unreachable, 10_000);
    let renewals = c.stats().extensions.renewed;
    assert!(
        renewals >= 10_000,
        "only {renewals} renewals before the pause"
    );
}
