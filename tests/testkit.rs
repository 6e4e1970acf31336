//! The test kit itself: what kill, pause, resume and restart do to a node, and that every
//! process is gone once the cluster is dropped, on panic too.

mod support;

use std::path::Path;
use std::time::Duration;

use redfence::testkit::{Cluster, Persistence};
use support::{cmd, raw};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show, so check its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

#[test]
fn drop_kills_every_node_even_on_panic() {
    let mut pids = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::start(3).unwrap();
        cluster.pause(1).unwrap(); // a stopped process must die too
        pids.extend((0..3).map(|i| cluster.pid(i).unwrap()));
        panic!("test failure inside a test");
    }));
    assert!(result.is_err());
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!alive(pid), "redis-server {pid} outlived its cluster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_only_with_aof() {
    let cluster = Cluster::builder()
        .nodes(2)
        .persistence(Persistence::AofAlways)
        .start()
        .unwrap();
    for i in 0..2 {
        cmd::<()>(&cluster, i, &["SET", "k", "v"]).await;
    }
    let old = cluster.pid(0).unwrap();
    cluster.restart(0).unwrap();
    assert_ne!(cluster.pid(0).unwrap(), old);
    assert!(!alive(old));
    assert_eq!(
        cmd::<Option<String>>(&cluster, 0, &["GET", "k"])
            .await
            .as_deref(),
        Some("v")
    );

    cluster.restart_with(1, Persistence::None).unwrap();
    assert_eq!(
        cmd::<Option<String>>(&cluster, 1, &["GET", "k"]).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_pause_and_resume() {
    let cluster = Cluster::start(1).unwrap();
    let port = cluster.port(0);
    let mut conn = raw(&cluster, 0).await;
    cluster.pause(0).unwrap();
    // Frozen: the kernel still accepts connections, but nothing answers.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let ping = redis::cmd("PING");
    let frozen = ping.query_async::<String>(&mut conn);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), frozen)
            .await
            .is_err()
    );
    cluster.resume(0).unwrap();
    assert_eq!(
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .unwrap(),
        "PONG"
    );

    cluster.kill(0).unwrap();
    assert!(!cluster.is_running(0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        cluster.pause(0).is_err(),
        "pausing a dead node must be an error"
    );
    cluster.restart(0).unwrap();
    assert_eq!(cluster.port(0), port);
    assert_eq!(cmd::<String>(&cluster, 0, &["PING"]).await, "PONG");
    assert!(cluster.kill(7).is_err());
}

#[test]
fn a_missing_server_is_a_clear_error() {
    let err = Cluster::builder()
        .server(Path::new("/nonexistent/redis-server"))
        .start()
        .unwrap_err();
    assert!(
        err.to_string().contains("apt-get install redis-server"),
        "{err}"
    );
}

#[test]
fn builder_debug_hides_passwords() {
    let b = Cluster::builder().args(["--requirepass", "hunter2", "--maxclients", "100"]);
    let shown = format!("{b:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("100"),
        "{shown}"
    );
}

/// Under `restart_with_clock(_, 3.0)` a node expires keys about three times as fast: a
/// lease set at the same moment on a normal node is still there when the fast one's is
/// gone. (Needs libfaketime; without it the kit must say so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_expires_keys_early() {
    let cluster = Cluster::start(2).unwrap();
    if !Cluster::clock_skew_available() {
        let err = cluster.restart_with_clock(0, 3.0).unwrap_err();
        assert!(err.to_string().contains("faketime"), "{err}");
        return;
    }
    cluster.restart_with_clock(0, 3.0).unwrap();
    for i in 0..2 {
        cmd::<()>(&cluster, i, &["SET", "lease", "x", "PX", "1500"]).await;
    }
    let start = std::time::Instant::now();
    while cmd::<i64>(&cluster, 0, &["EXISTS", "lease"]).await == 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the fast clock did not expire it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cmd::<i64>(&cluster, 1, &["EXISTS", "lease"]).await,
        1,
        "normal clock expired it too"
    );
    cluster.restart(0).unwrap();
}
