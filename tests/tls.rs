//! `rediss://` nodes (feature `tls`): locking over TLS against real redis-server nodes.
#![cfg(feature = "tls")]

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use redfence::testkit::Cluster;

mod support;

/// Three single-node clusters, each also listening for TLS on its own port (the plain
/// port serves the test kit's readiness check).
fn tls_nodes() -> Vec<(Cluster, u16)> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    (0..3)
        .map(|_| {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let cert = data.join("tls-server.crt").display().to_string();
            let key = data.join("tls-server.key").display().to_string();
            let ca = data.join("tls-ca.crt").display().to_string();
            let cluster = Cluster::builder()
                .nodes(1)
                .args(["--tls-port", &port.to_string()])
                .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
                .args(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"])
                .start()
                .unwrap();
            (cluster, port)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_over_tls() {
    let nodes = tls_nodes();
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, port)| format!("rediss://127.0.0.1:{port}"))
        .collect();
    let ca =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls-ca.crt")).unwrap();
    let client = redfence::Client::builder()
        .nodes(urls.clone())
        .tls_root_certificate(ca.clone())
        .build()
        .unwrap();
    let g = client.try_acquire("tls").await.unwrap().expect("free");
    assert!(g.token().get() >= 1);
    g.extend().await.unwrap();

    // A waiter is woken over TLS too: its retry delay is far longer than the test.
    let waiter = redfence::Client::builder()
        .nodes(urls.clone())
        .tls_root_certificate(ca.clone())
        .retry_delay(Duration::from_secs(30))
        .retry_jitter(Duration::ZERO)
        .wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let task = tokio::spawn(async move { waiter.acquire("tls").await.map(|g| g.token()) });
    let start = Instant::now();
    for (c, _) in &nodes {
        let mut conn = redis::Client::open(c.url(0))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        loop {
            let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("redfence:{tls}:released")
                .query_async(&mut conn)
                .await
                .unwrap();
            if subs.first().is_some_and(|(_, n)| *n >= 1) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Nagle's algorithm is off on the TLS connections too (commands and subscriptions).
    #[cfg(target_os = "linux")]
    {
        let tls_ports: Vec<u16> = nodes.iter().map(|(_, port)| *port).collect();
        let over_tls: Vec<(u16, bool)> = support::tcp_sockets()
            .into_iter()
            .filter(|(port, _)| tls_ports.contains(port))
            .collect();
        assert!(over_tls.len() >= 6, "{over_tls:?}");
        assert!(over_tls.iter().all(|(_, nodelay)| *nodelay), "{over_tls:?}");
    }
    let first = g.token();
    assert!(g.release().await.unwrap());
    let next = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("not woken over TLS")
        .unwrap()
        .unwrap();
    assert!(next > first);

    // Without the private CA the certificate is not trusted: a typed error per node,
    // not a hang or a panic.
    let client = redfence::Client::builder()
        .nodes(urls.clone())
        .build()
        .unwrap();
    let err = client.try_acquire("tls").await.unwrap_err();
    assert!(err.node_errors().len() >= 2, "{err}");

    // TLS to a plain port fails the same way.
    let plain: Vec<String> = nodes
        .iter()
        .map(|(c, _)| c.url(0).replace("redis://", "rediss://"))
        .collect();
    let client = redfence::Client::builder()
        .nodes(plain)
        .tls_root_certificate(ca)
        .build()
        .unwrap();
    let err = client.try_acquire("tls").await.unwrap_err();
    assert!(err.node_errors().len() >= 2, "{err}");
}

#[test]
fn a_bad_root_certificate_is_a_config_error() {
    let err = redfence::Client::builder()
        .node("rediss://127.0.0.1:6380")
        .tls_root_certificate(b"not a certificate".to_vec())
        .build()
        .unwrap_err();
    assert!(matches!(err, redfence::ConfigError::Tls { .. }), "{err:?}");
}
