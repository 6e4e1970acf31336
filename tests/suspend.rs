//! A machine suspended past a lock's validity: `Instant` stops during a suspend, the nodes'
//! clocks do not. The suspend is simulated through redfence's clock (the test kit's
//! `simulate_suspend`); it shifts that clock for the whole process, so this file holds a
//! single test.

mod support;

use std::time::{Duration, Instant};

use redfence::testkit::simulate_suspend;
use redfence::{LockState, LossReason};
use support::{client, cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_resumed_after_its_validity_knows_it_at_once() {
    let cluster = cluster(3);
    let c = client(&cluster)
        .ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    // With a watchdog (extending every 1.7 s), and without one.
    let watched = c.acquire("suspended-watched").await.unwrap();
    let bare = c.try_acquire("suspended-bare").await.unwrap().unwrap();
    let runner = c.run("suspended-run", async |guard| {
        // The work is still running when the machine "suspends" (and stops by itself
        // after 2 s, so that a clock that misses the suspend fails this test, not hangs it).
        let start = Instant::now();
        while guard.validity() > Duration::ZERO && start.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let suspend = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(watched.validity() > Duration::from_secs(4));
        // Ten seconds suspended: twice the lease. Every node has expired the keys.
        simulate_suspend(Duration::from_secs(10));
        Instant::now()
    };
    let (ran, resumed) = tokio::join!(runner, suspend);

    for g in [&watched, &bare] {
        assert_eq!(g.validity(), Duration::ZERO, "{g:?}");
        // Reported at once, not when tokio's timers (which did not see the suspend) would
        // reach the old deadline seconds later.
        let reason = tokio::time::timeout(Duration::from_secs(1), g.lost())
            .await
            .unwrap_or_else(|_| panic!("no loss reported after the suspend: {g:?}"));
        assert_eq!(reason, LossReason::ValidityElapsed, "{g:?}");
        assert!(
            resumed.elapsed() < Duration::from_secs(1),
            "reported {:?} after the resume",
            resumed.elapsed()
        );
        let LockState::Lost { at, .. } = *g.state().borrow() else {
            panic!("{g:?}");
        };
        assert!(at >= g.deadline() - Duration::from_millis(200), "{g:?}");
        assert!(g.extend().await.unwrap_err().is_lost(), "{g:?}");
    }
    // The scoped runner's work spanned the suspend: it must not report success.
    let err = ran.unwrap_err();
    assert!(err.is_lost(), "{err}");
    // The deadline is on redfence's clock, which counts the suspend.
    assert!(watched.deadline() < redfence::now());
}
