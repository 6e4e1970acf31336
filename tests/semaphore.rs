//! The counting semaphore on real nodes: at most K holders under contention from several
//! clients, a slot per holder with tokens increasing per slot, waiters woken by releases,
//! crashed holders' permits coming back, the slots not won released, and faults (a
//! frozen node, a killed and an AOF-restarted node, a majority down).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redfence::testkit::{Cluster, Persistence};
use redfence::{AcquireOptions, ConfigError, Error, Semaphore};
use support::{client, cluster, cmd, patient};

fn slot_key(name: &str, slot: usize) -> String {
    format!("redfence:{{{name}}}:permit:{slot}")
}

/// Who holds what right now, as the holders themselves report it: entering checks the
/// bound before counting in.
#[derive(Default)]
struct Holders {
    /// Slot → holder.
    slots: HashMap<usize, usize>,
    most: usize,
    entries: usize,
}

impl Holders {
    fn enter(&mut self, who: usize, slot: usize, permits: usize) {
        if let Some(other) = self.slots.insert(slot, who) {
            panic!("slot {slot} held by {other} and {who} at once");
        }
        assert!(
            self.slots.len() <= permits,
            "{} holders of {permits} permits: {:?}",
            self.slots.len(),
            self.slots
        );
        self.most = self.most.max(self.slots.len());
        self.entries += 1;
    }

    fn leave(&mut self, slot: usize) {
        self.slots.remove(&slot);
    }
}

