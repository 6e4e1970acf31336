//! Redis errors become typed errors naming the node: NOSCRIPT is recovered, WRONGTYPE
//! collisions, authentication and ACL refusals are reported, and nothing panics.

mod support;

use std::time::{Duration, Instant};

use redfence::testkit::Cluster;
use redfence::{Error, NodeErrorKind};
use support::{client, cluster, cmd, fence_key, lock_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noscript_after_script_flush_is_recovered() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    c.acquire("flush").await.unwrap().release().await.unwrap();
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["SCRIPT", "FLUSH"]).await;
    }
    let g = c
        .try_acquire("flush")
        .await
        .unwrap()
        .expect("scripts reloaded");
    g.extend().await.unwrap();
    assert!(g.release().await.unwrap());
}

/// A user's list under the fence key: the node says WRONGTYPE, the error names each node,
/// and the SET of the lock key was undone in the same script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_on_the_fence_key_is_reported_and_undone() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["RPUSH", &fence_key("typed"), "user data"]).await;
    }
    let start = Instant::now();
    let err = c.acquire("typed").await.unwrap_err();
    // A lasting error fails at once instead of retrying for the 10 s wait timeout.
    assert!(start.elapsed() < Duration::from_secs(5));
    // Two failures decide the round; the third node's error is there if it came in time.
    let errors = err.node_errors();
    assert!((2..=3).contains(&errors.len()), "{err}");
    assert!(
        errors.iter().all(|e| e.kind() == NodeErrorKind::WrongType),
        "{err}"
    );
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert!(err.to_string().contains(&fence_key("typed")), "{err}");
    for i in 0..3 {
        // A node whose call was still in flight when the round was decided undoes its
        // grant in the background: give it (bounded) time.
        let start = Instant::now();
        while cmd::<i64>(&cluster, i, &["EXISTS", &lock_key("typed")]).await != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "node {i} kept a lock key without a token"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let len: i64 = cmd(&cluster, i, &["LLEN", &fence_key("typed")]).await;
        assert_eq!(len, 1, "user data on node {i} was touched");
    }
}

/// A user's hash under the lock key is not "held by someone else": it is a collision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_on_the_lock_key_is_not_mistaken_for_a_holder() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["HSET", &lock_key("hashed"), "f", "v"]).await;
    }
    let err = c.try_acquire("hashed").await.unwrap_err();
    assert!(
        err.node_errors()
            .iter()
            .all(|e| e.kind() == NodeErrorKind::WrongType),
        "{err}"
    );
    assert!(err.to_string().contains(&lock_key("hashed")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_counter_is_an_error_not_a_token() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["SET", &fence_key("corrupt"), "-7"]).await;
    }
    let err = c.try_acquire("corrupt").await.unwrap_err();
    assert!(err.to_string().contains("not positive"), "{err}");
    // `inspect` names the value it found rather than calling the node's reply bad (the
    // attempt's `INCR` took it from -7 to -6).
    let status = c.inspect("corrupt").await.unwrap();
    for view in &status.nodes {
        let e = view.state.as_ref().unwrap_err();
        assert_eq!(e.kind(), NodeErrorKind::Server, "{e}");
        assert!(e.to_string().contains("\"-6\""), "{e}");
        assert!(e.to_string().contains(&fence_key("corrupt")), "{e}");
    }
    for i in 0..3 {
        cmd::<()>(&cluster, i, &["SET", &fence_key("corrupt"), "not a number"]).await;
    }
    assert!(c.try_acquire("corrupt").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_typed() {
    let cluster = Cluster::builder()
        .nodes(3)
        .args(["--requirepass", "s3cret"])
        .start()
        .unwrap();
    let with_password = |pw: &str| -> Vec<String> {
        (0..3)
            .map(|i| format!("redis://:{pw}@127.0.0.1:{}", cluster.port(i)))
            .collect()
    };
    let good = redfence::Client::builder()
        .nodes(with_password("s3cret"))
        .build()
        .unwrap();
    good.try_acquire("auth")
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();

    for c in [
        client(&cluster).build().unwrap(),
        redfence::Client::builder()
            .nodes(with_password("wrong"))
            .build()
            .unwrap(),
    ] {
        let err = c.acquire("auth").await.unwrap_err();
        assert!(
            err.node_errors()
                .iter()
                .all(|e| e.kind() == NodeErrorKind::Auth),
            "{err}"
        );
        // Credentials never appear in messages.
        assert!(!format!("{err} {err:?} {c:?}").contains("wrong"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refusals_are_typed() {
    let cluster = cluster(3);
    for i in 0..3 {
        cmd::<()>(
            &cluster,
            i,
            &["ACL", "SETUSER", "app", "on", ">pw", "~other:*", "+@all"],
        )
        .await;
    }
    let urls: Vec<String> = (0..3)
        .map(|i| format!("redis://app:pw@127.0.0.1:{}", cluster.port(i)))
        .collect();
    let c = redfence::Client::builder().nodes(urls).build().unwrap();
    let err = c.try_acquire("acl").await.unwrap_err();
    assert!(
        err.node_errors()
            .iter()
            .all(|e| e.kind() == NodeErrorKind::NoPermission),
        "{err}"
    );
    let Error::NoQuorum { failed, .. } = err else {
        panic!("{err:?}")
    };
    assert!(failed >= 2);
}
