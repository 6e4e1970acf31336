//! Leader election on real nodes: one leader at a time with increasing terms, the
//! record readable by anyone, resign handing over at once, a dead leader's successor
//! within one TTL, observers following every change in term order without contending,
//! followers shown every leadership however brief, and a lost leadership that stops answering "leader".

mod support;

use std::time::{Duration, Instant};

use redfence::fence::{FenceMap, Verdict};
use redfence::{AcquireOptions, Error, LossReason};
use support::{client, cluster, cmd, patient};

/// One leads, the others wait; anyone reads the record; a proclaimed value shows; a
/// resignation hands over at once, to a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_an_immediate_hand_over() {
    let cluster = cluster(3);
    let (a, b, reader) = (patient(&cluster), patient(&cluster), patient(&cluster));
    let (ea, eb, er) = (
        a.election("sched").unwrap(),
        b.election("sched").unwrap(),
        reader.election("sched").unwrap(),
    );
    assert_eq!(er.leader().await.unwrap(), None);
    let first = ea.campaign("a:1").await.unwrap();
    assert!(first.is_leader());
    assert!(
        eb.try_campaign_with("b:1", AcquireOptions::new())
            .await
            .unwrap()
            .is_none(),
        "two leaders"
    );
    let seen = er.leader().await.unwrap().expect("a leads");
    assert_eq!((seen.value.as_str(), seen.term), ("a:1", first.term()));
    assert!(seen.validity > Duration::ZERO);

    first.proclaim("a:2").await.unwrap();
    assert_eq!(first.value(), "a:2");
    assert_eq!(er.leader().await.unwrap().unwrap().value, "a:2");

    let next = tokio::spawn({
        let eb = eb.clone();
        async move { eb.campaign("b:1").await.map(|l| (l, Instant::now())) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!next.is_finished(), "b led beside a");
    let old_term = first.term();
    let resigned = Instant::now();
    assert!(first.resign().await.unwrap());
    let (second, took_over) = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the resignation did not wake the next candidate (its retry delay is 20 s)")
        .unwrap()
        .unwrap();
    println!("hand-over took {:?}", took_over - resigned);
    assert!(second.term() > old_term);
    let seen = er.leader().await.unwrap().expect("b leads");
    assert_eq!((seen.value.as_str(), seen.term), ("b:1", second.term()));
    second.resign().await.unwrap();
    assert_eq!(er.leader().await.unwrap(), None);
}

/// A leader that dies (no watchdog, nothing released) is succeeded once its lease runs
/// out, within about one TTL; the old term is fenced off at the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_successor_takes_over_within_a_ttl() {
    let cluster = cluster(3);
    let ttl = Duration::from_millis(1500);
    let c = client(&cluster)
        .ttl(ttl)
        .wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let election = c.election("dead").unwrap();
    let dead = election
        .try_campaign_with("gone", AcquireOptions::new())
        .await
        .unwrap()
        .unwrap();
    let store = FenceMap::new();
    assert!(store.admit("state", dead.term()).is_accepted());
    let old_term = dead.term();
    let died = Instant::now();
    std::mem::forget(dead);
    let next = election.campaign("next").await.unwrap();
    let waited = died.elapsed();
    println!("successor after {waited:?} (TTL {ttl:?})");
    assert!(waited < ttl + Duration::from_millis(500), "{waited:?}");
    assert!(next.term() > old_term);
    assert!(store.admit("state", next.term()).is_accepted());
    assert!(matches!(
        store.admit("state", old_term),
        Verdict::Rejected { .. }
    ));
    next.resign().await.unwrap();
}

/// Observers on another client follow three leaderships in term order, each change
/// woken by the election's announcements rather than the (long) poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_follow_every_leader_in_term_order() {
    let cluster = cluster(3);
    let (c, o) = (
        client(&cluster).build().unwrap(),
        client(&cluster).build().unwrap(),
    );
    let election = c.election("watched").unwrap();
    let mut rx = o
        .election("watched")
        .unwrap()
        .observe(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(rx.borrow().is_none());
    let mut terms = Vec::new();
    for value in ["one", "two", "three"] {
        let l = election.campaign(value).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                rx.changed().await.unwrap();
                if let Some(leader) = rx.borrow_and_update().clone() {
                    return leader;
                }
            }
        })
        .await
        .expect("the observer missed a leader (its poll is 30 s)");
        assert_eq!((seen.value.as_str(), seen.term), (value, l.term()));
        terms.push(seen.term);
        l.resign().await.unwrap();
    }
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{terms:?}");
}

