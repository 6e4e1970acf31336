//! `Client::check_nodes` against real nodes: each setting that breaks a promise is named,
//! and settings that cannot be read are reported, not fatal.

mod support;

use std::time::{Duration, Instant};

use redfence::testkit::{Cluster, Persistence};
use redfence::{NodeErrorKind, NodeWarning};
use support::{cluster, cmd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_noeviction_primaries_pass() {
    let c = Cluster::builder()
        .nodes(3)
        .persistence(Persistence::AofAlways)
        .start()
        .unwrap();
    let checks = c.client_builder().build().unwrap().check_nodes().await;
    assert_eq!(checks.len(), 3);
    for (i, check) in checks.iter().enumerate() {
        assert_eq!(check.node, format!("127.0.0.1:{}", c.port(i)));
        assert_eq!(check.warnings, [], "node {i}");
        assert_eq!(check.unreadable, [], "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_no_aof_are_named() {
    let c = Cluster::builder()
        .nodes(3)
        .args(["--maxmemory-policy", "allkeys-lru", "--maxmemory", "100mb"])
        .start()
        .unwrap();
    let client = c.client_builder().build().unwrap();
    let checks = client.check_nodes().await;
    for check in &checks {
        assert_eq!(
            check.warnings,
            [
                NodeWarning::Eviction {
                    policy: "allkeys-lru".into()
                },
                NodeWarning::NotDurable {
                    appendonly: false,
                    appendfsync: "everysec".into()
                }
            ],
            "{}",
            check.node
        );
    }
    // Without a memory limit the policy never evicts: only the durability is named.
    for i in 0..3 {
        cmd::<()>(&c, i, &["CONFIG", "SET", "maxmemory", "0"]).await;
    }
    for check in client.check_nodes().await {
        assert_eq!(
            check.warnings,
            [NodeWarning::NotDurable {
                appendonly: false,
                appendfsync: "everysec".into()
            }],
            "{}",
            check.node
        );
    }
}

/// A primary with a replica, and the replica: both named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_is_named() {
    let c = Cluster::builder()
        .nodes(2)
        .persistence(Persistence::AofAlways)
        .start()
        .unwrap();
    let primary = c.port(0).to_string();
    cmd::<()>(&c, 1, &["REPLICAOF", "127.0.0.1", &primary]).await;
    let start = Instant::now();
    loop {
        let info: String = cmd(&c, 0, &["INFO", "replication"]).await;
        if info.contains("connected_slaves:1") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let checks = c.client_builder().build().unwrap().check_nodes().await;
    assert_eq!(
        checks[0].warnings,
        [NodeWarning::HasReplicas { replicas: 1 }]
    );
    assert_eq!(checks[1].warnings, [NodeWarning::Replica]);
}

/// A user without `CONFIG` and `INFO`, and a dead node: reported per node, no error, no
/// judgement of what was not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_settings_are_reported_not_fatal() {
    let c = cluster(3);
    for i in 0..3 {
        cmd::<()>(
            &c,
            i,
            &[
                "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config", "-info",
            ],
        )
        .await;
    }
    c.kill(2).unwrap();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("redis://app:pw@127.0.0.1:{}", c.port(i)))
        .collect();
    let client = redfence::Client::builder().nodes(urls).build().unwrap();
    let checks = client.check_nodes().await;
    for check in &checks[..2] {
        assert_eq!(check.warnings, [], "{}", check.node);
        assert_eq!(check.unreadable.len(), 2, "{check:?}");
        assert!(
            check
                .unreadable
                .iter()
                .all(|e| e.kind() == NodeErrorKind::NoPermission),
            "{check:?}"
        );
    }
    assert_eq!(checks[2].warnings, []);
    assert!(!checks[2].unreadable.is_empty());
    assert!(
        checks[2]
            .unreadable
            .iter()
            .all(|e| e.kind() == NodeErrorKind::ConnectionRefused),
        "{:?}",
        checks[2]
    );
    // The lock itself still works for this user.
    let g = client.try_acquire("checked").await.unwrap().unwrap();
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_is_named() {
    let c = Cluster::builder()
        .nodes(1)
        .persistence(Persistence::AofAlways)
        .args(["--cluster-enabled", "yes"])
        .start()
        .unwrap();
    let checks = c.client_builder().build().unwrap().check_nodes().await;
    assert_eq!(checks[0].warnings, [NodeWarning::ClusterMode]);
}
