//! [`LockGuard`]: a held lock, its state channel, and its extension.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::clock;
use crate::error::{Error, LossReason, NodeError, Step};
use crate::fence::FencingToken;
use crate::lock::Client;
use crate::node::Release;
use crate::quorum::{self, Decision, Vote};
use crate::round::{Calls, Ending, decided, no_quorum, run_round};
use crate::scripts::Keys;
use crate::watchdog::{Watchdog, loss_margin};

/// What a lock is doing now, as its guard's [`state`](LockGuard::state) channel reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LockState {
    /// Held: exclusivity may be assumed until `deadline` (on [`now`](crate::now)'s clock,
    /// which counts time spent suspended).
    Held {
        /// When the validity runs out unless extended.
        deadline: Instant,
    },
    /// Lost: stop the critical section. Final.
    Lost {
        /// Why.
        reason: LossReason,
        /// When the loss was published: a margin (2 % of the TTL, at least 2 ms) before the
        /// last `Held` deadline, unless the runtime was starved for longer than that.
        at: Instant,
    },
    /// Released by its guard. Final.
    Released,
}

/// Everything a guard and its watchdog share. The watchdog holds it weakly, so it never
/// keeps a dropped guard's lock alive.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) resource: String,
    pub(crate) keys: Arc<Keys>,
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    pub(crate) ttl: Duration,
    pub(crate) acquired_at: Instant,
    pub(crate) initial_validity: Duration,
    /// Whether this owner's keys must go, and what the release did per node, for the
    /// task finishing the grant round's stragglers.
    pub(crate) ending: Arc<Ending>,
    deadline: Mutex<Instant>,
    state: watch::Sender<LockState>,
}

/// How one extension round ended.
pub(crate) enum Extension {
    /// A quorum renewed; the new validity.
    Extended(Duration),
    /// This many nodes, a majority, said the key is gone or someone else's (already
    /// published as lost).
    NotOwner(usize),
    /// Failed nodes kept a quorum out of reach; the lock may still be valid.
    Unreachable(Error),
    /// The limit passed first; the nodes that had not answered (or failed) by then.
    TimedOut(Vec<NodeError>),
    /// Already lost or released: nothing was sent.
    Over(Option<LossReason>),
}

/// What an acquisition hands to its guard.
pub(crate) struct GuardParts {
    pub(crate) client: Client,
    pub(crate) resource: String,
    pub(crate) keys: Arc<Keys>,
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    pub(crate) ttl: Duration,
    /// When the acquisition started (validity counts from there).
    pub(crate) acquired_at: Instant,
    pub(crate) deadline: Instant,
    pub(crate) ending: Arc<Ending>,
}

