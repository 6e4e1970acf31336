//! Extend and release: only the owner can do either, an expired lock passes to the next
//! holder, and a late extend says the lock is lost.

mod support;

use std::time::Duration;

use redfence::LossReason;
use support::{client, cluster, cmd, lock_key, loss, wait_expired};

/// Delete the holder's key on 3 of 5 nodes behind its back and let another client take
/// them: the old holder can neither extend nor release the new holder's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_can_extend_or_release() {
    let cluster = cluster(5);
    let (a, b) = (
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    );
    let ga = a.try_acquire("owned").await.unwrap().unwrap();
    assert!(b.try_acquire("owned").await.unwrap().is_none(), "held by A");
    for i in [0, 1, 2] {
        cmd::<()>(&cluster, i, &["DEL", &lock_key("owned")]).await;
    }
    let gb = b
        .try_acquire("owned")
        .await
        .unwrap()
        .expect("B takes {0,1,2}");
    assert!(gb.token() > ga.token());

    let err = ga.extend().await.unwrap_err();
    assert!(
        matches!(loss(&err), Some(LossReason::NotOwner { nodes: 3 })),
        "{err:?}"
    );
    assert!(!ga.release().await.unwrap(), "A no longer held a quorum");
    // B's keys survived A's release, and B can still renew and release them.
    for i in [0, 1, 2] {
        assert_eq!(
            cmd::<i64>(&cluster, i, &["EXISTS", &lock_key("owned")]).await,
            1
        );
    }
    assert!(gb.extend().await.unwrap() > Duration::ZERO);
    assert!(gb.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_passes_on_and_a_late_extend_fails() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .ttl(Duration::from_millis(1200))
        .build()
        .unwrap();
    let ga = c.try_acquire("expiring").await.unwrap().unwrap();
    assert!(ga.validity() <= Duration::from_millis(1200));
    wait_expired(&cluster, "expiring", Duration::from_secs(5)).await;
    assert_eq!(ga.validity(), Duration::ZERO);

    let gb = c
        .try_acquire("expiring")
        .await
        .unwrap()
        .expect("expired lock is free");
    assert!(gb.token() > ga.token());
    let err = ga.extend().await.unwrap_err();
    assert!(
        matches!(loss(&err), Some(LossReason::ValidityElapsed)),
        "{err:?}"
    );
    assert!(err.to_string().contains("expiring"), "{err}");
    assert!(!ga.release().await.unwrap());
    assert!(gb.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_renews_the_lease_on_the_nodes() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    let g = c.try_acquire("renew").await.unwrap().unwrap();
    let key = lock_key("renew");
    // Let the lease run down, then renew it: every node's PTTL goes back up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before: i64 = cmd(&cluster, 0, &["PTTL", &key]).await;
    let validity = g.extend().await.unwrap();
    assert!(validity > Duration::from_millis(1500), "{validity:?}");
    // The round decided at a majority; the others' extensions finish in the background.
    assert_eq!(c.shutdown(Duration::from_secs(5)).await, 0);
    for i in 0..5 {
        let after: i64 = cmd(&cluster, i, &["PTTL", &key]).await;
        assert!(
            after > before,
            "node {i}: pttl {after} after extend, {before} before"
        );
    }
    assert!(g.release().await.unwrap());
}

/// `extend_for` asks every node for the given lease, not the acquisition's; a zero or
/// absurd one is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_for_asks_for_the_given_lease() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    let g = c.try_acquire("renew-for").await.unwrap().unwrap();
    let validity = g.extend_for(Duration::from_secs(30)).await.unwrap();
    assert!(validity > Duration::from_secs(29), "{validity:?}");
    assert_eq!(c.shutdown(Duration::from_secs(5)).await, 0);
    for i in 0..3 {
        let pttl: i64 = cmd(&cluster, i, &["PTTL", &lock_key("renew-for")]).await;
        assert!(pttl > 29_000, "node {i}: pttl {pttl}");
    }
    for bad in [Duration::ZERO, Duration::from_secs(365 * 24 * 3600)] {
        let err = g.extend_for(bad).await.unwrap_err();
        assert!(matches!(err, redfence::Error::Config(_)), "{err}");
    }
    assert!(g.release().await.unwrap());
}

/// A shorter extension never shortens the keys: the guard keeps the later deadline (so a
/// watchdog's regular renewal cannot undo a long `extend_for`), and so must every node,
/// or the keys would expire while the guard still reports the lock valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_extension_never_shortens_the_keys() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let g = c.try_acquire("shorter").await.unwrap().unwrap();
    let validity = g.extend_for(Duration::from_secs(1)).await.unwrap();
    assert!(validity > Duration::from_secs(25), "{validity:?}");
    // Both rounds were decided at a majority: let every node's calls land first.
    assert_eq!(c.shutdown(Duration::from_secs(5)).await, 0);
    let left = g.validity();
    for i in 0..3 {
        let pttl: i64 = cmd(&cluster, i, &["PTTL", &lock_key("shorter")]).await;
        let pttl = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
        assert!(
            pttl >= left,
            "node {i}: the key expires in {pttl:?}, the guard says valid for {left:?}"
        );
    }
    assert!(g.release().await.unwrap());
}

/// Dropping a guard releases it in the background; the next holder does not wait for the
/// TTL (10 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_releases_in_the_background() {
    let cluster = cluster(5);
    let c = client(&cluster).build().unwrap();
    let g = c.try_acquire("dropped").await.unwrap().unwrap();
    assert_eq!(g.resource(), "dropped");
    drop(g);
    wait_expired(&cluster, "dropped", Duration::from_secs(3)).await;
    let g = c.try_acquire("dropped").await.unwrap().expect("free again");
    assert!(g.release().await.unwrap());
}

/// A guard dropped outside any runtime must not panic or block; its keys expire.
#[test]
fn drop_outside_a_runtime_leaves_the_lock_to_expire() {
    let cluster = cluster(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client(&cluster)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    let g = rt.block_on(c.try_acquire("orphan")).unwrap().unwrap();
    drop(g); // no runtime context here
    rt.block_on(async {
        assert!(
            c.try_acquire("orphan").await.unwrap().is_none(),
            "still held"
        );
        wait_expired(&cluster, "orphan", Duration::from_secs(5)).await;
        c.try_acquire("orphan")
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    });
}
