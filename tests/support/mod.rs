//! Shared helpers for the integration tests: real redis-server nodes from the test kit,
//! and raw connections to poke at their keys.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use redfence::ClientBuilder;
use redfence::testkit::Cluster;
use redis::aio::MultiplexedConnection;

/// Five nodes, no persistence.
pub fn cluster(n: usize) -> Cluster {
    Cluster::start(n).unwrap()
}

/// A client tuned for loopback: short timeouts and retry delays.
pub fn client(cluster: &Cluster) -> ClientBuilder {
    cluster
        .client_builder()
        .node_timeout(Duration::from_millis(500))
        .retry_delay(Duration::from_millis(4))
        .retry_jitter(Duration::from_millis(2))
}

/// A client whose retry delay (20 s) is far beyond any test's patience: whatever it gets
/// within a few seconds, a release announcement woke it for. Waits up to 30 s. Its node
/// calls get 2 s: on a loaded machine a call slower than the default 200 ms would count
/// as failed, and an attempt woken by the one announcement there is would then leave
/// the waiter on its 20 s delay (seen once in CI, with a build running alongside).
pub fn patient(cluster: &Cluster) -> redfence::Client {
    client(cluster)
        .node_timeout(Duration::from_secs(2))
        .retry_delay(Duration::from_secs(20))
        .retry_jitter(Duration::ZERO)
        .wait(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A plain connection to node `i`, for setting up and inspecting keys.
pub async fn raw(cluster: &Cluster, i: usize) -> MultiplexedConnection {
    redis::Client::open(cluster.url(i))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

pub fn lock_key(resource: &str) -> String {
    format!("redfence:{{{resource}}}:lock")
}

pub fn fence_key(resource: &str) -> String {
    format!("redfence:{{{resource}}}:fence")
}

/// Runs a command on node `i`.
pub async fn cmd<T: redis::FromRedisValue>(cluster: &Cluster, i: usize, args: &[&str]) -> T {
    let mut c = raw(cluster, i).await;
    let mut command = redis::cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    command.query_async(&mut c).await.unwrap()
}

/// Waits (bounded) until the lock key of `resource` is gone on every running node.
pub async fn wait_expired(cluster: &Cluster, resource: &str, within: Duration) {
    let start = Instant::now();
    let key = lock_key(resource);
    loop {
        let mut left = 0;
        for i in 0..cluster.len() {
            if cluster.is_running(i) {
                left += cmd::<i64>(cluster, i, &["EXISTS", &key]).await;
            }
        }
        if left == 0 {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{key} still on {left} nodes after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until node `i` no longer has the lock key of `resource`.
pub async fn wait_expired_on(cluster: &Cluster, i: usize, resource: &str) {
    let start = Instant::now();
    let key = lock_key(resource);
    while cmd::<i64>(cluster, i, &["EXISTS", &key]).await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{key} still on node {i}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The reason of an `Error::Lost`, if `err` is one.
pub fn loss(err: &redfence::Error) -> Option<&redfence::LossReason> {
    match err {
        redfence::Error::Lost { reason, .. } => Some(reason),
        _ => None,
    }
}

/// Successful runs of `command` (lower case) on node `i`: its calls less its failed
/// calls in `INFO commandstats`.
pub async fn command_runs(cluster: &Cluster, i: usize, command: &str) -> u64 {
    let info = cmd::<String>(cluster, i, &["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return 0;
    };
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| {
                kv.strip_prefix(name)?
                    .strip_prefix('=')?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    field("calls") - field("failed_calls")
}

/// (peer port, TCP_NODELAY) of every TCP socket this process has open (Linux), read from
/// an owned duplicate of each descriptor.
#[cfg(target_os = "linux")]
pub fn tcp_sockets() -> Vec<(u16, bool)> {
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A duplicate of the descriptor (gone already if it was closed meanwhile).
        let Ok(dup) =
            rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty())
        else {
            continue;
        };
        let Ok(Some(peer)) = rustix::net::getpeername(&dup) else {
            continue;
        };
        let (Ok(peer), Ok(nodelay)) = (
            std::net::SocketAddr::try_from(peer),
            rustix::net::sockopt::tcp_nodelay(&dup),
        ) else {
            continue;
        };
        found.push((peer.port(), nodelay));
    }
    found
}
