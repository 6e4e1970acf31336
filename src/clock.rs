//! The clock every validity and deadline is counted on: the monotonic clock plus the time
//! the machine has spent suspended.
//!
//! `std::time::Instant` (`CLOCK_MONOTONIC` on Linux) stops while the machine is suspended,
//! but the nodes' clocks do not: a holder resumed after a suspend longer than its validity
//! would still see validity left while its keys are long gone. On Linux the suspended
//! time is `CLOCK_BOOTTIME − CLOCK_MONOTONIC` (read through `nix`, as the crate forbids
//! `unsafe`), and [`now`] adds what has accumulated since the process started. Deadlines
//! stay `Instant`s, so they compare and print as before; they are simply later than
//! `Instant::now()` would say once the machine has been suspended.
//!
//! Tokio's timers run on the monotonic clock, so a timer set for a deadline fires late
//! by any suspended time. [`sleep_until`] therefore also wakes when a jump is noticed: a
//! thread started on first use checks the suspended time twice a second and announces a
//! change, and the test kit's `simulate_suspend` announces its own.
//!
//! Elsewhere than Linux and Android, suspended time is not observed (only simulated
//! jumps are).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Suspended time seen so far, in nanoseconds: observed plus simulated. It only grows, so
/// [`now`] never goes backwards.
static SUSPENDED: AtomicU64 = AtomicU64::new(0);
/// Time simulated by [`simulate_suspend`], in nanoseconds.
static SIMULATED: AtomicU64 = AtomicU64::new(0);
/// Bumped whenever the suspended time grows noticeably, so sleeping deadlines look again.
static JUMPS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// How often the watcher thread looks for a suspend.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// A growth of the suspended time smaller than this is read noise, not a suspend.
const JUMP: Duration = Duration::from_millis(1);

/// Now, on the clock that counts suspended time: `Instant::now()` plus the time the
/// machine has spent suspended since this process first asked. Every deadline redfence
/// hands out ([`LockGuard::deadline`](crate::LockGuard::deadline),
/// [`LockState`](crate::LockState)) is on this clock; compare them with this, not with
/// `Instant::now()`.
pub fn now() -> Instant {
    let now = Instant::now();
    now.checked_add(suspended()).unwrap_or(now)
}

/// Time since `start`, a reading of [`now`]. (`start.elapsed()` would measure against
/// `Instant::now()`, which leaves out the suspended time `start` includes.)
pub(crate) fn since(start: Instant) -> Duration {
    now().saturating_duration_since(start)
}

/// Sleeps until `deadline` on [`now`]'s clock: like `tokio::time::sleep_until`, but it
/// also wakes, and looks again, when the clock jumps (a suspend, or a simulated one).
pub(crate) async fn sleep_until(deadline: Instant) {
    watcher();
    let mut jumps = JUMPS.subscribe();
    loop {
        // Marked seen before the time is read: a jump after the read wakes the select.
        jumps.borrow_and_update();
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            changed = jumps.changed() => {
                if changed.is_err() {
                    // The sender lives in a static: never dropped.
                    tokio::time::sleep(left).await;
                }
            }
        }
    }
}

/// Makes [`now`] jump forward by `by`, as a suspend of the machine does, while tokio's
/// timers do not see it; sleeping deadlines are woken to look again. For tests (the test
/// kit's `simulate_suspend`); it affects every client in the process.
#[cfg_attr(not(feature = "testkit"), allow(dead_code))]
pub(crate) fn simulate_suspend(by: Duration) {
    let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
    SIMULATED.fetch_add(nanos, Ordering::SeqCst);
    suspended();
    JUMPS.send_modify(|n| *n += 1);
}

/// Suspended time so far (observed since the first call, plus simulated); never less
/// than any earlier answer.
fn suspended() -> Duration {
    let seen = observed().saturating_add(SIMULATED.load(Ordering::SeqCst));
    let max = SUSPENDED.fetch_max(seen, Ordering::SeqCst).max(seen);
    Duration::from_nanos(max)
}

/// Suspended time observed since the first call, in nanoseconds.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn observed() -> u64 {
    static BASE: LazyLock<u64> = LazyLock::new(|| boot_minus_monotonic().unwrap_or(0));
    boot_minus_monotonic().map_or(0, |d| d.saturating_sub(*BASE))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn observed() -> u64 {
    0
}

/// `CLOCK_BOOTTIME − CLOCK_MONOTONIC` in nanoseconds: the time suspended since boot. The
/// two reads are not atomic; a pair more than 50 µs apart (the thread was preempted in
/// between) is read again, and the remaining error only makes the suspended time look
/// longer, which shortens validity (the safe side).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_minus_monotonic() -> Option<u64> {
    use nix::time::{ClockId, clock_gettime};
    let nanos = |id| {
        clock_gettime(id).ok().map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
    };
    let mut diff = None;
    for _ in 0..3 {
        let before = nanos(ClockId::CLOCK_MONOTONIC)?;
        let boot = nanos(ClockId::CLOCK_BOOTTIME)?;
        let after = nanos(ClockId::CLOCK_MONOTONIC)?;
        diff = Some(boot.saturating_sub(before));
        if after.saturating_sub(before) < 50_000 {
            break;
        }
    }
    diff
}

/// Starts, once per process, the thread that notices suspends and wakes sleeping
/// deadlines (on Linux and Android; elsewhere there is nothing to notice).
fn watcher() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        static STARTED: LazyLock<()> = LazyLock::new(|| {
            let spawned = std::thread::Builder::new()
                .name("redfence-clock".into())
                .spawn(|| {
                    let mut last = suspended();
                    loop {
                        std::thread::sleep(WATCH_EVERY);
                        let now = suspended();
                        if now.saturating_sub(last) >= JUMP {
                            JUMPS.send_modify(|n| *n += 1);
                        }
                        last = now;
                    }
                });
            // Without the thread a suspend is still counted by `now`; only timers set
            // before it fire late.
            drop(spawned);
        });
        LazyLock::force(&STARTED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `now` runs with the monotonic clock, never behind it, and never backwards.
    #[test]
    fn now_never_goes_backwards() {
        let mut last = now();
        for _ in 0..10_000 {
            let before = Instant::now();
            let t = now();
            assert!(t >= last);
            assert!(t >= before);
            last = t;
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_suspended_time_reads_stable() {
        let a = boot_minus_monotonic().unwrap();
        let b = boot_minus_monotonic().unwrap();
        // No suspend between two reads: the difference is read noise.
        assert!(b.abs_diff(a) < 1_000_000, "{a} vs {b}");
    }
}