/// Eight tasks on two clients keep taking one of three permits: never more than three
/// holders, never two on a slot, each slot's tokens increasing, and all three permits in
/// use at some point (the semaphore shares, it does not serialize).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_k_hold_under_contention() {
    let cluster = cluster(5);
    let clients = [
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    ];
    let permits = 3;
    let holders = Arc::new(Mutex::new(Holders::default()));
    let tokens: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let tasks = (0..8).map(|who| {
        let sem = clients[who % 2].semaphore("pool", permits).unwrap();
        let (holders, tokens) = (Arc::clone(&holders), Arc::clone(&tokens));
        tokio::spawn(async move {
            for _ in 0..12 {
                let p = sem.acquire().await.unwrap();
                holders.lock().unwrap().enter(who, p.slot(), permits);
                {
                    let mut t = tokens.lock().unwrap();
                    let last = t.insert(p.slot(), p.token().get()).unwrap_or(0);
                    assert!(
                        p.token().get() > last,
                        "slot {} token {} after {last}",
                        p.slot(),
                        p.token()
                    );
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
                holders.lock().unwrap().leave(p.slot());
                assert!(p.release().await.unwrap(), "released while held");
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let h = holders.lock().unwrap();
    assert_eq!(h.entries, 8 * 12);
    assert_eq!(h.most, permits, "permits were never all in use at once");
}

/// K permits taken, the next try is refused; a release wakes a waiter, who gets the
/// freed slot long before its retry delay would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refuses_and_a_release_wakes_a_waiter() {
    let cluster = cluster(3);
    let c = patient(&cluster);
    let sem = c.semaphore("full", 2).unwrap();
    let a = sem.try_acquire().await.unwrap().expect("first permit");
    let b = sem.try_acquire().await.unwrap().expect("second permit");
    assert_ne!(a.slot(), b.slot());
    assert_eq!(a.permits(), 2);
    assert!(
        sem.try_acquire().await.unwrap().is_none(),
        "two of two held"
    );

    let waiter = tokio::spawn({
        let sem = sem.clone();
        async move { sem.acquire().await }
    });
    // The waiter has made its first attempt and is waiting once the semaphore's slots
    // have been tried; give it that attempt, then release.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let freed = a.slot();
    let start = Instant::now();
    assert!(a.release().await.unwrap());
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the release did not wake the waiter (its retry delay is 20 s)")
        .unwrap()
        .unwrap();
    assert_eq!(got.slot(), freed);
    assert!(start.elapsed() < Duration::from_secs(10));
    got.release().await.unwrap();
    b.release().await.unwrap();
}

/// A holder that vanishes without releasing (no watchdog, nothing sent) leaves its
/// permit to expire with the TTL; then it is taken again, with a higher token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_permit_comes_back() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_millis(1200))
        .wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let sem = c.semaphore("leak", 1).unwrap();
    let gone = sem.try_acquire().await.unwrap().unwrap();
    let (slot, token) = (gone.slot(), gone.token());
    // A crash: the process is gone, nothing is released.
    std::mem::forget(gone);
    assert!(sem.try_acquire().await.unwrap().is_none());
    let next = sem.acquire().await.unwrap();
    assert_eq!(next.slot(), slot);
    assert!(next.token() > token);
    assert!(next.release().await.unwrap());
}

/// Nodes that grant different slots: two permits of three held so that each node has a
/// different slot free. No slot has a majority, the attempt fails, and everything it took
/// is released; once a slot frees on a majority the next attempt wins it and the slots
/// it took elsewhere are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_not_won_are_released() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    let sem = c.semaphore("split", 3).unwrap();
    // Node i has slot i free; the other two are someone else's.
    for i in 0..3 {
        for s in (0..3).filter(|&s| s != i) {
            let key = slot_key("split", s);
            cmd::<()>(&cluster, i, &["SET", &key, "other", "PX", "60000"]).await;
        }
    }
    assert!(
        sem.try_acquire().await.unwrap().is_none(),
        "no slot has a majority"
    );
    let ours = |i: usize, s: usize| {
        let cluster = &cluster;
        async move {
            let v: Option<String> = cmd(cluster, i, &["GET", &slot_key("split", s)]).await;
            v.is_some_and(|v| v != "other")
        }
    };
    wait_until("the failed attempt's grants are released", async || {
        for i in 0..3 {
            if ours(i, i).await {
                return false;
            }
        }
        true
    })
    .await;

    // On node 1, slot 0 frees and slot 1 is taken: slot 0 is the only free slot on
    // nodes 0 and 1, a majority, whatever slot the attempt's order starts at.
    cmd::<()>(&cluster, 1, &["DEL", &slot_key("split", 0)]).await;
    let one = slot_key("split", 1);
    cmd::<()>(&cluster, 1, &["SET", &one, "other", "PX", "60000"]).await;
    let p = sem
        .try_acquire()
        .await
        .unwrap()
        .expect("slot 0 on nodes 0 and 1");
    assert_eq!(p.slot(), 0);
    // Node 2 granted slot 2, which is not the permit's: it goes.
    wait_until("the slot not won is released", async || !ours(2, 2).await).await;
    assert!(ours(0, 0).await && ours(1, 0).await);
    assert!(p.release().await.unwrap());
}

/// A frozen node does not slow decided acquisitions or releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_does_not_slow_permits() {
    let cluster = cluster(5);
    let c = client(&cluster)
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let sem = c.semaphore("frozen", 2).unwrap();
    sem.acquire().await.unwrap().release().await.unwrap();
    cluster.pause(1).unwrap();
    let mut slow = Vec::new();
    for k in 0..20 {
        let t = Instant::now();
        let p = sem.acquire().await.unwrap();
        let acquired = t.elapsed();
        let t = Instant::now();
        assert!(p.release().await.unwrap());
        let released = t.elapsed();
        let half = Duration::from_millis(1500);
        if acquired >= half || released >= half {
            slow.push((k, acquired, released));
        }
    }
    cluster.resume(1).unwrap();
    assert!(
        slow.is_empty(),
        "cycles that waited for the frozen node: {slow:?}"
    );
}

/// Killed nodes (a minority at a time) come back from their append-only files; each
/// slot's tokens keep increasing and the bound holds throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_slot_survive_kills_and_aof_restarts() {
    let cluster = Cluster::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .unwrap();
    let c = client(&cluster).build().unwrap();
    let sem = c.semaphore("rejoin", 2).unwrap();
    let mut last: HashMap<usize, u64> = HashMap::new();
    for round in 0..6usize {
        let down = [round % 5, (round + 2) % 5];
        for i in down {
            cluster.kill(i).unwrap();
        }
        for _ in 0..3 {
            let a = sem.acquire().await.unwrap();
            let b = sem.acquire().await.unwrap();
            assert_ne!(a.slot(), b.slot());
            assert!(
                sem.try_acquire().await.unwrap().is_none(),
                "two of two held"
            );
            for p in [&a, &b] {
                let before = last.insert(p.slot(), p.token().get()).unwrap_or(0);
                assert!(p.token().get() > before, "slot {} went back", p.slot());
            }
            a.release().await.unwrap();
            b.release().await.unwrap();
        }
        for i in down {
            cluster.restart(i).unwrap();
        }
    }
}

