//! One round of calls to every node: gather answers until the outcome is certain, then
//! return without waiting for the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::{Error, NodeError, Step};
use crate::node::Node;
use crate::quorum::{self, Decision, Tally, Vote};
use crate::scripts::Keys;

pub(crate) type Reply<T> = (usize, Result<T, NodeError>);
pub(crate) type Pending<T> = FuturesUnordered<BoxFuture<'static, Reply<T>>>;

/// Answers of one round, gathered until the round was decided (or ran out of time).
pub(crate) struct Round<T> {
    pub(crate) tally: Tally,
    pub(crate) answers: Vec<Reply<T>>,
    /// True when the time limit passed before the round was decided.
    pub(crate) timed_out: bool,
}

impl<T> Round<T> {
    /// The failed nodes' errors.
    pub(crate) fn errors(&self) -> Vec<NodeError> {
        self.answers
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().cloned())
            .collect()
    }
}

/// The usual stopping rule: the outcome (won, refused, failed) is certain.
pub(crate) fn decided(t: &Tally) -> bool {
    t.decision() != Decision::Pending
}

/// Gathers answers until `decided` says the outcome is certain, or `limit` passes, then
/// returns without waiting for the rest: the calls still in flight come back beside the
/// answers, for the caller to hand to a background task. Never waits on a node after the
/// outcome is known.
pub(crate) async fn run_round<T>(
    mut pending: Pending<T>,
    n: usize,
    vote: impl Fn(&Result<T, NodeError>) -> Vote,
    decided: impl Fn(&Tally) -> bool,
    limit: Option<Instant>,
) -> (Round<T>, Pending<T>) {
    let mut tally = Tally::new(n);
    let mut answers = Vec::with_capacity(n);
    let mut timed_out = false;
    let deadline = async {
        match limit {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    while !decided(&tally) {
        let next = tokio::select! {
            biased;
            next = pending.next() => next,
            () = &mut deadline => {
                timed_out = true;
                break;
            }
        };
        let Some((i, r)) = next else { break };
        tally.record(vote(&r));
        answers.push((i, r));
    }
    (
        Round {
            tally,
            answers,
            timed_out,
        },
        pending,
    )
}

/// Lets calls still in flight finish on a background task; none of them is awaited by the
/// caller. The multiplexed connection has already taken each command in order, so any
/// command sent later to the same node runs after it.
pub(crate) fn finish_in_background<T: Send + 'static>(pending: Pending<T>) {
    if !pending.is_empty() {
        tokio::spawn(pending.for_each(|_| async {}));
    }
}

/// The end of one owner's keys: whether they must go, and what the owner's release did on
/// each node (`Some(true)` when it deleted the key there, `Some(false)` when it did not:
/// not ours, or failed; `None` before it answered).
///
/// An acquire call still in flight when its attempt was decided can grant after the
/// owner ended. If the owner's release on that node deleted the key, the grant was
/// processed first and nothing is left; only otherwise does the task finishing the
/// stragglers release once more. Every lock released right after it was taken would
/// otherwise cost a second release on each straggling node.
pub(crate) struct Ending {
    /// Set once the owner's keys must go: the attempt failed or was cancelled, or its
    /// guard was released or dropped.
    ended: AtomicBool,
    outcome: tokio::sync::watch::Sender<Vec<Option<bool>>>,
    /// Bound on waiting for an outcome (the release is bounded by the node timeout).
    limit: Duration,
}

impl Ending {
    pub(crate) fn new(n: usize, limit: Duration) -> Self {
        Self {
            ended: AtomicBool::new(false),
            outcome: tokio::sync::watch::Sender::new(vec![None; n]),
            limit,
        }
    }

    /// From now on the owner's keys must go.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Releases the owner's key on node `i` and records whether that deleted it.
    pub(crate) async fn release(
        &self,
        node: &Arc<Node>,
        i: usize,
        keys: &Keys,
        owner: &str,
        announce: bool,
    ) -> Result<bool, NodeError> {
        let r = node.release(keys, owner, announce).await;
        let deleted = matches!(r, Ok(true));
        self.outcome.send_modify(|o| {
            if let Some(slot) = o.get_mut(i) {
                // A deletion stands: a later release (a retry) finding nothing is expected.
                *slot = Some(slot.unwrap_or(false) || deleted);
            }
        });
        r
    }

    /// Whether the owner's release on node `i` deleted the key; waits (bounded) for it
    /// to answer, and says false when it did not in time.
    pub(crate) async fn deleted(&self, i: usize) -> bool {
        let mut rx = self.outcome.subscribe();
        let answered = rx.wait_for(|o| o.get(i).is_none_or(Option::is_some));
        matches!(
            tokio::time::timeout(self.limit, answered).await,
            Ok(Ok(o)) if o.get(i) == Some(&Some(true))
        )
    }
}

/// The error for a round that failures kept from a quorum.
pub(crate) fn no_quorum<T>(resource: &str, step: Step, round: &Round<T>, n: usize) -> Error {
    Error::NoQuorum {
        resource: resource.to_owned(),
        step,
        granted: round.tally.yes,
        refused: round.tally.no,
        failed: round.tally.failed,
        quorum: quorum::quorum(n),
        nodes: n,
        errors: round.errors(),
    }
}
