//! The batched watchdog: one task per client renews every watched lease held as plain
//! keys, one script call per node for up to [`CHUNK`] leases, instead of one round per
//! lease per tick.
//!
//! Each lease keeps its own schedule (renewed every `interval`, retried every `retry`
//! after a failed round, given up `loss_margin` before its deadline, stopped at its
//! maximum hold) and is judged on its own: its own owner check on every node, its own
//! tally, its own validity, its own loss. What leases share is the call that carries
//! them. A tick takes every lease due within [`WINDOW`] of it (or a quarter of its
//! interval, if less), so that leases whose schedules are close share a call; a lease is
//! renewed up to that early, never later
//! than its schedule (beyond the timer's own lateness).
//!
//! Why a loss is still reported before the deadline: the give-up point of each lease is a
//! timer of this task, which never waits on a node. Rounds run on tasks of their own, so
//! a round stuck on a paused majority (until the node timeout) does not hold up the
//! give-up of any lease, in that round or another; the lease is published lost at its
//! give-up point, as the per-lease watchdog does, and a renewal that lands after that
//! changes nothing (a loss is final).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Lease;
use super::watchdog::{Live, Schedule, give_up_at, loss_margin, unreachable};
use crate::clock;
use crate::core::quorum::{self, Decision, Tally};
use crate::core::{NodeCalls, run_round};
use crate::error::{LossReason, NodeError};
use crate::node::Renewal;
use crate::observe::{ExtendOutcome, OpSpan};

/// Leases due within this long of a tick are renewed in it.
pub(crate) const WINDOW: Duration = Duration::from_millis(50);
/// Leases per script call: at about a microsecond each on the node, a call blocks it for
/// well under a millisecond.
pub(crate) const CHUNK: usize = 256;

/// One client's batched watchdog (see the module's docs). Lives in the client's
/// [`Nodes`](crate::core::Nodes); its task runs while a lease is watched.
#[derive(Debug, Default)]
pub(crate) struct Renewer {
    queue: Mutex<Queue>,
    /// Rings when a lease's next wake moved earlier than the task's (a new lease, a
    /// round's end).
    wake: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    entries: HashMap<u64, Entry>,
    /// (when, lease id): each entry's next wake, once.
    timers: BTreeSet<(Instant, u64)>,
    next_id: u64,
    /// Whether the task runs (it ends when nothing is watched).
    running: bool,
}

#[derive(Debug)]
struct Entry {
    lease: Weak<Lease>,
    /// The schedule's intervals (its maximum hold is `cap`).
    interval: Duration,
    retry: Duration,
    /// When the next renewal is due.
    next: Instant,
    /// When the maximum hold is reached.
    cap: Option<Instant>,
    /// This entry's key in `timers`.
    wake: Instant,
    /// A round carrying this lease is under way.
    in_flight: bool,
    /// Causes of the rounds that failed since the last success.
    /// (Boxed: most entries never fail, and every byte here counts a hundred thousand
    /// times on a client holding that many locks.)
    failures: Option<Box<[NodeError]>>,
    _live: Live,
}

/// A watched lease's place in the renewer: dropping it stops the renewals (a round
/// under way may still land; its owner check makes that harmless).
#[derive(Debug)]
pub(crate) struct Registration {
    renewer: Arc<Renewer>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut q = self.renewer.lock();
        if let Some(e) = q.entries.remove(&self.id) {
            q.timers.remove(&(e.wake, self.id));
        }
    }
}