impl Shared {
    pub(crate) fn new(p: GuardParts) -> Self {
        Self {
            initial_validity: p.deadline.saturating_duration_since(clock::now()),
            client: p.client,
            resource: p.resource,
            keys: p.keys,
            owner: p.owner,
            token: p.token,
            ttl: p.ttl,
            acquired_at: p.acquired_at,
            ending: p.ending,
            deadline: Mutex::new(p.deadline),
            state: watch::Sender::new(LockState::Held {
                deadline: p.deadline,
            }),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lost or released.
    pub(crate) fn is_over(&self) -> bool {
        !matches!(*self.state.borrow(), LockState::Held { .. })
    }

    /// Publishes the loss, unless the lock is already lost or released (the first word
    /// stands). The watch channel keeps the last state for every observer, and closes only
    /// when the guard is gone, after this.
    pub(crate) fn publish_lost(&self, reason: LossReason) {
        self.state.send_if_modified(|s| {
            if matches!(s, LockState::Held { .. }) {
                *s = LockState::Lost {
                    reason,
                    at: clock::now(),
                };
                true
            } else {
                false
            }
        });
    }

    /// Held becomes Released; a loss stays published (Lost is final).
    fn mark_released(&self) {
        self.state.send_if_modified(|s| {
            if matches!(s, LockState::Held { .. }) {
                *s = LockState::Released;
                true
            } else {
                false
            }
        });
    }

    fn lost_error(&self, reason: LossReason) -> Error {
        Error::Lost {
            resource: self.resource.clone(),
            reason,
        }
    }

    /// Renews the lease on all N nodes, deciding as soon as the outcome is certain and
    /// giving up at `limit` (never later than the current deadline).
    pub(crate) async fn extend_until(&self, limit: Instant) -> Extension {
        if let LockState::Lost { reason, .. } = &*self.state.borrow() {
            return Extension::Over(Some(reason.clone()));
        }
        if self.is_over() {
            return Extension::Over(None);
        }
        let start = clock::now();
        // The deadline this round must beat. Another extension running alongside may move
        // it while this one waits; see the time-out case below.
        let before = self.deadline();
        let limit = limit.min(before);
        if start >= limit {
            return Extension::TimedOut(Vec::new());
        }
        let nodes = self.client.nodes();
        let n = nodes.len();
        let ttl_ms = quorum::lease_ms(self.ttl);
        let mut calls = Calls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, keys, owner) =
                (Arc::clone(node), Arc::clone(&self.keys), self.owner.clone());
            calls.push(i, async move { node.extend(&keys, &owner, ttl_ms).await });
        }
        let (round, pending) = run_round(calls, n, flag_vote, decided, Some(limit)).await;
        self.client.background().finish(pending);
        if round.timed_out || clock::now() >= limit {
            // A concurrent extension that won while this one waited has renewed the lease:
            // this round running out of time then proves nothing lost.
            let renewed = self.deadline();
            let left = renewed.saturating_duration_since(clock::now());
            if renewed > before && !left.is_zero() && !self.is_over() {
                return Extension::Extended(left);
            }
            let mut errors = round.errors();
            let answered: Vec<usize> = round.answers.iter().map(|(i, _)| *i).collect();
            let waited = start.elapsed();
            errors.extend((0..n).filter(|i| !answered.contains(i)).map(|i| {
                NodeError::out_of_time(nodes[i].name(), Step::Extend, "the lock's validity", waited)
            }));
            return Extension::TimedOut(errors);
        }
        match round.tally.decision() {
            Decision::Won => {
                // Every renewed lease started no earlier than `start`, so the new validity
                // counts from there, less the drift allowance.
                let drift = quorum::drift(self.ttl, self.client.settings().drift_factor);
                let renewed = start + self.ttl.saturating_sub(drift);
                let deadline = {
                    let mut d = self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
                    // Concurrent extensions: a slower one must not shorten a newer one.
                    *d = (*d).max(renewed);
                    *d
                };
                self.state.send_if_modified(|s| match s {
                    LockState::Held { deadline: old } if *old != deadline => {
                        *old = deadline;
                        true
                    }
                    _ => false,
                });
                Extension::Extended(deadline.saturating_duration_since(clock::now()))
            }
            Decision::Refused => {
                self.publish_lost(LossReason::NotOwner {
                    nodes: round.tally.no,
                });
                Extension::NotOwner(round.tally.no)
            }
            Decision::Failed | Decision::Pending => {
                Extension::Unreachable(no_quorum(&self.resource, Step::Extend, &round, n))
            }
        }
    }