/// Three of five down: a clear error naming the dead nodes, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_down_names_the_nodes() {
    let cluster = cluster(5);
    for i in [0, 2, 3] {
        cluster.kill(i).unwrap();
    }
    let c = client(&cluster).build().unwrap();
    let sem = c.semaphore("down", 2).unwrap();
    let err = sem.try_acquire().await.unwrap_err();
    let Error::NoQuorum {
        failed, ref errors, ..
    } = err
    else {
        panic!("expected NoQuorum, got {err:?}");
    };
    assert_eq!(failed, 3);
    let text = err.to_string();
    for i in [0, 2, 3] {
        let port = cluster.port(i).to_string();
        assert!(
            text.contains(&port),
            "node {i} ({port}) not named in {text}"
        );
    }
    assert_eq!(errors.len(), 3);
    assert!(text.contains("\"down\""), "{text}");
}

/// Bad input is refused before anything is sent, naming the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_permit_counts_and_names_are_refused() {
    let cluster = cluster(1);
    let c = client(&cluster).build().unwrap();
    for bad in [0, redfence::MAX_PERMITS + 1] {
        let err = c.semaphore("x", bad).unwrap_err();
        assert!(
            matches!(err, Error::Config(ConfigError::Permits { value, .. }) if value == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
    assert!(matches!(
        c.semaphore("", 2).unwrap_err(),
        Error::InvalidResource { .. }
    ));
    let sem: Semaphore = c.semaphore("x", redfence::MAX_PERMITS).unwrap();
    assert_eq!(sem.permits(), redfence::MAX_PERMITS);
    assert_eq!(sem.name(), "x");
    // A bad option is refused too.
    let err = sem
        .try_acquire_with(AcquireOptions::new().ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// A semaphore and a mutex of the same name are apart; a one-permit semaphore is a
/// mutex; `run` holds a permit for its work only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apart_from_the_mutex_and_scoped_runs() {
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    let guard = c.try_acquire("shared-name").await.unwrap().unwrap();
    let sem = c.semaphore("shared-name", 1).unwrap();
    let p = sem
        .try_acquire()
        .await
        .unwrap()
        .expect("the mutex holds no slot");
    assert_eq!(p.resource(), "shared-name#0");
    assert!(sem.try_acquire().await.unwrap().is_none(), "one permit");
    assert!(p.release().await.unwrap());
    assert!(guard.release().await.unwrap());

    let inside = sem
        .run(async |p| {
            assert!(p.has_watchdog());
            (p.slot(), sem.try_acquire().await.unwrap().is_none())
        })
        .await
        .unwrap();
    assert_eq!(inside, (0, true));
    assert!(sem.try_acquire().await.unwrap().is_some(), "run released");
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `Semaphore::inspect` shows each permit's holder and newest token, named as the permit
/// is, and a dead node per node without losing the others' view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_each_permit() {
    let cluster = cluster(3);
    let (a, b) = (
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    );
    let sem = a.semaphore("looked-at", 3).unwrap();
    let free = sem.inspect().await;
    assert_eq!(free.len(), 3);
    assert!(
        free.iter()
            .all(|s| !s.is_held() && s.newest_token().is_none())
    );
    let p = sem.try_acquire().await.unwrap().unwrap();
    let q = b
        .semaphore("looked-at", 3)
        .unwrap()
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    // Every node's grant is in before looking (a grant may land after the decision).
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    cluster.kill(2).unwrap();
    let slots = sem.inspect().await;
    for (slot, s) in slots.iter().enumerate() {
        assert_eq!(s.resource, format!("looked-at#{slot}"));
        assert_eq!(s.quorum, 2);
        assert!(s.nodes[2].state.is_err(), "{s:?}");
        assert!(s.nodes[..2].iter().all(|v| v.state.is_ok()), "{s:?}");
    }
    for permit in [&p, &q] {
        let s = &slots[permit.slot()];
        assert_eq!(s.resource, permit.resource());
        assert!(s.is_held(), "{s:?}");
        assert_eq!(s.newest_token(), Some(permit.token().get()));
    }
    assert_ne!(slots[p.slot()].holder, slots[q.slot()].holder);
    assert_eq!(slots.iter().filter(|s| s.is_held()).count(), 2);
    let (slot, token) = (p.slot(), p.token().get());
    p.release().await.unwrap();
    let slots = sem.inspect().await;
    assert!(!slots[slot].is_held());
    // The counter stays: the slot's newest token is still told.
    assert_eq!(slots[slot].newest_token(), Some(token));
    assert!(slots[q.slot()].is_held());
}