impl Renewer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts renewing `lease` on `plan`; `live` counts watched leases (per client).
    pub(crate) fn watch(
        self: &Arc<Self>,
        lease: &Arc<Lease>,
        plan: Schedule,
        live: &Arc<AtomicUsize>,
    ) -> Registration {
        let mut q = self.lock();
        let id = q.add(lease, plan, live);
        if !q.running {
            q.running = true;
            tokio::spawn(Arc::clone(self).run());
        } else if q.timers.first().is_some_and(|t| t.1 == id) {
            self.wake.notify_one();
        }
        Registration {
            renewer: Arc::clone(self),
            id,
        }
    }

    /// The task: wakes at the first timer, publishes the losses due, sends the renewals
    /// due (on tasks of their own), and sleeps again; ends when nothing is watched.
    async fn run(self: Arc<Self>) {
        let mut running = Running(Some(Arc::clone(&self)));
        loop {
            let next_wake = {
                let mut q = self.lock();
                let due = q.tick(clock::now());
                for batch in due.chunks(CHUNK) {
                    tokio::spawn(Arc::clone(&self).renew(batch.to_vec()));
                }
                match q.timers.first() {
                    Some((at, _)) => *at,
                    // Cleared under this lock: a lease watched after it starts a new task.
                    None => {
                        q.running = false;
                        running.0 = None;
                        return;
                    }
                }
            };
            let notified = self.wake.notified();
            tokio::select! {
                () = clock::sleep_until(next_wake) => {}
                () = notified => {}
            }
        }
    }

    /// One round for up to [`CHUNK`] leases: one script call per node, each lease
    /// decided on its own tally; the round ends when every lease is decided or every
    /// node has answered (or timed out).
    async fn renew(self: Arc<Self>, batch: Vec<(u64, Arc<Lease>)>) {
        let Some((_, first)) = batch.first() else {
            return;
        };
        let nodes = first.nodes.clone();
        let n = nodes.len();
        let span = OpSpan::renew(batch.len());
        let start = clock::now();
        let leases: Arc<[_]> = batch
            .iter()
            .map(|(_, l)| {
                (
                    Arc::clone(&l.keys),
                    l.owner.clone(),
                    quorum::lease_ms(l.ttl),
                )
            })
            .collect();
        let mut calls = NodeCalls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, leases) = (Arc::clone(node), Arc::clone(&leases));
            calls.push(i, async move { node.extend_many(&leases).await });
        }
        let tallies = Mutex::new(vec![Tally::new(n); batch.len()]);
        let vote = |r: &Result<Vec<Renewal>, NodeError>| {
            let mut t = tallies.lock().unwrap_or_else(PoisonError::into_inner);
            for (j, tally) in t.iter_mut().enumerate() {
                tally.record(match r.as_ref().map(|a| a.get(j)) {
                    Ok(Some(Renewal::Renewed)) => quorum::Vote::Yes,
                    Ok(Some(Renewal::NotOurs { .. })) => quorum::Vote::No,
                    Ok(None) | Err(_) => quorum::Vote::Failed,
                });
            }
            // The round's own tally counts nodes; every lease is decided on its own.
            if r.is_ok() {
                quorum::Vote::Yes
            } else {
                quorum::Vote::Failed
            }
        };
        let all_decided = |_: &Tally| {
            let t = tallies.lock().unwrap_or_else(PoisonError::into_inner);
            t.iter().all(|t| t.decision() != Decision::Pending)
        };
        let (round, pending) = span.run(run_round(calls, n, vote, all_decided, None)).await;
        nodes.background().finish(pending);
        let tallies = tallies.into_inner().unwrap_or_else(PoisonError::into_inner);
        let errors = round.errors();
        let counters = nodes.counters();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (j, (id, lease)) in batch.iter().enumerate() {
            let outcome = match tallies[j].decision() {
                Decision::Won => {
                    lease.renewed(start, lease.ttl);
                    ExtendOutcome::Renewed
                }
                Decision::Refused => {
                    let answers: Vec<(usize, Result<Renewal, NodeError>)> = round
                        .answers
                        .iter()
                        .filter_map(|(i, a)| match a {
                            Ok(a) => a.get(j).map(|r| (*i, Ok(*r))),
                            Err(e) => Some((*i, Err(e.clone()))),
                        })
                        .collect();
                    lease.publish_lost(lease.not_owner(&answers, tallies[j].no));
                    ExtendOutcome::NotOwner
                }
                Decision::Failed | Decision::Pending => ExtendOutcome::Unreachable,
            };
            counters.extension(outcome);
            outcomes.push((*id, outcome));
        }
        let count = |o: fn(&ExtendOutcome) -> bool| outcomes.iter().filter(|(_, x)| o(x)).count();
        span.batch_outcome(
            count(|o| matches!(o, ExtendOutcome::Renewed)),
            count(|o| matches!(o, ExtendOutcome::Unreachable)),
            count(|o| matches!(o, ExtendOutcome::NotOwner)),
        );
        let now = clock::now();
        let mut q = self.lock();
        for (id, outcome) in outcomes {
            q.landed(id, outcome, start, now, &errors);
        }
        drop(q);
        // A retry may be due before the task's timer.
        self.wake.notify_one();
    }
}

