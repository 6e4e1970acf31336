//! Acquisition against five real redis-server nodes: exclusion, token order, the counter
//! trap, and nodes that are down or frozen.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redfence::{AcquireOptions, Error, NodeErrorKind, Step};
use support::{client, cluster, cmd, fence_key, lock_key};

/// 16 tasks over 4 clients increment a counter non-atomically (read, yield, write) inside
/// the lock; a lost update or two holders at once would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_keeps_a_racy_counter_exact() {
    let cluster = cluster(5);
    let clients: Vec<_> = (0..4).map(|_| client(&cluster).build().unwrap()).collect();
    let counter = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (c, counter, inside) = (clients[t % 4].clone(), counter.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let guard = c.acquire("counter").await.unwrap();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let v = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
                counter.store(v + 1, Ordering::SeqCst);
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(guard.release().await.unwrap(), "lock lost while held");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 16 * 20);
}

/// 1,120 acquisitions from 4 clients (16 tasks): each token is above the previous
/// holder's, checked inside the critical section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_strictly_increase_across_holders() {
    let cluster = cluster(5);
    let clients: Vec<_> = (0..4).map(|_| client(&cluster).build().unwrap()).collect();
    let tokens = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (c, tokens) = (clients[t % 4].clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..70 {
                let guard = c.acquire("tokens").await.unwrap();
                {
                    let mut seen = tokens.lock().unwrap();
                    let token = guard.token().get();
                    if let Some(last) = seen.last() {
                        assert!(token > *last, "token {token} after {last}");
                    }
                    seen.push(token);
                }
                guard.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = tokens.lock().unwrap();
    assert_eq!(seen.len(), 1120);
    assert!(seen.windows(2).all(|w| w[1] > w[0]));
}

/// Counters 10/5/5/5/5; holder A gets nodes {0,1,2} (3 and 4 are held by a stranger), then
/// holder B gets {2,3,4}. The max of B's INCR replies alone would be 7 < 11; the commit
/// round raised node 2 to 11 while A held it, so B gets 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_trap_tokens_still_increase() {
    let cluster = cluster(5);
    let c = client(&cluster).build().unwrap();
    let (lock, fence) = (lock_key("trap"), fence_key("trap"));
    for (i, v) in [10, 5, 5, 5, 5].into_iter().enumerate() {
        cmd::<()>(&cluster, i, &["SET", &fence, &v.to_string()]).await;
    }
    for i in [3, 4] {
        cmd::<()>(&cluster, i, &["SET", &lock, "stranger", "PX", "60000"]).await;
    }
    let a = c
        .try_acquire("trap")
        .await
        .unwrap()
        .expect("A gets {0,1,2}");
    assert_eq!(a.token().get(), 11);
    // The commit round stored 11 on a majority: nodes 0 (INCR), 1 and 2 (raised).
    for i in 0..3 {
        assert_eq!(
            cmd::<u64>(&cluster, i, &["GET", &fence]).await,
            11,
            "node {i}"
        );
    }
    assert!(a.release().await.unwrap());

    for i in [3, 4] {
        cmd::<()>(&cluster, i, &["DEL", &lock]).await;
    }
    for i in [0, 1] {
        cmd::<()>(&cluster, i, &["SET", &lock, "stranger", "PX", "60000"]).await;
    }
    let b = c
        .try_acquire("trap")
        .await
        .unwrap()
        .expect("B gets {2,3,4}");
    assert_eq!(b.token().get(), 12, "B's token must pass A's 11");
    // Nodes 3 and 4 returned 6: the trap was real.
    for i in [3, 4] {
        assert_eq!(
            cmd::<u64>(&cluster, i, &["GET", &fence]).await,
            12,
            "node {i}"
        );
    }
    b.release().await.unwrap();
}

