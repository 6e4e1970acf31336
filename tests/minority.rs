//! A faulty minority changes nothing for the user: one node with a lasting error, a lost
//! reply, a node that comes back, two concurrent extends. Each test here failed on the
//! code before its fix (see the issue notes).

mod support;

use std::time::{Duration, Instant};

use redfence::Client;
use redfence::testkit::Cluster;
use support::{client, cluster, cmd, lock_key};

/// Three nodes for the client, and node 0 turned into a replica of a fourth server (a
/// node demoted by mistake): every write on node 0 answers `READONLY`, a lasting error.
async fn one_replica() -> (Cluster, Client) {
    let cluster = cluster(4);
    let port = cluster.port(3).to_string();
    cmd::<()>(&cluster, 0, &["REPLICAOF", "127.0.0.1", &port]).await;
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let c = Client::builder()
        .nodes(urls)
        .node_timeout(Duration::from_millis(500))
        .retry_delay(Duration::from_millis(20))
        .retry_jitter(Duration::from_millis(10))
        .build()
        .unwrap();
    (cluster, c)
}

/// One lasting error (node 0 read-only) and another owner's key on node 2 for 1.5 s: the
/// round is lost "because of failures", but node 0 alone cannot rule out a quorum, so
/// `acquire` waits and gets the lock from nodes 1 and 2 once the key expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lasting_error_does_not_end_the_wait() {
    let (cluster, c) = one_replica().await;
    cmd::<()>(
        &cluster,
        2,
        &["SET", &lock_key("readonly"), "someone-else", "PX", "1500"],
    )
    .await;
    let start = Instant::now();
    let g = c
        .acquire_timeout("readonly", Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("gave up after {:?}: {e}", start.elapsed()));
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "granted while the other owner's key was still there"
    );
    assert!(g.release().await.unwrap());
}

/// Hand-offs between waiters with one read-only node: no waiter gives up while the two
/// healthy nodes keep granting in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_offs_survive_one_lasting_error() {
    let (_cluster, c) = one_replica().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let g = c
                    .acquire_timeout("handoffs", Duration::from_secs(10))
                    .await?;
                tokio::task::yield_now().await;
                g.release().await?;
            }
            Ok::<_, redfence::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Lasting errors on a majority do end the wait at once: no quorum can come of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lasting_errors_on_a_majority_end_the_wait() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for i in [0, 1] {
        cmd::<()>(&cluster, i, &["HSET", &lock_key("typed2"), "f", "v"]).await;
    }
    let start = Instant::now();
    let err = c.acquire("typed2").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "{err}");
    assert!(
        matches!(err, redfence::Error::NoQuorum { .. }),
        "expected NoQuorum at once, got {err}"
    );
}