/// Clears the running flag if the task's future is dropped (with its runtime), so that
/// the next watched lease starts another; disarmed when the task ends by itself.
struct Running(Option<Arc<Renewer>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.lock().running = false;
        }
    }
}

impl Queue {
    /// Adds `lease` on `plan`; returns its id.
    fn add(&mut self, lease: &Arc<Lease>, plan: Schedule, live: &Arc<AtomicUsize>) -> u64 {
        let acquired_at = lease.acquired_at;
        let next = acquired_at
            .checked_add(plan.interval)
            .unwrap_or(acquired_at);
        let cap = plan.max_hold.and_then(|m| acquired_at.checked_add(m));
        let give_up = give_up_at(lease, loss_margin(lease.ttl));
        let wake = [Some(next), Some(give_up), cap]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next);
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                lease: Arc::downgrade(lease),
                interval: plan.interval,
                retry: plan.retry,
                next,
                cap,
                wake,
                in_flight: false,
                failures: None,
                _live: Live::new(live),
            },
        );
        self.timers.insert((wake, id));
        id
    }

    /// Handles every timer due by `now` (and every renewal due within [`WINDOW`]):
    /// publishes the losses due, and returns the leases to renew now, marked in flight.
    fn tick(&mut self, now: Instant) -> Vec<(u64, Arc<Lease>)> {
        let mut due = Vec::new();
        // Taken out first, put back after: a wake put back within the window must not be
        // taken again in this tick.
        let mut woken = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now + WINDOW {
                break;
            }
            self.timers.pop_first();
            woken.push(id);
        }
        for id in woken {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            let Some(lease) = e.lease.upgrade().filter(|l| !l.is_over()) else {
                self.entries.remove(&id);
                continue;
            };
            let give_up = give_up_at(&lease, loss_margin(lease.ttl));
            if e.cap.is_some_and(|c| now >= c) {
                lease.publish_lost(LossReason::MaxHoldReached {
                    held: now - lease.acquired_at,
                });
                self.entries.remove(&id);
                continue;
            }
            if now >= give_up {
                let failures = e.failures.take().map(Vec::from).unwrap_or_default();
                lease.publish_lost(unreachable(failures));
                self.entries.remove(&id);
                continue;
            }
            // Early by a quarter of the interval at most, so that a short interval is not
            // turned into back-to-back renewals.
            if !e.in_flight && e.next <= now + WINDOW.min(e.interval / 4) {
                lease
                    .nodes
                    .counters()
                    .renewal_sent(now.saturating_duration_since(e.next));
                e.in_flight = true;
                due.push((id, lease));
            }
            e.wake = e.next_wake(give_up);
            self.timers.insert((e.wake, id));
        }
        due
    }

    /// A round carrying lease `id`, sent at `start`, ended at `now` with `outcome`.
    fn landed(
        &mut self,
        id: u64,
        outcome: ExtendOutcome,
        start: Instant,
        now: Instant,
        errors: &[NodeError],
    ) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.in_flight = false;
        match outcome {
            ExtendOutcome::Renewed => {
                e.failures = None;
                e.next = start + e.interval;
            }
            ExtendOutcome::Unreachable | ExtendOutcome::TimedOut => {
                e.failures = Some(errors.into());
                e.next = now + e.retry;
            }
            ExtendOutcome::NotOwner => {
                // Published lost: the lease is done.
                let wake = e.wake;
                self.entries.remove(&id);
                self.timers.remove(&(wake, id));
                return;
            }
        }
        let Some(lease) = e.lease.upgrade() else {
            return;
        };
        let give_up = give_up_at(&lease, loss_margin(lease.ttl));
        self.timers.remove(&(e.wake, id));
        e.wake = e.next_wake(give_up);
        self.timers.insert((e.wake, id));
    }
}

