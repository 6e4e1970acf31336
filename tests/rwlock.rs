//! The reader-writer lock on real nodes: readers share and exclude writers under
//! contention from several clients, a waiting writer holds new readers off, a dead
//! writer's marker and a crashed reader's entry expire on their own, readers' tokens
//! cover earlier writers through kills and AOF restarts, and faults (a frozen node, a
//! majority down).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redfence::testkit::{Cluster, Persistence};
use redfence::{AcquireOptions, Error};
use support::{client, cluster, patient};

/// Who is inside right now, as the holders report it.
#[derive(Default)]
struct Inside {
    readers: usize,
    writers: usize,
    most_readers: usize,
    reads: usize,
    writes: usize,
}

/// Eight tasks on two clients, each mixing reads and writes: a writer is never inside
/// with anyone, readers are inside together at some point, and writers' tokens increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_and_writers_exclude_under_contention() {
    let cluster = cluster(5);
    let clients = [
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    ];
    let inside = Arc::new(Mutex::new(Inside::default()));
    let last_write = Arc::new(Mutex::new(0u64));
    let tasks = (0..8).map(|who| {
        let lock = clients[who % 2].rwlock("shelf").unwrap();
        let (inside, last_write) = (Arc::clone(&inside), Arc::clone(&last_write));
        tokio::spawn(async move {
            for round in 0..10 {
                if (who + round) % 4 == 0 {
                    let w = lock.write().await.unwrap();
                    {
                        let mut i = inside.lock().unwrap();
                        assert_eq!((i.readers, i.writers), (0, 0), "writer {who} not alone");
                        i.writers += 1;
                        i.writes += 1;
                        let mut last = last_write.lock().unwrap();
                        assert!(w.token().get() > *last, "writer token went back");
                        *last = w.token().get();
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    inside.lock().unwrap().writers -= 1;
                    assert!(w.release().await.unwrap());
                } else {
                    let r = lock.read().await.unwrap();
                    {
                        let mut i = inside.lock().unwrap();
                        assert_eq!(i.writers, 0, "reader {who} inside with a writer");
                        i.readers += 1;
                        i.reads += 1;
                        i.most_readers = i.most_readers.max(i.readers);
                        // Every write that finished before this read began is covered.
                        let last = *last_write.lock().unwrap();
                        assert!(r.token().get() >= last, "read token below an earlier write");
                    }
                    tokio::time::sleep(Duration::from_millis(6)).await;
                    inside.lock().unwrap().readers -= 1;
                    assert!(r.release().await.unwrap());
                }
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let i = inside.lock().unwrap();
    assert_eq!(i.reads + i.writes, 80);
    assert!(i.writes >= 16, "{} writes", i.writes);
    assert!(i.most_readers >= 2, "readers never shared");
}

/// Readers hold; a writer waits and leaves its marker, which keeps new readers out
/// though readers are in; once the readers release, the writer gets in, then readers
/// again. A writer that only tried (`try_write`) withdraws its marker at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_holds_new_readers_off() {
    let cluster = cluster(3);
    let (a, b) = (
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    );
    let (la, lb) = (a.rwlock("doc").unwrap(), b.rwlock("doc").unwrap());
    let r1 = la.try_read().await.unwrap().expect("free");
    let r2 = lb.try_read().await.unwrap().expect("readers share");
    assert!(lb.try_write().await.unwrap().is_none(), "readers are in");
    let r3 = wait_for("a reader after a failed try_write", async || {
        la.try_read().await.unwrap()
    })
    .await;
    r3.release().await.unwrap();

    let writer = tokio::spawn({
        let lb = lb.clone();
        async move { lb.write().await }
    });
    wait_for("the waiting writer's marker", async || {
        la.try_read().await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!writer.is_finished(), "the writer got in past two readers");
    assert!(r1.release().await.unwrap());
    assert!(r2.release().await.unwrap());
    let w = writer.await.unwrap().expect("readers gone");
    assert!(la.try_read().await.unwrap().is_none(), "a writer is in");
    assert!(
        la.try_write().await.unwrap().is_none(),
        "one writer at a time"
    );
    let written = w.token();
    assert!(w.release().await.unwrap());
    let r = la
        .try_read()
        .await
        .unwrap()
        .expect("the writer left, its marker with it");
    assert!(r.token() >= written);
    r.release().await.unwrap();
}

/// A writer whose process dies while it waits leaves its marker to expire with its
/// lease; one whose wait is cancelled withdraws it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_marker_expires_a_cancelled_ones_goes() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_millis(1500))
        .wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let lock = c.rwlock("marker").unwrap();
    let r = lock.try_read().await.unwrap().unwrap();
    // A waiting writer that stops dead: polled for a while, then never again and
    // never dropped (a process gone; its own client, as another process would be).
    let gone = client(&cluster)
        .ttl(Duration::from_millis(1500))
        .build()
        .unwrap();
    let gone = Box::leak(Box::new(gone.rwlock("marker").unwrap()));
    let mut dead = Box::pin(gone.write());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut dead)
            .await
            .is_err()
    );
    std::mem::forget(dead);
    assert!(r.release().await.unwrap());
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "the marker holds readers off"
    );
    let start = Instant::now();
    let r = lock
        .read()
        .await
        .expect("the marker expires with the writer's lease");
    assert!(start.elapsed() < Duration::from_secs(5));

    // Cancelled: withdrawn, announced.
    let cancelled = tokio::time::timeout(Duration::from_millis(300), lock.write()).await;
    assert!(cancelled.is_err(), "the writer got in past a reader");
    r.release().await.unwrap();
    let r = wait_for("a reader after the cancelled writer", async || {
        lock.try_read().await.unwrap()
    })
    .await;
    r.release().await.unwrap();
}

/// Polls `check` until it answers `Some`, within 5 s (a bound, not a sleep: background
/// withdrawals and releases land within milliseconds).
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Each reader has its own expiry: a crashed reader's entry runs out on its own lease,
/// even while another reader keeps extending, so the writer gets in as soon as the live
/// reader leaves, not one more lease after the last extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_reader_pins_no_one_else() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_secs(2))
        .wait(Duration::from_secs(20))
        .build()
        .unwrap();
    let lock = c.rwlock("pinned").unwrap();
    let crashed = lock.try_read().await.unwrap().unwrap();
    // Gone without a word: no release, no watchdog.
    std::mem::forget(crashed);
    let live = lock
        .read_with(AcquireOptions::new().watchdog(true))
        .await
        .unwrap();
    // The live reader outlasts the crashed one's lease, extended by its watchdog.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(live.validity() > Duration::ZERO);
    let writer = tokio::spawn({
        let lock = lock.clone();
        async move { lock.write().await.map(|w| (w, Instant::now())) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !writer.is_finished(),
        "the writer got in past a live reader"
    );
    let released = Instant::now();
    assert!(live.release().await.unwrap());
    let (w, got) = writer.await.unwrap().unwrap();
    // A set whose expiry the live reader kept extending would keep the crashed entry
    // another 2 s lease past the release.
    assert!(
        got - released < Duration::from_millis(1500),
        "the writer waited {:?} after the last live reader left",
        got - released
    );
    w.release().await.unwrap();
}

/// Minorities killed and restarted from their append-only files: writers' tokens keep
/// increasing and each reader's covers every earlier writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_tokens_cover_writers_through_kills() {
    let cluster = Cluster::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .unwrap();
    let c = client(&cluster).build().unwrap();
    let lock = c.rwlock("ledger").unwrap();
    let mut last = 0;
    for round in 0..6usize {
        let down = [round % 5, (round + 3) % 5];
        for i in down {
            cluster.kill(i).unwrap();
        }
        for _ in 0..3 {
            let w = lock.write().await.unwrap();
            assert!(w.token().get() > last, "writer token went back");
            last = w.token().get();
            w.release().await.unwrap();
            let r = lock.read().await.unwrap();
            assert!(
                r.token().get() >= last,
                "read token {} below the earlier write's {last}",
                r.token()
            );
            r.release().await.unwrap();
        }
        for i in down {
            cluster.restart(i).unwrap();
        }
    }
}

/// A frozen node slows neither side; three of five down is a clear error naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_and_a_dead_majority() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let lock = c.rwlock("faults").unwrap();
    lock.read().await.unwrap().release().await.unwrap();
    cluster.pause(3).unwrap();
    let mut slow = Vec::new();
    for k in 0..10 {
        let t = Instant::now();
        let r = lock.read().await.unwrap();
        r.release().await.unwrap();
        let w = lock.write().await.unwrap();
        w.release().await.unwrap();
        if t.elapsed() >= Duration::from_millis(1500) {
            slow.push((k, t.elapsed()));
        }
    }
    cluster.resume(3).unwrap();
    assert!(
        slow.is_empty(),
        "cycles that waited for the frozen node: {slow:?}"
    );
    // The thawed node runs the grants queued while it was frozen; the client releases
    // them in the background. Let that finish, or a late reader entry there would refuse
    // the writer below before the third dead node is heard from.
    c.shutdown(Duration::from_secs(10)).await;

    for i in [0, 1, 4] {
        cluster.kill(i).unwrap();
    }
    for err in [
        lock.try_read().await.map(|_| ()).unwrap_err(),
        lock.try_write().await.map(|_| ()).unwrap_err(),
    ] {
        let Error::NoQuorum { failed, .. } = err else {
            panic!("expected NoQuorum, got {err:?}");
        };
        assert_eq!(failed, 3);
        for i in [0, 1, 4] {
            let port = cluster.port(i).to_string();
            assert!(err.to_string().contains(&port), "node {i} not named: {err}");
        }
    }
}