/// Three candidates on two clients hand the leadership over as fast as they can (each
/// resigns the moment it leads), through a node's death: a follower on a third client,
/// whose poll is 30 s, is shown every leadership, in term order, with its value; so is a
/// follower that reads nothing until the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_is_shown_every_leadership_however_brief() {
    let cluster = cluster(3);
    // The candidates retry soon after a split vote (which wakes no one); the followers
    // only read when woken, or every 30 s.
    let quick = || client(&cluster).build().unwrap();
    let (a, b, o) = (quick(), quick(), quick());
    let first = a.election("brief").unwrap();
    let first = first.campaign("first").await.unwrap();
    let observer = o.election("brief").unwrap();
    let mut live = observer.follow(Duration::from_secs(30)).await.unwrap();
    let mut late = observer.follow(Duration::from_secs(30)).await.unwrap();
    let mut issued = vec![(first.term(), "first".to_owned())];
    first.resign().await.unwrap();
    let (tx, mut shown) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        loop {
            let change = live.next().await.unwrap();
            if tx
                .send((change.term, change.value, change.gap_before))
                .is_err()
            {
                return;
            }
        }
    });
    let started = Instant::now();
    let candidates: Vec<_> = [&a, &b, &b]
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let election = c.election("brief").unwrap();
            tokio::spawn(async move {
                let mut won = Vec::new();
                for round in 0..12 {
                    let value = format!("{i}:{round}");
                    let l = election.campaign(&value).await.unwrap();
                    won.push((l.term(), value));
                    // A leadership won with the node that then died cannot be decided
                    // released: its keys expire.
                    let _ = l.resign().await;
                }
                won
            })
        })
        .collect();
    // Half-way through, a node dies: the followers read the two left.
    tokio::time::sleep(Duration::from_millis(30)).await;
    cluster.kill(2).unwrap();
    for c in candidates {
        issued.extend(c.await.unwrap());
    }
    println!("{} leaderships in {:?}", issued.len(), started.elapsed());
    issued.sort();
    let last = issued.last().unwrap().0;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(t, _)| *t < last) {
        let (term, value, gap) = tokio::time::timeout(Duration::from_secs(5), shown.recv())
            .await
            .expect("the live follower stalled")
            .unwrap();
        assert!(!gap, "a gap before {term}");
        seen.push((term, value));
    }
    watcher.abort();
    let abandoned = shown_exactly(&seen, &issued, "the live follower");
    let mut caught_up = Vec::new();
    while caught_up.last().is_none_or(|(t, _)| *t < last) {
        let change = tokio::time::timeout(Duration::from_secs(5), late.next())
            .await
            .expect("the late follower stalled")
            .unwrap();
        assert!(!change.gap_before, "{change:?}");
        caught_up.push((change.term, change.value));
    }
    shown_exactly(&caught_up, &issued, "the late follower");
    println!(
        "{} leaderships, each shown to both followers ({abandoned} abandoned campaigns too)",
        issued.len()
    );
}

/// `seen` is in strictly increasing term order and holds every leadership `issued`; any
/// other term is a campaign that logged its term, failed to publish on a majority (the
/// node it had won with died) and won later with the same value: returns how many.
fn shown_exactly(
    seen: &[(redfence::FencingToken, String)],
    issued: &[(redfence::FencingToken, String)],
    who: &str,
) -> usize {
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{who}: {seen:?}");
    let missed: Vec<_> = issued.iter().filter(|l| !seen.contains(l)).collect();
    assert!(missed.is_empty(), "{who} missed {missed:?}");
    let extra: Vec<_> = seen.iter().filter(|l| !issued.contains(l)).collect();
    for (term, value) in &extra {
        assert!(
            issued.iter().any(|(t, v)| v == value && t > term),
            "{who} was shown {term}: {value:?}, which never led"
        );
    }
    extra.len()
}

/// A follower that falls more than LEADERSHIPS_KEPT leaderships behind is told so, then
/// shown the ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_falls_behind_is_told() {
    let cluster = cluster(3);
    let c = patient(&cluster);
    let election = c.election("behind").unwrap();
    let mut follower = election.follow(Duration::from_secs(30)).await.unwrap();
    let mut terms = Vec::new();
    for i in 0..redfence::LEADERSHIPS_KEPT + 6 {
        let l = election.campaign(&i.to_string()).await.unwrap();
        terms.push(l.term());
        l.resign().await.unwrap();
    }
    let kept = &terms[terms.len() - redfence::LEADERSHIPS_KEPT..];
    let first = follower.next().await.unwrap();
    assert!(first.gap_before, "{first:?}");
    assert_eq!(first.term, kept[0]);
    for &term in &kept[1..] {
        let change = follower.next().await.unwrap();
        assert_eq!((change.term, change.gap_before), (term, false));
    }
}

