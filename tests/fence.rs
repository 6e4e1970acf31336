//! The storage side of fencing against a real redis-server, and the in-process gate.

mod support;

use std::sync::Arc;

use redfence::FencingToken;
use redfence::fence::{FenceGate, RedisFencedStore, StoreError, Verdict};
use redfence::testkit::Cluster;

fn t(v: u64) -> FencingToken {
    FencingToken::new(v)
}

async fn store(cluster: &Cluster) -> RedisFencedStore {
    RedisFencedStore::connect(&cluster.url(0))
        .await
        .unwrap()
        .with_audit_log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_accepted_only_from_the_newest_token() {
    let cluster = Cluster::start(1).unwrap();
    let s = store(&cluster).await;
    assert_eq!(s.read("k").await.unwrap(), None);
    assert_eq!(
        s.write("k", t(5), b"five").await.unwrap(),
        Verdict::Accepted
    );
    // The same holder writing again is fine.
    assert_eq!(
        s.write("k", t(5), b"five again").await.unwrap(),
        Verdict::Accepted
    );
    assert_eq!(
        s.write("k", t(4), b"stale").await.unwrap(),
        Verdict::Rejected {
            stale: t(4),
            current: t(5)
        }
    );
    assert_eq!(
        s.write("k", t(9), b"nine").await.unwrap(),
        Verdict::Accepted
    );
    let read = s.read("k").await.unwrap().unwrap();
    assert_eq!((read.value.as_slice(), read.token), (&b"nine"[..], t(9)));
    assert_eq!(s.accepted_log("k").await.unwrap(), vec![t(5), t(5), t(9)]);
    // Keys are independent.
    assert_eq!(
        s.write("other", t(1), b"x").await.unwrap(),
        Verdict::Accepted
    );
}

/// Tokens compare exactly, including where doubles cannot tell them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_compare_exactly_at_any_size() {
    let cluster = Cluster::start(1).unwrap();
    let s = store(&cluster).await;
    let big = (1u64 << 53) + 2;
    assert!(s.write("big", t(big), b"a").await.unwrap().is_accepted());
    assert!(
        !s.write("big", t(big - 1), b"b")
            .await
            .unwrap()
            .is_accepted()
    );
    assert!(
        s.write("big", t(u64::MAX), b"c")
            .await
            .unwrap()
            .is_accepted()
    );
    assert!(
        !s.write("big", t(u64::MAX - 1), b"d")
            .await
            .unwrap()
            .is_accepted()
    );
    // Shorter numbers are smaller, whatever their digits.
    assert!(s.write("len", t(99), b"a").await.unwrap().is_accepted());
    assert!(s.write("len", t(100), b"b").await.unwrap().is_accepted());
    assert!(!s.write("len", t(99), b"c").await.unwrap().is_accepted());
}

/// 8 writers with random tokens race on one key: the store's acceptance order never goes
/// backwards, and it ends at the largest token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_never_go_backwards() {
    let cluster = Cluster::start(1).unwrap();
    let s = store(&cluster).await;
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut max = 0;
            for i in 0..200u64 {
                let token = (i * 7919 + w * 104_729) % 1000;
                max = max.max(token);
                let _ = s.write("race", t(token), b"v").await.unwrap();
            }
            max
        }));
    }
    let mut max = 0;
    for task in tasks {
        max = max.max(task.await.unwrap());
    }
    let log = s.accepted_log("race").await.unwrap();
    assert!(
        log.windows(2).all(|w| w[0] <= w[1]),
        "accepted out of order: {log:?}"
    );
    assert_eq!(s.read("race").await.unwrap().unwrap().token, t(max));
}

/// A key named like another key's audit log does not collide with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_logs_do_not_collide() {
    let cluster = Cluster::start(1).unwrap();
    let s = store(&cluster).await;
    assert!(s.write("x:log", t(1), b"a").await.unwrap().is_accepted());
    assert!(s.write("x", t(1), b"b").await.unwrap().is_accepted());
    assert!(s.write("x}:log", t(1), b"c").await.unwrap().is_accepted());
    assert_eq!(s.read("x").await.unwrap().unwrap().value, b"b");
    assert_eq!(s.accepted_log("x").await.unwrap(), vec![t(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_is_an_error_not_a_verdict() {
    let cluster = Cluster::start(1).unwrap();
    let s = store(&cluster).await;
    support::cmd::<()>(&cluster, 0, &["SET", "fenced:{users}:data", "not a hash"]).await;
    let err = s.write("users", t(1), b"x").await.unwrap_err();
    assert!(matches!(err, StoreError::Redis(_)), "{err:?}");
    assert!(s.read("users").await.is_err());
}

/// 16 tasks enter the gate with random tokens; what they wrote, in order, never goes
/// backwards, and stale tokens are told the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_serializes_check_and_write() {
    let gate = Arc::new(FenceGate::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100u64 {
                let token = t((i * 31 + w * 17) % 500);
                match gate.enter(token).await {
                    Ok(mut log) => {
                        tokio::task::yield_now().await; // hold it across an await
                        log.push(token.get());
                    }
                    Err(Verdict::Rejected { stale, current }) => {
                        assert_eq!(stale, token);
                        assert!(current > stale);
                    }
                    Err(Verdict::Accepted) => unreachable!(),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let log = gate.enter(t(u64::MAX)).await.unwrap().clone();
    assert!(!log.is_empty());
    assert!(log.windows(2).all(|w| w[0] <= w[1]), "{log:?}");
}
