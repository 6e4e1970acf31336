//! The lease core: a held lease on one set of keys (its state channel and deadline, its
//! extend and release rounds over the quorum), the owner's [`LeaseHandle`], the
//! [`watchdog`] that keeps it alive and reports its loss. Every primitive's handle wraps
//! a [`LeaseHandle`]; none holds a lease any other way.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub(crate) mod grant;
mod handle;
pub(crate) mod renewer;
mod state;
pub(crate) mod wait;
pub(crate) mod watchdog;

pub(crate) use handle::LeaseHandle;
pub use state::LockState;
use state::StateCell;

use crate::clock;
use crate::core::quorum::{self, Decision, Vote};
use crate::core::{NodeCalls, Nodes, ReleaseLedger, decided, no_quorum, run_round};
use crate::error::{Error, LossReason, NodeError, Step};
use crate::fence::FencingToken;
use crate::node::{Announce, Release, Renewal};
use crate::observe::{ExtendOutcome, OpSpan};
use crate::scripts::Keys;

/// A held lease on one set of keys: its state channel and deadline, and the extend and
/// release rounds over the quorum. Every primitive's handle holds one (through
/// [`LeaseHandle`]); the watchdog holds it weakly, so it never keeps a dropped handle's
/// lease alive.
pub(crate) struct Lease {
    pub(crate) nodes: Nodes,
    pub(crate) resource: String,
    pub(crate) keys: Arc<Keys>,
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    /// A set's other resources' tokens, in `Keys::rest` order.
    pub(crate) rest_tokens: Box<[FencingToken]>,
    pub(crate) ttl: Duration,
    pub(crate) acquired_at: Instant,
    pub(crate) initial_validity: Duration,
    /// Whether this owner's keys must go, and what the release did per node, for the
    /// task finishing the grant round's stragglers.
    pub(crate) ledger: Arc<ReleaseLedger>,
    /// A set's resource names in `Keys::locks` order, so that its loss names the part
    /// lost (set once the set is won; unset for every other lease).
    pub(crate) parts: OnceLock<Arc<[String]>>,
    deadline: Mutex<Instant>,
    pub(crate) state: StateCell,
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

/// What an acquisition hands to its lease.
pub(crate) struct LeaseParts {
    pub(crate) nodes: Nodes,
    pub(crate) resource: String,
    pub(crate) keys: Arc<Keys>,
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    pub(crate) rest_tokens: Box<[FencingToken]>,
    pub(crate) ttl: Duration,
    /// When the acquisition started (validity counts from there).
    pub(crate) acquired_at: Instant,
    pub(crate) deadline: Instant,
    pub(crate) ledger: Arc<ReleaseLedger>,
}

impl Lease {
    pub(crate) fn new(p: LeaseParts) -> Self {
        Self {
            initial_validity: p.deadline.saturating_duration_since(clock::now()),
            nodes: p.nodes,
            resource: p.resource,
            keys: p.keys,
            owner: p.owner,
            token: p.token,
            rest_tokens: p.rest_tokens,
            ttl: p.ttl,
            acquired_at: p.acquired_at,
            ledger: p.ledger,
            parts: OnceLock::new(),
            deadline: Mutex::new(p.deadline),
            state: StateCell::new(LockState::Held {
                deadline: p.deadline,
            }),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lost or released.
    pub(crate) fn is_over(&self) -> bool {
        !self.state.with(|s| matches!(s, LockState::Held { .. }))
    }

    /// Publishes the loss, unless the lock is already lost or released (the first word
    /// stands). The watch channel keeps the last state for every observer, and closes only
    /// when the guard is gone, after this.
    pub(crate) fn publish_lost(&self, reason: LossReason) {
        self.state.send_if_modified(|s| {
            if !matches!(s, LockState::Held { .. }) {
                return false;
            }
            // Counted (and told) before anyone waiting on the state can see the loss.
            let counters = self.nodes.counters();
            counters.lost(&self.resource, self.token.get(), &reason);
            *s = LockState::Lost {
                reason,
                at: clock::now(),
            };
            true
        });
    }

    /// Held becomes Released; a loss stays published (Lost is final).
    pub(crate) fn mark_released(&self) {
        self.state.send_if_modified(|s| {
            if matches!(s, LockState::Held { .. }) {
                *s = LockState::Released;
                true
            } else {
                false
            }
        });
    }

    /// Why a refused extension lost the lease: a set's names the resource most refusing
    /// nodes found gone (the first one each found), every other lease's is `NotOwner`.
    pub(crate) fn not_owner(
        &self,
        answers: &[(usize, Result<Renewal, NodeError>)],
        nodes: usize,
    ) -> LossReason {
        let Some(parts) = self.parts.get() else {
            return LossReason::NotOwner { nodes };
        };
        let mut counts = vec![0usize; parts.len()];
        for (_, a) in answers {
            if let Ok(Renewal::NotOurs { part }) = a
                && let Some(c) = counts.get_mut(*part)
            {
                *c += 1;
            }
        }
        // The most named part; the first of them on a tie.
        let part = (0..counts.len())
            .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        match parts.get(part) {
            Some(resource) => LossReason::PartNotOwner {
                resource: resource.clone(),
                nodes,
            },
            None => LossReason::NotOwner { nodes },
        }
    }

    pub(crate) fn lost_error(&self, reason: LossReason) -> Error {
        Error::Lost {
            resource: self.resource.clone(),
            reason,
        }
    }

    /// Renews the lease on all N nodes, deciding as soon as the outcome is certain and
    /// giving up at `limit` (never later than the current deadline).
    pub(crate) async fn extend_until(&self, limit: Instant, ttl: Duration) -> Extension {
        let lost = self.state.with(|s| match s {
            LockState::Lost { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        if let Some(reason) = lost {
            return Extension::Over(Some(reason));
        }
        if self.is_over() {
            return Extension::Over(None);
        }
        let span = OpSpan::extend(&self.resource);
        let extension = span
            .token(self.token.get())
            .run(self.extend_round(limit, ttl))
            .await;
        span.outcome(extension.label());
        if let Some(outcome) = extension.counted() {
            self.nodes.counters().extension(outcome);
        }
        extension
    }

    /// One extension round (see [`extend_until`](Self::extend_until)).
    async fn extend_round(&self, limit: Instant, ttl: Duration) -> Extension {
        let start = clock::now();
        // The deadline this round must beat. Another extension running alongside may move
        // it while this one waits; see the time-out case below.
        let before = self.deadline();
        let limit = limit.min(before);
        if start >= limit {
            return Extension::TimedOut(Vec::new());
        }
        let nodes = &self.nodes;
        let n = nodes.len();
        let ttl_ms = quorum::lease_ms(ttl);
        let mut calls = NodeCalls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, keys, owner) =
                (Arc::clone(node), Arc::clone(&self.keys), self.owner.clone());
            calls.push(i, async move { node.extend(&keys, &owner, ttl_ms).await });
        }
        let (round, pending) = run_round(calls, n, renewal_vote, decided, Some(limit)).await;
        self.nodes.background().finish(pending);
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
            let waited = clock::since(start);
            errors.extend((0..n).filter(|i| !answered.contains(i)).map(|i| {
                NodeError::out_of_time(nodes[i].name(), Step::Extend, "the lock's validity", waited)
            }));
            return Extension::TimedOut(errors);
        }
        match round.tally.decision() {
            Decision::Won => Extension::Extended(self.renewed(start, ttl)),
            Decision::Refused => {
                self.publish_lost(self.not_owner(&round.answers, round.tally.no));
                Extension::NotOwner(round.tally.no)
            }
            Decision::Failed | Decision::Pending => {
                Extension::Unreachable(no_quorum(&self.resource, Step::Extend, &round, n))
            }
        }
    }

    /// A quorum renewed the lease by `ttl` in a round sent at `start`: moves the deadline
    /// (never back) and returns the validity left.
    pub(crate) fn renewed(&self, start: Instant, ttl: Duration) -> Duration {
        // Every renewed lease started no earlier than `start`, so the new validity counts
        // from there, less the drift allowance.
        let drift = self.nodes.drift(ttl);
        let renewed = start + ttl.saturating_sub(drift);
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
        deadline.saturating_duration_since(clock::now())
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
        let span = OpSpan::release(&self.resource);
        let released = span.token(self.token.get()).run(self.release_round()).await;
        span.outcome(match &released {
            Ok(true) => "released",
            Ok(false) => "not_held",
            Err(_) => "failed",
        });
        self.nodes.counters().release(&released);
        released
    }

    /// One release round (see [`release`](Self::release)).
    async fn release_round(&self) -> Result<bool, Error> {
        self.ledger.end();
        let deadline = self.deadline();
        self.mark_released();
        let n = self.nodes.len();
        let calls = self.nodes.release_calls(
            0..n,
            &self.keys,
            &self.owner,
            Announce::Waiters,
            &self.ledger,
        );
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
        self.nodes.background().finish(pending);
        match round.tally.decision() {
            Decision::Won => Ok(true),
            Decision::Refused => Ok(false),
            Decision::Failed | Decision::Pending => {
                Err(no_quorum(&self.resource, Step::Release, &round, n))
            }
        }
    }
}

impl Extension {
    /// The outcome's name, for spans.
    pub(crate) fn label(&self) -> &'static str {
        match self.counted() {
            Some(o) => o.label(),
            None => "over",
        }
    }

    /// The outcome as counted; `None` for a round never sent.
    fn counted(&self) -> Option<ExtendOutcome> {
        Some(match self {
            Self::Extended(_) => ExtendOutcome::Renewed,
            Self::NotOwner(_) => ExtendOutcome::NotOwner,
            Self::Unreachable(_) => ExtendOutcome::Unreachable,
            Self::TimedOut(_) => ExtendOutcome::TimedOut,
            Self::Over(_) => return None,
        })
    }
}

fn renewal_vote(r: &Result<Renewal, NodeError>) -> Vote {
    match r {
        Ok(Renewal::Renewed) => Vote::Yes,
        Ok(Renewal::NotOurs { .. }) => Vote::No,
        Err(_) => Vote::Failed,
    }
}
