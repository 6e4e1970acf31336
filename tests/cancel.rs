//! Cancelled calls, runtimes that go away, and counters at the edge of u64: nothing is
//! left behind, nothing panics, and tokens stay exact.

mod support;

use std::time::{Duration, Instant};

use redfence::NodeErrorKind;
use support::{client, cluster, cmd, fence_key, lock_key, wait_expired_on};

/// An acquire dropped mid-round (two nodes frozen, one held by a stranger, so the round
/// cannot decide yet) releases what it was granted, at once rather than after the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_no_keys() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    c.acquire("cancelled")
        .await
        .unwrap()
        .release()
        .await
        .unwrap(); // connect everything
    cmd::<()>(
        &cluster,
        0,
        &["SET", &lock_key("cancelled"), "stranger", "PX", "60000"],
    )
    .await;
    cluster.pause(3).unwrap();
    cluster.pause(4).unwrap();
    let attempt = tokio::time::timeout(Duration::from_millis(300), c.try_acquire("cancelled"));
    assert!(
        attempt.await.is_err(),
        "the round should still be undecided"
    );
    for i in [1, 2] {
        wait_expired_on(&cluster, i, "cancelled").await;
    }
    // The frozen nodes run the queued SET when they wake, and the release right after it.
    cluster.resume(3).unwrap();
    cluster.resume(4).unwrap();
    for i in [3, 4] {
        wait_expired_on(&cluster, i, "cancelled").await;
    }
    let owner: String = cmd(&cluster, 0, &["GET", &lock_key("cancelled")]).await;
    assert_eq!(owner, "stranger");
}

/// A release dropped while it waits on frozen nodes still releases (from Drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_release_still_releases() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let g = c.try_acquire("unreleased").await.unwrap().unwrap();
    for i in [0, 1, 2] {
        cluster.pause(i).unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), g.release())
            .await
            .is_err()
    );
    for i in [3, 4] {
        wait_expired_on(&cluster, i, "unreleased").await;
    }
    for i in [0, 1, 2] {
        cluster.resume(i).unwrap();
    }
}

/// A client outlives the runtime it first connected on, including a connect that was cut
/// off mid-way when that runtime shut down.
#[test]
fn a_client_survives_its_first_runtime() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .node_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    cluster.pause(0).unwrap(); // node 0's connect hangs in its handshake
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        c.try_acquire("runtimes")
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    });
    drop(first); // cancels node 0's connect task and ends the other connections
    cluster.resume(0).unwrap();
    cluster.kill(1).unwrap(); // from now on a quorum needs node 0
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let start = Instant::now();
        loop {
            match c.try_acquire("runtimes").await {
                Ok(Some(g)) => {
                    g.release().await.unwrap();
                    break;
                }
                other => assert!(start.elapsed() < Duration::from_secs(5), "{other:?}"),
            }
        }
    });
}

/// Counters beyond 2^53 (where Lua numbers lose integers) give exact, increasing tokens,
/// and the end of the counter is a typed error rather than a wrapped token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_exact_beyond_two_to_the_53() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    let big: u64 = (1 << 53) + 2;
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["SET", &fence_key("big"), &big.to_string()]).await;
    }
    for k in 1..=3 {
        let g = c.try_acquire("big").await.unwrap().unwrap();
        assert_eq!(g.token().get(), big + k);
        g.release().await.unwrap();
    }

    let top = i64::MAX as u64 - 1;
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["SET", &fence_key("big"), &top.to_string()]).await;
    }
    let g = c.try_acquire("big").await.unwrap().unwrap();
    assert_eq!(g.token().get(), i64::MAX as u64);
    g.release().await.unwrap();
    let start = Instant::now();
    let err = c.acquire("big").await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a lasting error was retried"
    );
    assert!(err.to_string().contains("overflow"), "{err}");
    assert!(
        err.node_errors()
            .iter()
            .all(|e| e.kind() == NodeErrorKind::Server),
        "{err}"
    );
    for i in 0..3 {
        assert_eq!(
            cmd::<i64>(&cluster, i, &["EXISTS", &lock_key("big")]).await,
            0
        );
    }
}

#[test]
fn settings_that_would_overflow_are_rejected() {
    let b = || redfence::Client::builder().node("redis://127.0.0.1:7001");
    for (builder, setting) in [
        (b().max_hold(Duration::MAX), "max_hold"),
        (b().min_validity(Duration::MAX), "min_validity"),
    ] {
        let err = builder.build().unwrap_err();
        assert!(err.to_string().contains(setting), "{err}");
        assert!(
            matches!(err, redfence::ConfigError::TooLarge { .. }),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let c = redfence::Client::builder()
        .node("redis://127.0.0.1:7001")
        .build()
        .unwrap();
    let run = c.run("x", async |g| g.token());
    assert_send(&run);
    let acquire = c.acquire("x");
    assert_send(&acquire);
}
