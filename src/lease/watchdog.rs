//! The auto-extension task: keeps a held lock alive, and publishes its loss before the
//! validity deadline when it cannot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::renewer::Registration;
use super::{Extension, Lease};
use crate::clock;
use crate::error::{LossReason, NodeError};
use crate::observe::{self, OpSpan};
use crate::scripts::Hold;

/// When a watchdog extends, retries, and gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Time between successful extensions (default `ttl / 3`).
    pub(crate) interval: Duration,
    /// Pause before retrying a failed extension.
    pub(crate) retry: Duration,
    /// Stop extending and report the loss this long after acquisition.
    pub(crate) max_hold: Option<Duration>,
    /// Renewed by the client's batched [`Renewer`](super::renewer::Renewer) when the
    /// lease is held as plain keys.
    pub(crate) batched: bool,
}

/// How long before the deadline the watchdog gives up and publishes the loss: 2 % of the
/// TTL, at least 2 ms (two ticks of tokio's timer). Timers fire a little late and the
/// publication takes a moment; the margin keeps the loss ahead of the deadline it
/// promised, as long as the runtime is not starved for longer.
pub(crate) fn loss_margin(ttl: Duration) -> Duration {
    (ttl / 50).max(Duration::from_millis(2))
}

/// A lease's watchdog: its place in the client's batched [`Renewer`] (leases held as
/// plain keys: locks, slots, writers, sets), or a task of its own (a reader's entry, a
/// leader's lease, whose scripts differ). Dropping it stops the watchdog, so a watchdog
/// never outlives its guard.
#[derive(Debug)]
pub(crate) enum WatchdogTask {
    /// Held for its `Drop`, which takes the lease out of the renewer.
    Batched {
        _watch: Registration,
    },
    Task(JoinHandle<()>),
}

impl WatchdogTask {
    /// Starts extending `shared`; `live` counts running watchdogs (per client).
    pub(crate) fn start(shared: &Arc<Lease>, plan: Schedule, live: &Arc<AtomicUsize>) -> Self {
        if plan.batched && shared.keys.hold == Hold::Key {
            let renewer = shared.nodes.renewer();
            return Self::Batched {
                _watch: renewer.watch(shared, plan, live),
            };
        }
        let count = Live::new(live);
        Self::Task(tokio::spawn(run(Arc::downgrade(shared), plan, count)))
    }

    /// Stops the watchdog: no renewal is sent after this returns (one already sent may
    /// still land; the owner check on every node makes that harmless).
    pub(crate) async fn stop(mut self) {
        if let Self::Task(task) = &mut self {
            task.abort();
            // Cancelled is the expected outcome; a panic inside it would already be
            // reported.
            let _ = task.await;
        }
    }
}

impl Drop for WatchdogTask {
    fn drop(&mut self) {
        if let Self::Task(task) = self {
            task.abort();
        }
    }
}

/// One running watchdog, counted until its task's future is dropped (ended or aborted)
/// or its lease leaves the renewer.
#[derive(Debug)]
pub(crate) struct Live(Arc<AtomicUsize>);

impl Live {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        observe::gauge("redfence_watchdogs_active", 1.0);
        Self(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        observe::gauge("redfence_watchdogs_active", -1.0);
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Extends every `plan.interval`; retries a failed extension every `plan.retry` while the
/// validity lasts; publishes the loss and stops when it cannot prove the lock held.
///
/// It holds the guard's state only weakly, and only while working, so a dropped guard is
/// never kept alive by it; the guard aborts it on release and drop anyway.
async fn run(shared: Weak<Lease>, plan: Schedule, _live: Live) {
    let Some(s) = shared.upgrade() else { return };
    let margin = loss_margin(s.ttl);
    let acquired_at = s.acquired_at;
    let cap = plan.max_hold.and_then(|m| acquired_at.checked_add(m));
    let mut next = acquired_at
        .checked_add(plan.interval)
        .unwrap_or(acquired_at);
    // Causes of the extensions that failed since the last success.
    let mut failures: Vec<NodeError> = Vec::new();
    drop(s);
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.is_over() {
            return;
        }
        let give_up = give_up_at(&s, margin);
        let wake = [Some(next), Some(give_up), cap].into_iter().flatten().min();
        drop(s);
        if let Some(wake) = wake {
            clock::sleep_until(wake).await;
        }

        let Some(s) = shared.upgrade() else { return };
        if s.is_over() {
            return;
        }
        let now = clock::now();
        // An extend() by the user may have moved the deadline while we slept.
        let give_up = give_up_at(&s, margin);
        if cap.is_some_and(|c| now >= c) {
            s.publish_lost(LossReason::MaxHoldReached {
                held: now - acquired_at,
            });
            return;
        }
        if now >= give_up {
            s.publish_lost(unreachable(failures));
            return;
        }
        if now < next {
            continue;
        }
        s.nodes
            .counters()
            .renewal_sent(now.saturating_duration_since(next));
        let span = OpSpan::tick(&s.resource);
        let extension = span
            .token(s.token.get())
            .run(s.extend_until(give_up, s.ttl))
            .await;
        span.outcome(extension.label());
        match extension {
            Extension::Extended(_) => {
                failures.clear();
                next = now + plan.interval;
            }
            // Published by extend_until, or by whoever ended the lock.
            Extension::NotOwner(_) | Extension::Over(_) => return,
            // Retry while validity remains: the next wake is at the retry or the give-up
            // point, whichever comes first.
            Extension::Unreachable(e) => {
                failures = e.node_errors().to_vec();
                next = clock::now() + plan.retry;
            }
            Extension::TimedOut(mut errors) => {
                if errors.is_empty() {
                    errors = failures;
                }
                s.publish_lost(unreachable(errors));
                return;
            }
        }
    }
}

pub(crate) fn give_up_at(s: &Lease, margin: Duration) -> Instant {
    let deadline = s.deadline();
    deadline.checked_sub(margin).unwrap_or(deadline)
}

pub(crate) fn unreachable(errors: Vec<NodeError>) -> LossReason {
    if errors.is_empty() {
        LossReason::ValidityElapsed
    } else {
        LossReason::QuorumUnreachable { errors }
    }
}