impl Entry {
    /// The next time this entry needs the task: its renewal (unless one is under way), its
    /// give-up point, its maximum hold.
    fn next_wake(&self, give_up: Instant) -> Instant {
        let renewal = (!self.in_flight).then_some(self.next);
        [renewal, Some(give_up), self.cap]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(give_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Nodes, ReleaseLedger};
    use crate::fence::FencingToken;
    use crate::lease::{LeaseParts, LockState};
    use crate::scripts::Keys;

    /// A lease over no nodes, acquired at `at` with `ttl` and a deadline `valid` later.
    fn lease(at: Instant, ttl: Duration, valid: Duration) -> Arc<Lease> {
        Arc::new(Lease::new(LeaseParts {
            nodes: Nodes::new(Vec::new(), 0.01),
            resource: "r".into(),
            keys: Arc::new(Keys::new("test", "r")),
            owner: "owner".into(),
            token: FencingToken::new(1),
            rest_tokens: Box::default(),
            ttl,
            acquired_at: at,
            deadline: at + valid,
            ledger: Arc::new(ReleaseLedger::new(0, Duration::from_secs(1))),
        }))
    }

    fn plan(interval: Duration) -> Schedule {
        Schedule {
            interval,
            retry: Duration::from_millis(10),
            max_hold: None,
            batched: true,
        }
    }

    fn ids(due: &[(u64, Arc<Lease>)]) -> Vec<u64> {
        due.iter().map(|(id, _)| *id).collect()
    }

    /// A lease is taken when due (a quarter of its interval early at most), once while
    /// its round is under way, and again on its schedule after the round lands.
    #[test]
    fn a_tick_takes_a_lease_when_due_and_once_per_round() {
        let t0 = clock::now();
        let live = Arc::default();
        let mut q = Queue::default();
        let l = lease(t0, Duration::from_secs(10), Duration::from_secs(9));
        let id = q.add(&l, plan(Duration::from_millis(100)), &live);
        let ms = |m| t0 + Duration::from_millis(m);
        assert!(q.tick(ms(0)).is_empty());
        assert!(q.tick(ms(74)).is_empty(), "more than a quarter early");
        assert_eq!(ids(&q.tick(ms(76))), [id]);
        assert!(q.tick(ms(120)).is_empty(), "its round is under way");
        q.landed(id, ExtendOutcome::Renewed, ms(76), ms(80), &[]);
        assert!(q.tick(ms(150)).is_empty());
        assert_eq!(
            ids(&q.tick(ms(176))),
            [id],
            "next at the round's start + interval"
        );
        assert_eq!(live.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// A give-up point within the window, not yet reached, ends the tick (it once spun)
    /// and publishes nothing; reached, it publishes the loss with the last round's
    /// failures, and the lease leaves the queue.
    #[test]
    fn a_give_up_point_publishes_the_loss_once_reached() {
        let t0 = clock::now();
        let live = Arc::default();
        let mut q = Queue::default();
        // TTL 1 s: margin 20 ms; deadline 40 ms after acquisition: give-up at 20 ms.
        let l = lease(t0, Duration::from_secs(1), Duration::from_millis(40));
        let id = q.add(&l, plan(Duration::from_millis(10)), &live);
        let ms = |m| t0 + Duration::from_millis(m);
        assert_eq!(ids(&q.tick(ms(10))), [id]);
        q.landed(id, ExtendOutcome::Unreachable, ms(10), ms(12), &[]);
        let _ = q.tick(ms(15));
        assert!(matches!(l.state.with(Clone::clone), LockState::Held { .. }));
        let _ = q.tick(ms(20));
        assert!(
            l.state.with(|s| matches!(
                s,
                LockState::Lost {
                    reason: LossReason::ValidityElapsed,
                    ..
                }
            )),
            "{:?}",
            l.state.with(Clone::clone)
        );
        assert!(q.entries.is_empty() && q.timers.is_empty());
    }

    /// A lease lost by a refusal leaves the queue with its timer.
    #[test]
    fn a_refused_lease_leaves_the_queue() {
        let t0 = clock::now();
        let live = Arc::default();
        let mut q = Queue::default();
        let l = lease(t0, Duration::from_secs(10), Duration::from_secs(9));
        let id = q.add(&l, plan(Duration::from_millis(100)), &live);
        assert_eq!(ids(&q.tick(t0 + Duration::from_millis(100))), [id]);
        q.landed(id, ExtendOutcome::NotOwner, t0, t0, &[]);
        assert!(q.entries.is_empty() && q.timers.is_empty());
    }
}