    /// Deletes the lock on all N nodes; true when a quorum still held it.
    ///
    /// A node whose first release lost its answer with its connection gets the release
    /// again, and that repeat finds no key of ours if the first one ran. Before the
    /// deadline this owner's key cannot be gone from a node by expiry (the drift
    /// allowance keeps the deadline inside every node's lease), and no one else's `SET NX`
    /// can succeed while it is there, so a repeat sent before the deadline that finds the
    /// key gone or another owner's is counted as our own earlier deletion. After the
    /// deadline the lock was no longer ours to claim, and such a node counts as "not ours".
    pub(crate) async fn release(&self) -> Result<bool, Error> {
        self.ending.end();
        let deadline = self.deadline();
        self.mark_released();
        let n = self.client.nodes().len();
        let calls = self
            .client
            .release_calls(0..n, &self.keys, &self.owner, true, &self.ending);
        let vote = |r: &Result<Release, NodeError>| match r {
            Ok(Release { deleted: true, .. }) => Vote::Yes,
            Ok(Release {
                repeated_at: Some(at),
                ..
            }) if *at < deadline => Vote::Yes,
            Ok(_) => Vote::No,
            Err(_) => Vote::Failed,
        };
        let (round, pending) = run_round(calls, n, vote, decided, None).await;
        self.client.background().finish(pending);
        match round.tally.decision() {
            Decision::Won => Ok(true),
            Decision::Refused => Ok(false),
            Decision::Failed | Decision::Pending => {
                Err(no_quorum(&self.resource, Step::Release, &round, n))
            }
        }
    }
}

fn flag_vote(r: &Result<bool, NodeError>) -> Vote {
    match r {
        Ok(true) => Vote::Yes,
        Ok(false) => Vote::No,
        Err(_) => Vote::Failed,
    }
}

