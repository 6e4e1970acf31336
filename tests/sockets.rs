//! The client's connections to the nodes: Nagle's algorithm is off on every one of them
//! (the commands' and the wake-ups'), read back from the sockets themselves.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{client, cluster, tcp_sockets};

/// A holder's and a waiter's connections (commands on every node, and the waiter's
/// subscriptions) all have TCP_NODELAY set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_connection_has_nagle_off() {
    let cluster = cluster(3);
    let ports: HashSet<u16> = (0..3).map(|i| cluster.port(i)).collect();
    let holder = client(&cluster).build().unwrap();
    let waiter = client(&cluster)
        .wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let held = holder.acquire("sockets").await.unwrap();
    let waiting = tokio::spawn(async move { waiter.acquire("sockets").await.map(|_| ()) });
    // The waiter subscribes to the release channel on every node.
    let channel = "redfence:{sockets}:released";
    for i in 0..3 {
        let mut subscribed = false;
        for _ in 0..200 {
            // A blocking connection, closed when dropped: none of this test's own
            // connections is open when the sockets are read.
            let mut raw = redis::Client::open(cluster.url(i))
                .unwrap()
                .get_connection()
                .unwrap();
            let (_, n): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query(&mut raw)
                .unwrap();
            drop(raw);
            if n == 1 {
                subscribed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(subscribed, "the waiter never subscribed on node {i}");
    }
    let to_nodes: Vec<(u16, bool)> = tcp_sockets()
        .into_iter()
        .filter(|(port, _)| ports.contains(port))
        .collect();
    // Two clients' command connections on three nodes, and the waiter's subscriptions.
    assert!(to_nodes.len() >= 9, "{to_nodes:?}");
    let nagle: Vec<_> = to_nodes.iter().filter(|(_, nodelay)| !nodelay).collect();
    assert!(
        nagle.is_empty(),
        "connections with Nagle on: {nagle:?} of {to_nodes:?}"
    );
    held.release().await.unwrap();
    waiting.await.unwrap().unwrap();
}