/// Nodes that were down while others held the lock rejoin with stale counters; tokens
/// keep increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_as_nodes_come_and_go() {
    let cluster = redfence::testkit::Cluster::builder()
        .persistence(redfence::testkit::Persistence::AofAlways)
        .start()
        .unwrap();
    let c = client(&cluster).build().unwrap();
    let mut last = 0;
    for round in 0..10usize {
        // A different minority is down each round; the others hold and count on.
        let down = [round % 5, (round + 2) % 5];
        for i in down {
            cluster.kill(i).unwrap();
        }
        for _ in 0..5 {
            let g = c.acquire("rejoin").await.unwrap();
            assert!(g.token().get() > last, "token {} after {last}", g.token());
            last = g.token().get();
            g.release().await.unwrap();
        }
        for i in down {
            cluster.restart(i).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_down_at_start_still_locks() {
    let cluster = cluster(5);
    cluster.kill(0).unwrap();
    cluster.kill(3).unwrap();
    let c = client(&cluster).build().unwrap();
    let g = c.acquire("minority").await.unwrap();
    assert!(g.validity() > Duration::ZERO);
    assert!(g.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_down_names_the_dead_nodes() {
    let cluster = cluster(5);
    let dead = [1, 2, 4];
    for i in dead {
        cluster.kill(i).unwrap();
    }
    let c = client(&cluster)
        .wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = c.try_acquire("majority").await.unwrap_err();
    // One attempt is bounded by its rounds, not by the 30 s wait timeout.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let Error::NoQuorum {
        step,
        granted,
        failed,
        ref errors,
        ..
    } = err
    else {
        panic!("expected NoQuorum, got {err:?}");
    };
    // The dead nodes refuse at once, which decides the round, often before the live ones
    // have granted; their late grants are released in the background (checked below).
    assert_eq!((step, failed), (Step::Acquire, 3));
    assert!(granted <= 2);
    let mut named: Vec<&str> = errors.iter().map(|e| e.node()).collect();
    named.sort_unstable();
    let mut expected: Vec<String> = dead
        .iter()
        .map(|&i| format!("127.0.0.1:{}", cluster.port(i)))
        .collect();
    expected.sort_unstable();
    assert_eq!(named, expected);
    assert!(
        errors
            .iter()
            .all(|e| e.kind() == NodeErrorKind::ConnectionRefused)
    );
    let msg = err.to_string();
    for name in &expected {
        assert!(msg.contains(name.as_str()), "{msg}");
    }
    // Whatever the live minority granted, early or late, was released.
    for i in [0, 3] {
        support::wait_expired_on(&cluster, i, "majority").await;
    }

    // `acquire` keeps trying, then says why.
    let err = c
        .acquire_with(
            "majority",
            AcquireOptions::new().wait(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WaitTimeout {
                last_error: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.node_errors().len(), 3);
}

/// With one node frozen (SIGSTOP), acquisitions and releases decide on the other four and
/// never wait for the frozen node's timeout (3 s): count the calls that took over half of
/// it. (A call that waited takes the whole 3 s; scheduling noise stays far below 1.5 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_does_not_slow_decided_attempts() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    // Warm the connections, then freeze one node.
    c.acquire("frozen").await.unwrap().release().await.unwrap();
    cluster.pause(2).unwrap();
    let mut slow = Vec::new();
    for k in 0..40 {
        let t = Instant::now();
        let g = c.acquire("frozen").await.unwrap();
        let acquired = t.elapsed();
        let t = Instant::now();
        assert!(g.release().await.unwrap());
        let released = t.elapsed();
        let half = Duration::from_millis(1500);
        if acquired >= half || released >= half {
            slow.push((k, acquired, released));
        }
    }
    cluster.resume(2).unwrap();
    assert!(
        slow.is_empty(),
        "{} of 40 cycles waited for the frozen node (cycle, acquire, release): {slow:?}",
        slow.len()
    );
}

/// 64 tasks on distinct keys through one client, so each node connection carries many
/// calls at once: every attempt must succeed. (A pipeline buffer too small for the load
/// made sends wait, and waiting sends could be overtaken: false "not acquired".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_refusals_under_load() {
    let cluster = cluster(5);
    let c = client(&cluster).build().unwrap();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("load-{t}");
            for _ in 0..25 {
                let g = c
                    .try_acquire(&name)
                    .await
                    .unwrap()
                    .expect("a free key was refused");
                assert!(g.release().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Taking and at once releasing a lock runs exactly one grant (`SET`) and one release
/// (the release script, by `EVALSHA`) per node, even on the nodes whose grant was still in
/// flight when the attempt was decided (their second release is needed only when the
/// first found nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_release_per_node_per_cycle() {
    let c = cluster(5);
    let client = client(&c).build().unwrap();
    // Loads the scripts, so no NOSCRIPT round trips below.
    let g = client.try_acquire("warm").await.unwrap().unwrap();
    assert!(g.release().await.unwrap());
    let c = &c;
    let runs = || async move {
        let counts = (0..5).map(|i| async move {
            (
                support::command_runs(c, i, "set").await,
                support::command_runs(c, i, "evalsha").await,
            )
        });
        futures::future::join_all(counts).await
    };
    let before = runs().await;
    let cycles = 200;
    for _ in 0..cycles {
        let g = client.try_acquire("cycled").await.unwrap().unwrap();
        assert!(g.release().await.unwrap());
    }
    // Stragglers finish in the background: wait (bounded) for the counts to settle.
    let start = Instant::now();
    loop {
        let after = runs().await;
        let runs: Vec<(u64, u64)> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| (a.0 - b.0, a.1 - b.1))
            .collect();
        if runs.iter().all(|&r| r == (cycles, cycles)) {
            break;
        }
        assert!(
            runs.iter().all(|&(g, r)| g <= cycles && r <= cycles),
            "more than one grant and one release per cycle: {runs:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
