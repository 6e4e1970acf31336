//! Release-driven wake-up: a waiter retries as soon as any node announces a release, and
//! still gets the lock, on its retry delay, where pub/sub is missing.

mod support;

use std::time::{Duration, Instant};

use redfence::testkit::{Cluster, Fault};
use redfence::{Client, FencingToken, LockGuard};
use support::cluster;
use tokio::task::JoinHandle;

/// A client whose retry delay (30 s) is far longer than any test here: only a wake-up
/// can make it acquire quickly.
fn patient(urls: Vec<String>) -> Client {
    Client::builder()
        .nodes(urls)
        .node_timeout(Duration::from_millis(100))
        .retry_delay(Duration::from_secs(30))
        .retry_jitter(Duration::ZERO)
        .wait(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn subscribers(cluster: &Cluster, i: usize, resource: &str) -> i64 {
    let channel = format!("redfence:{{{resource}}}:released");
    let (_, n): (String, i64) =
        support::cmd::<Vec<(String, i64)>>(cluster, i, &["PUBSUB", "NUMSUB", &channel])
            .await
            .pop()
            .unwrap();
    n
}

/// `n` nodes with SUBSCRIBE and PUBLISH disabled.
fn without_pubsub(n: usize) -> Cluster {
    Cluster::builder()
        .nodes(n)
        .args([
            "--rename-command",
            "SUBSCRIBE",
            "",
            "--rename-command",
            "PUBLISH",
            "",
        ])
        .start()
        .unwrap()
}

/// Holder releases while the waiter sleeps on its 30 s delay: the waiter must get the
/// lock through the announcement, long before the delay.
async fn released_waiter_acquires(urls: Vec<String>, watch: &[(&Cluster, usize)]) {
    let holder = Client::builder().nodes(urls.clone()).build().unwrap();
    let g = holder.try_acquire("handoff").await.unwrap().unwrap();
    let first = g.token();
    let waiter = patient(urls);
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let g = waiter.acquire("handoff").await.unwrap();
        (start.elapsed(), g)
    });
    // The waiter is waiting once it has subscribed where pub/sub works (and its first
    // attempt, bounded by two node timeouts, has long been refused).
    let start = Instant::now();
    for &(c, i) in watch {
        while subscribers(c, i, "handoff").await < 1 {
            assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the waiter got a held lock");
    assert!(g.release().await.unwrap());
    let (waited, g2) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("not woken: it would have slept its 30 s retry delay")
        .unwrap();
    assert!(waited < Duration::from_secs(10));
    assert!(g2.token() > first);
    g2.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_the_waiter() {
    let c = cluster(5);
    let watch: Vec<(&Cluster, usize)> = (0..5).map(|i| (&c, i)).collect();
    released_waiter_acquires(c.urls(), &watch).await;
}

/// Two of five nodes have SUBSCRIBE and PUBLISH disabled: releases still work there, and
/// the waiter is woken through the other three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_without_pubsub_still_wakes_waiters() {
    let with = cluster(3);
    let without = without_pubsub(2);
    let mut urls = with.urls();
    urls.extend(without.urls());
    let watch: Vec<(&Cluster, usize)> = (0..3).map(|i| (&with, i)).collect();
    released_waiter_acquires(urls, &watch).await;
}

/// With pub/sub gone everywhere, the retry delay still hands the lock over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pubsub_the_retry_delay_still_works() {
    let c = without_pubsub(3);
    let holder = c.client_builder().build().unwrap();
    let g = holder.try_acquire("fallback").await.unwrap().unwrap();
    let waiter = c
        .client_builder()
        .retry_delay(Duration::from_millis(100))
        .retry_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let task = tokio::spawn(async move { waiter.acquire("fallback").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        g.release().await.unwrap(),
        "a node without PUBLISH must still release"
    );
    let g2 = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    g2.release().await.unwrap();
}

/// Many waiters of one client share one subscription per node, which goes away with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_one_subscription() {
    let c = cluster(3);
    let holder = c.client_builder().build().unwrap();
    let g = holder.try_acquire("shared").await.unwrap().unwrap();
    let waiter = c
        .client_builder()
        .wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let w = waiter.clone();
            tokio::spawn(async move {
                let g = w.acquire("shared").await.unwrap();
                g.release().await.unwrap();
            })
        })
        .collect();
    let start = Instant::now();
    while subscribers(&c, 0, "shared").await < 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..3 {
        assert_eq!(subscribers(&c, i, "shared").await, 1, "node {i}");
    }
    g.release().await.unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
    }
    while subscribers(&c, 0, "shared").await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still subscribed after the waiters left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A lock that is free costs no pub/sub: the client subscribes only once it has to wait,