/// `run_read` / `run_write` hold the lease for the work only; a mutex of the same name is
/// apart; a bad name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_runs_and_names() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    let g = c.try_acquire("same").await.unwrap().unwrap();
    let lock = c.rwlock("same").unwrap();
    assert_eq!(lock.name(), "same");
    let (token, blocked) = lock
        .run_write(async |w| (w.token(), lock.try_read().await.unwrap().is_none()))
        .await
        .unwrap();
    assert!(blocked, "a reader got in during the write");
    let seen = lock
        .run_read(async |r| {
            assert!(r.has_watchdog());
            (r.token(), lock.try_read().await.unwrap().is_some())
        })
        .await
        .unwrap();
    assert!(seen.0 >= token && seen.1, "{seen:?}");
    assert!(lock.try_write().await.unwrap().is_some(), "runs released");
    g.release().await.unwrap();
    assert!(matches!(
        c.rwlock("").unwrap_err(),
        Error::InvalidResource { .. }
    ));
}

/// Releases wake waiters on both sides: a writer waiting for a reader, and a reader
/// waiting for a writer, each long before its 20 s retry delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_wake_waiters_on_both_sides() {
    let cluster = cluster(3);
    let (a, b) = (patient(&cluster), patient(&cluster));
    let (la, lb) = (a.rwlock("wake").unwrap(), b.rwlock("wake").unwrap());

    let r = la.read().await.unwrap();
    let writer = tokio::spawn({
        let lb = lb.clone();
        async move { lb.write().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished());
    assert!(r.release().await.unwrap());
    let w = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the reader's release did not wake the writer")
        .unwrap()
        .unwrap();

    let reader = tokio::spawn({
        let la = la.clone();
        async move { la.read().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reader.is_finished());
    let written = w.token();
    assert!(w.release().await.unwrap());
    let r = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the writer's release did not wake the reader")
        .unwrap()
        .unwrap();
    assert!(r.token() >= written);
    r.release().await.unwrap();
}

/// A reader's watchdog reports the loss when a majority no longer has its entry, and
/// its release then says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_watchdog_reports_its_loss() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_millis(1500))
        .build()
        .unwrap();
    let lock = c.rwlock("gone").unwrap();
    let r = lock
        .read_with(AcquireOptions::new().watchdog(true))
        .await
        .unwrap();
    let key = "redfence:{gone}:rw:readers";
    // A grant still on its way to the third node must land before the entries are
    // deleted, or it would add the reader again.
    assert_eq!(c.shutdown(Duration::from_secs(5)).await, 0);
    for i in [0, 1] {
        let members: Vec<String> = support::cmd(&cluster, i, &["ZRANGE", key, "0", "-1"]).await;
        assert_eq!(members.len(), 1, "node {i}: {members:?}");
        let _: i64 = support::cmd(&cluster, i, &["DEL", key]).await;
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), r.lost())
        .await
        .expect("no loss reported");
    assert!(
        matches!(reason, redfence::LossReason::NotOwner { .. }),
        "{reason:?}"
    );
    assert!(!r.release().await.unwrap(), "it had been lost");
}

/// `RwLock::inspect` shows the readers on a quorum, a waiting writer's marker, then the
/// writer with its token; a dead node is reported per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_readers_a_waiting_writer_and_the_writer() {
    let cluster = cluster(3);
    let (a, b) = (
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    );
    let (la, lb) = (
        a.rwlock("looked-at").unwrap(),
        b.rwlock("looked-at").unwrap(),
    );
    let s = la.inspect().await;
    assert!(!s.is_held() && s.waiting_writer.is_none(), "{s:?}");
    assert_eq!(s.writer.resource, "looked-at");
    let r1 = la.try_read().await.unwrap().unwrap();
    let r2 = lb.try_read().await.unwrap().unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    let s = la.inspect().await;
    assert_eq!(s.readers.len(), 2, "{s:?}");
    assert!(s.writer.holder.is_none() && s.is_held());
    for v in &s.nodes {
        let node = v.state.as_ref().unwrap();
        assert_eq!(node.readers.len(), 2, "{v:?}");
        assert!(node.readers.iter().all(|(_, left)| *left > Duration::ZERO));
    }

    let writer = tokio::spawn({
        let lb = lb.clone();
        async move { lb.write().await }
    });
    let waiting = wait_for("the waiting writer's marker", async || {
        la.inspect().await.waiting_writer
    })
    .await;
    assert!(!writer.is_finished());
    assert!(r1.release().await.unwrap());
    assert!(r2.release().await.unwrap());
    let w = writer.await.unwrap().unwrap();
    b.shutdown(Duration::from_secs(5)).await;
    cluster.kill(0).unwrap();
    let s = la.inspect().await;
    assert!(s.readers.is_empty(), "{s:?}");
    assert_eq!(
        s.waiting_writer, None,
        "a writer that won withdrew its marker"
    );
    let holder = s.writer.holder.as_ref().expect("the writer on a quorum");
    assert_ne!(
        holder, &waiting,
        "the marker is the wait's id, not the lease's owner"
    );
    assert_eq!(s.writer.newest_token(), Some(w.token().get()));
    assert!(s.writer.nodes[0].state.is_err() && s.nodes[0].state.is_err());
    assert!(s.nodes[1..].iter().all(|v| v.state.is_ok()));
    w.release().await.unwrap();
}