/// A held lock. Pass [`token`](Self::token) to every write it protects, stop before
/// [`validity`](Self::validity) runs out (or [`extend`](Self::extend), or let the
/// watchdog do it), and [`release`](Self::release) it when done.
///
/// Dropping it without `release` stops its watchdog and releases the lock on a spawned
/// task when a tokio runtime is running (never blocking), and otherwise leaves it to
/// expire with its TTL.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    shared: Arc<Shared>,
    watchdog: Option<Watchdog>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("resource", &self.shared.resource)
            .field("token", &self.shared.token)
            .field("ttl", &self.shared.ttl)
            .field("state", &*self.shared.state.borrow())
            .field("watchdog", &self.watchdog.is_some())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub(crate) fn new(shared: Arc<Shared>, watchdog: Option<Watchdog>) -> Self {
        Self {
            shared,
            watchdog,
            released: false,
        }
    }

    /// The fencing token of this acquisition.
    pub fn token(&self) -> FencingToken {
        self.shared.token
    }

    /// The lock name.
    pub fn resource(&self) -> &str {
        &self.shared.resource
    }

    /// The lease asked of the nodes.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// When exclusivity can no longer be assumed, on [`redfence::now`](crate::now)'s clock
    /// (the monotonic clock plus time spent suspended): compare it with that, not with
    /// `Instant::now()`. Extensions move it forward.
    pub fn deadline(&self) -> Instant {
        self.shared.deadline()
    }

    /// Time left before [`deadline`](Self::deadline); zero once it has passed or the lock
    /// was lost.
    pub fn validity(&self) -> Duration {
        if self.shared.is_over() {
            return Duration::ZERO;
        }
        self.deadline().saturating_duration_since(clock::now())
    }

    /// Validity at the moment the lock was acquired.
    pub fn initial_validity(&self) -> Duration {
        self.shared.initial_validity
    }

    /// True while a watchdog keeps extending this lock.
    pub fn has_watchdog(&self) -> bool {
        self.watchdog.is_some()
    }

    /// A receiver of the lock's state: held (with its deadline), lost (with the reason and
    /// time), or released. The watchdog and [`extend`](Self::extend) publish to it.
    pub fn state(&self) -> watch::Receiver<LockState> {
        self.shared.state.subscribe()
    }

    /// Resolves when the lock is lost, with the reason: when the watchdog (or an
    /// [`extend`](Self::extend)) reports a loss, or, without a watchdog, when the validity
    /// runs out. Never resolves for a lock that is released.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let guard = client.acquire("report").await?; // with a watchdog by default
    /// tokio::select! {
    ///     reason = guard.lost() => eprintln!("lock lost ({reason}); stopping"),
    ///     () = async { /* long critical section */ } => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lost(&self) -> LossReason {
        let mut rx = self.shared.state.subscribe();
        // The backstop publishes a margin ahead of the deadline, like the watchdog; with a
        // watchdog it waits for half that margin so the watchdog, which knows the reason
        // (say, which nodes timed out), publishes first.
        let margin = loss_margin(self.shared.ttl);
        let margin = if self.has_watchdog() {
            margin / 2
        } else {
            margin
        };
        loop {
            // Cloned, so no borrow of the channel is held across an await (which would
            // also make this future, and `Client::run`, not `Send`).
            let state = rx.borrow_and_update().clone();
            let deadline = match state {
                LockState::Lost { reason, .. } => return reason,
                LockState::Held { deadline } => deadline,
                LockState::Released => return std::future::pending().await,
            };
            // The watchdog reports a loss before the deadline; this is the backstop for a
            // guard without one (or a watchdog that died).
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                () = clock::sleep_until(deadline.checked_sub(margin).unwrap_or(deadline)) => {
                    self.shared.publish_lost(LossReason::ValidityElapsed);
                }
            }
        }
    }

    /// Renews the lease on every node for another TTL and returns the new validity,
    /// counted from the start of this call.
    ///
    /// A quorum must renew before the current validity ends; otherwise the lock may
    /// already belong to someone else.
    ///
    /// # Errors
    ///
    /// - [`Error::Lost`] with [`LossReason::ValidityElapsed`] when the validity ran out
    ///   before a quorum renewed (or before the call), and with [`LossReason::NotOwner`]
    ///   when a majority no longer holds this owner's key; the loss is also published on
    ///   the [`state`](Self::state) channel;
    /// - [`Error::NoQuorum`] when failed nodes kept a quorum out of reach; the lock may
    ///   still be held until [`deadline`](Self::deadline), and a retry may succeed.
    pub async fn extend(&self) -> Result<Duration, Error> {
        let s = &self.shared;
        match s.extend_until(s.deadline()).await {
            Extension::Extended(validity) => Ok(validity),
            Extension::NotOwner(nodes) => Err(s.lost_error(LossReason::NotOwner { nodes })),
            Extension::Unreachable(e) => Err(e),
            Extension::TimedOut(_) => {
                s.publish_lost(LossReason::ValidityElapsed);
                Err(s.lost_error(LossReason::ValidityElapsed))
            }
            Extension::Over(Some(reason)) => Err(s.lost_error(reason)),
            Extension::Over(None) => Err(s.lost_error(LossReason::ValidityElapsed)),
        }
    }

    /// Stops the watchdog, deletes the lock on every node (only where this guard still
    /// owns it) and says whether a quorum still held it: `Ok(false)` means the lock had
    /// already been lost, so the critical section may have overlapped another holder's.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when failed nodes kept the answer out of reach; the keys left
    /// behind expire with their TTL.
    pub async fn release(mut self) -> Result<bool, Error> {
        if let Some(w) = self.watchdog.take() {
            // Stopped before the release is sent, and awaited: when this returns, the
            // watchdog is gone.
            w.stop().await;
        }
        let result = self.shared.release().await;
        // Only now: if this future is dropped before the release is done, Drop releases.
        self.released = true;
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Dropping the handle aborts the watchdog task.
        self.watchdog.take();
        if self.released {
            return;
        }
        self.shared.ending.end();
        self.shared.mark_released();
        // Never block here: release on the runtime if there is one, else the TTL expires
        // the keys.
        if tokio::runtime::Handle::try_current().is_ok() {
            let s = &self.shared;
            let all: Vec<usize> = (0..s.client.nodes().len()).collect();
            s.client
                .release_in_background(&all, &s.keys, &s.owner, true, Arc::clone(&s.ending));
        }
    }
}