/// A leadership lost on a majority is reported through the loss channel, answers "not
/// leader" from then on, and cannot proclaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leadership_stops_answering_leader() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_millis(1500))
        .build()
        .unwrap();
    let leading = c.election("lost").unwrap().campaign("x").await.unwrap();
    assert!(leading.has_watchdog());
    // The campaign decided at a majority: a grant still on its way to the third node
    // must land before the keys are deleted, or it would grant them again.
    assert_eq!(c.shutdown(Duration::from_secs(5)).await, 0);
    for i in [0, 1] {
        cmd::<()>(&cluster, i, &["DEL", "redfence:{lost}:elect:lock"]).await;
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), leading.lost())
        .await
        .expect("no loss reported");
    assert!(matches!(reason, LossReason::NotOwner { .. }), "{reason:?}");
    assert!(!leading.is_leader());
    let err = leading.proclaim("y").await.unwrap_err();
    assert!(err.is_lost(), "{err:?}");
    assert!(!leading.resign().await.unwrap());
}

/// Bad input, and a dead majority named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_a_dead_majority() {
    let cluster = cluster(5);
    let c = client(&cluster).build().unwrap();
    assert!(matches!(
        c.election("").unwrap_err(),
        Error::InvalidResource { .. }
    ));
    let e = c.election("e").unwrap();
    let big = "v".repeat(redfence::MAX_LEADER_VALUE + 1);
    let err = e.campaign(&big).await.unwrap_err();
    assert!(err.to_string().contains("4096"), "{err}");
    for i in [0, 2, 4] {
        cluster.kill(i).unwrap();
    }
    let err = e
        .try_campaign_with("x", AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoQuorum { failed: 3, .. }), "{err:?}");
    let err = e.leader().await.unwrap_err();
    assert!(matches!(err, Error::NoQuorum { failed: 3, .. }), "{err:?}");
    for i in [0, 2, 4] {
        assert!(
            err.to_string().contains(&cluster.port(i).to_string()),
            "{err}"
        );
    }
}

/// A follower whose read spans a whole change of leaders is still shown both: its read
/// reaches node 0 at once and node 2 only 300 ms later (node 1 is cut off from it), while
/// leader A publishes on nodes 0 and 1 only (node 2 cut off from A) and resigns, and B
/// wins and publishes everywhere. Node 0, read early, has neither; node 2, read late, has
/// B's term only. Without the confirming read the follower was shown B and never A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_read_spanning_a_change_of_leaders_misses_nothing() {
    use redfence::testkit::Fault;

    let cluster = cluster(3);
    let slow = cluster.proxies().unwrap();
    slow.set(1, Fault::BlackHole).unwrap();
    slow.set(2, Fault::Latency(Duration::from_millis(150)))
        .unwrap();
    let follower_client = slow
        .client_builder()
        .node_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let no_two = cluster.proxies().unwrap();
    no_two.set(2, Fault::BlackHole).unwrap();
    let a_client = no_two
        .client_builder()
        .node_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let b_client = client(&cluster).build().unwrap();
    let name = "spanned";
    let mut follower = follower_client
        .election(name)
        .unwrap()
        .follow(Duration::from_millis(10))
        .await
        .unwrap();
    let shown = tokio::spawn(async move {
        let mut shown = Vec::new();
        while shown.len() < 10 {
            let change = tokio::time::timeout(Duration::from_secs(20), follower.next())
                .await
                .expect("the follower stalled")
                .unwrap();
            shown.push(change.term.get());
        }
        shown
    });
    let (ea, eb) = (
        a_client.election(name).unwrap(),
        b_client.election(name).unwrap(),
    );
    let mut issued = Vec::new();
    for _ in 0..5 {
        // One change of leaders every ~450 ms: a read takes about 300 ms, so many a read
        // starts before A's publication and reaches node 2 after B's.
        let a = ea.campaign("a").await.unwrap();
        issued.push(a.term().get());
        a.resign().await.unwrap();
        let b = eb.campaign("b").await.unwrap();
        issued.push(b.term().get());
        b.resign().await.unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    let shown = shown.await.unwrap();
    assert_eq!(shown, issued, "shown {shown:?}, issued {issued:?}");
}