/// and then once per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_waiting_subscribes() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    for k in 0..20 {
        let g = client.acquire(&format!("free-{k}")).await.unwrap();
        g.release().await.unwrap();
    }
    let held = client.acquire("busy").await.unwrap();
    for i in 0..3 {
        assert_eq!(
            support::command_runs(&c, i, "subscribe").await,
            0,
            "node {i}"
        );
    }
    // Now someone waits: one subscription per node.
    let waiter = client.clone();
    let task = tokio::spawn(async move { waiter.acquire("busy").await.map(|g| g.token()) });
    let start = Instant::now();
    for i in 0..3 {
        while subscribers(&c, i, "busy").await < 1 {
            assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            support::command_runs(&c, i, "subscribe").await,
            1,
            "node {i}"
        );
    }
    hand_over(held, task).await;
}

/// A node restarts while a waiter waits: its subscription connection is opened again and
/// subscribes anew, and the release still wakes the waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_subscribed_again() {
    let c = cluster(3);
    let holder = c.client_builder().build().unwrap();
    let g = holder.try_acquire("again").await.unwrap().unwrap();
    let waiter = patient(c.urls());
    let task = tokio::spawn(async move { waiter.acquire("again").await.map(|g| g.token()) });
    let start = Instant::now();
    while subscribers(&c, 0, "again").await < 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Without persistence node 0 comes back empty: the holder's key there is gone, but
    // it still holds nodes 1 and 2.
    c.restart(0).unwrap();
    while subscribers(&c, 0, "again").await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not subscribed again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!task.is_finished(), "the waiter got a held lock");
    hand_over(g, task).await;
}

/// Releases `held` and checks that the waiting `task` is woken and gets a newer token.
async fn hand_over(held: LockGuard, task: JoinHandle<Result<FencingToken, redfence::Error>>) {
    let first = held.token();
    held.release().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("not woken: it would have slept its retry delay")
        .unwrap()
        .unwrap();
    assert!(next > first);
}

/// Grant requests (`INCR`s) node 0 has run.
async fn grants_on_node_0(cluster: &Cluster) -> u64 {
    support::command_runs(cluster, 0, "incr").await
}

/// Waits until a waiter has tried at least twice since `before` (its first attempt, and
/// the one after it subscribed: every waiter is woken then, since a release may have
/// gone unheard) and then stayed quiet for 300 ms (its retry delay is 30 s); returns
/// the grant count then.
async fn settled(cluster: &Cluster, before: u64) -> u64 {
    let start = Instant::now();
    let mut tried = grants_on_node_0(cluster).await;
    let mut quiet_since = Instant::now();
    while tried < before + 2 || quiet_since.elapsed() < Duration::from_millis(300) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the waiter never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = grants_on_node_0(cluster).await;
        if now != tried {
            (tried, quiet_since) = (now, Instant::now());
        }
    }
    tried
}

/// A hand-off when the release lands unevenly: the holder's links to two of the three
/// nodes are slow (100 ms each way), so its release deletes the key on node 0 at once
/// and on the others 100 ms later. Woken by node 0's announcement, the waiter tries while
/// the other two still hold the key and is refused: two grant rounds. Its client learns
/// that this resource's releases land unevenly, and the next hand-off waits for enough
/// announcements for a majority: one grant round. (Counted as grant requests on node 0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uneven_release_is_learned_and_then_costs_one_round() {
    let cluster = cluster(3);
    let slow = cluster.proxies().unwrap();
    for i in [1, 2] {
        slow.set(i, Fault::Latency(Duration::from_millis(100)))
            .unwrap();
    }
    let holder = Client::builder()
        .nodes(slow.urls())
        .node_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let waiter = patient(cluster.urls());
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let held = holder.acquire("uneven").await.unwrap();
        let before = grants_on_node_0(&cluster).await;
        let w = waiter.clone();
        let task = tokio::spawn(async move { w.acquire("uneven").await });
        let tried = settled(&cluster, before).await;
        for i in 0..3 {
            assert_eq!(subscribers(&cluster, i, "uneven").await, 1);
        }
        let token = held.token();
        held.release().await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the waiter was not woken")
            .unwrap()
            .unwrap();
        assert!(next.token() > token);
        rounds.push(grants_on_node_0(&cluster).await - tried);
        next.release().await.unwrap();
    }
    assert_eq!(rounds, [2, 1], "grant rounds after each release");
}
