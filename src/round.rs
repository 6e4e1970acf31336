//! One round of calls to every node: gather answers until the outcome is certain, then
//! return without waiting for the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{Stream, StreamExt};
use tokio::sync::Notify;

use crate::clock;
use crate::error::{Error, NodeError, Step};
use crate::node::{Node, Release};
use crate::quorum::{self, Decision, Tally, Vote};
use crate::scripts::Keys;

pub(crate) type Reply<T> = (usize, Result<T, NodeError>);

/// One call per node, polled together: each wake-up polls every call still running.
///
/// For the handful of nodes a lock has, that is cheaper than `FuturesUnordered` (no task
/// allocation and no ready queue per call), and it lets a round take in every reply that
/// has arrived, not only the one that woke it, so that calls rarely outlive their round.
pub(crate) struct Calls<T> {
    running: Vec<Call<T>>,
    /// Finished, not yet taken (the stream hands out one reply at a time).
    ready: VecDeque<Reply<T>>,
}

impl<T> Calls<T> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            running: Vec::with_capacity(n),
            ready: VecDeque::new(),
        }
    }

    /// Adds the call to node `i`.
    pub(crate) fn push(
        &mut self,
        i: usize,
        call: impl Future<Output = Result<T, NodeError>> + Send + 'static,
    ) {
        self.running.push((i, Box::pin(call)));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty() && self.ready.is_empty()
    }
}

type Call<T> = (usize, BoxFuture<'static, Result<T, NodeError>>);

/// Polls every running call once and hands each finished one's reply to `done`.
fn poll_all<T>(running: &mut Vec<Call<T>>, cx: &mut Context<'_>, mut done: impl FnMut(Reply<T>)) {
    running.retain_mut(|(i, call)| match call.as_mut().poll(cx) {
        Poll::Ready(r) => {
            done((*i, r));
            false
        }
        Poll::Pending => true,
    });
}

impl<T> Stream for Calls<T> {
    type Item = Reply<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Reply<T>>> {
        let Calls { running, ready } = self.get_mut();
        if ready.is_empty() {
            poll_all(running, cx, |r| ready.push_back(r));
        }
        match ready.pop_front() {
            Some(r) => Poll::Ready(Some(r)),
            None if running.is_empty() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

// Nothing in `Calls` is pinned in place: the calls are boxed.
impl<T> Unpin for Calls<T> {}

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
/// outcome is known; replies that arrived together with the deciding one are taken in.
pub(crate) async fn run_round<T>(
    mut calls: Calls<T>,
    n: usize,
    vote: impl Fn(&Result<T, NodeError>) -> Vote,
    decided: impl Fn(&Tally) -> bool,
    limit: Option<Instant>,
) -> (Round<T>, Calls<T>) {
    let mut tally = Tally::new(n);
    let mut answers = Vec::with_capacity(n);
    let mut timed_out = false;
    if !decided(&tally) {
        let gather = std::future::poll_fn(|cx| {
            poll_all(&mut calls.running, cx, |(i, r)| {
                tally.record(vote(&r));
                answers.push((i, r));
            });
            if decided(&tally) || calls.running.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let deadline = async {
            match limit {
                Some(at) => clock::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = gather => {}
            () = deadline => timed_out = true,
        }
    }
    (
        Round {
            tally,
            answers,
            timed_out,
        },
        calls,
    )
}

/// One client's background work: calls left to finish after their round was decided,
/// releases of failed attempts and dropped guards, re-releases of late grants. Each task
/// is counted while it lives, so that [`Client::shutdown`](crate::Client::shutdown) can
/// wait for them before the runtime ends and takes unsent releases with it.
#[derive(Debug, Default)]
pub(crate) struct Background {
    running: AtomicUsize,
    idle: Notify,
}

impl Background {
    /// Runs `work` on a spawned task, counted until it ends or is dropped.
    pub(crate) fn spawn(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        let counted = Counted::new(self);
        tokio::spawn(async move {
            work.await;
            drop(counted);
        });
    }

    /// Lets calls still in flight finish on a background task; none of them is awaited by
    /// the caller. The multiplexed connection has already taken each command in order, so
    /// any command sent later to the same node runs after it.
    pub(crate) fn finish<T: Send + 'static>(self: &Arc<Self>, calls: Calls<T>) {
        if !calls.is_empty() {
            self.spawn(calls.for_each(|_| async {}));
        }
    }

    /// Tasks still running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until no task runs, or `limit` passes; returns the tasks still running.
    pub(crate) async fn idle(&self, limit: Duration) -> usize {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the count is read, so the last task's notification
                // cannot fall between the two.
                notified.as_mut().enable();
                if self.running() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, idle).await;
        self.running()
    }
}

/// One background task, counted in [`Background::running`] while it lives (its future
/// dropped with a runtime that shuts down counts out too).
struct Counted(Arc<Background>);

impl Counted {
    fn new(background: &Arc<Background>) -> Self {
        background.running.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(background))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The end of one owner's keys: whether they must go, and what the owner's release did on
/// each node (deleted the key there; kept it: not ours, or failed; or not answered yet).
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
    /// Per node: [`UNANSWERED`], [`KEPT`] or [`DELETED`].
    outcome: Box<[AtomicU8]>,
    /// Per node: the grant was sent a second time, on a new connection, so the owner's
    /// release may have come before it and deleting proves nothing.
    repeated: Box<[AtomicBool]>,
    /// Tasks waiting in [`deleted`](Self::deleted); releases notify only when there are
    /// some (the common case has none, and a notification takes a lock).
    waiting: AtomicUsize,
    answered: Notify,
    /// Bound on waiting for an outcome (the release is bounded by the node timeout).
    limit: Duration,
}

const UNANSWERED: u8 = 0;
const KEPT: u8 = 1;
const DELETED: u8 = 2;

impl Ending {
    pub(crate) fn new(n: usize, limit: Duration) -> Self {
        Self {
            ended: AtomicBool::new(false),
            outcome: (0..n).map(|_| AtomicU8::new(UNANSWERED)).collect(),
            repeated: (0..n).map(|_| AtomicBool::new(false)).collect(),
            waiting: AtomicUsize::new(0),
            answered: Notify::new(),
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

    /// Releases the owner's key on node `i` and records whether that deleted it (only a
    /// deletion the node answered counts: one inferred after a repeat proves nothing
    /// about a grant that may still be on its way).
    pub(crate) async fn release(
        &self,
        node: &Arc<Node>,
        i: usize,
        keys: &Keys,
        owner: &str,
        announce: bool,
    ) -> Result<Release, NodeError> {
        let r = node.release(keys, owner, announce).await;
        self.record(i, matches!(r, Ok(Release { deleted: true, .. })));
        r
    }

    /// Records what the release on node `i` did and wakes whoever waits for it.
    fn record(&self, i: usize, deleted: bool) {
        let Some(slot) = self.outcome.get(i) else {
            return;
        };
        // A deletion stands: a later release (a retry) finding nothing is expected.
        slot.fetch_max(if deleted { DELETED } else { KEPT }, Ordering::SeqCst);
        // Either a waiter counted itself before this store and is woken here, or it reads
        // the outcome after counting itself (both sides are SeqCst).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.answered.notify_waiters();
        }
    }

    /// The grant on node `i` is about to be sent again, on a new connection.
    pub(crate) fn repeated(&self, i: usize) {
        if let Some(r) = self.repeated.get(i) {
            r.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the owner's release on node `i` deleted the key before any grant could
    /// follow it; waits (bounded) for it to answer, and says false when it did not in
    /// time, or when the grant was repeated (the repeat may have come after the release).
    pub(crate) async fn deleted(&self, i: usize) -> bool {
        let Some(slot) = self.outcome.get(i) else {
            return false;
        };
        if self
            .repeated
            .get(i)
            .is_some_and(|r| r.load(Ordering::SeqCst))
        {
            return false;
        }
        // Counted in for as long as this waits, cancellation included.
        let _waiting = Waiting::new(&self.waiting);
        let answered = async {
            loop {
                let notified = self.answered.notified();
                tokio::pin!(notified);
                // Registered before the outcome is read, so no notification falls between.
                notified.as_mut().enable();
                match slot.load(Ordering::SeqCst) {
                    UNANSWERED => notified.await,
                    outcome => return outcome == DELETED,
                }
            }
        };
        tokio::time::timeout(self.limit, answered).await == Ok(true)
    }
}

/// One waiter counted in [`Ending::waiting`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NodeErrorKind;

    fn node_error(i: usize) -> NodeError {
        NodeError::new(
            &format!("n{i}"),
            Step::Acquire,
            NodeErrorKind::Io,
            "down".into(),
        )
    }

    /// Five calls: three grants and a refusal have answered, one node never will. The
    /// round is decided without waiting for it, and takes in all four answers.
    #[tokio::test]
    async fn a_round_takes_every_arrived_reply_and_leaves_the_silent_node() {
        let mut calls = Calls::with_capacity(5);
        for i in 0..3 {
            calls.push(i, async move { Ok(true) });
        }
        calls.push(3, async { Ok(false) });
        calls.push(4, std::future::pending());
        let vote = |r: &Result<bool, NodeError>| match r {
            Ok(true) => Vote::Yes,
            Ok(false) => Vote::No,
            Err(_) => Vote::Failed,
        };
        let (round, left) = run_round(calls, 5, vote, decided, None).await;
        assert_eq!(round.tally.decision(), Decision::Won);
        assert_eq!((round.tally.yes, round.tally.no), (3, 1));
        let mut seen: Vec<usize> = round.answers.iter().map(|(i, _)| *i).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3]);
        assert!(!round.timed_out);
        assert_eq!(left.running.len(), 1);
        assert_eq!(left.running[0].0, 4);
    }

    /// A round with a limit gives up at the limit and says so.
    #[tokio::test]
    async fn a_round_gives_up_at_its_limit() {
        let mut calls: Calls<bool> = Calls::with_capacity(3);
        calls.push(0, async { Err(node_error(0)) });
        calls.push(1, std::future::pending());
        calls.push(2, std::future::pending());
        let limit = clock::now() + Duration::from_millis(20);
        let (round, left) = run_round(calls, 3, |_| Vote::Failed, decided, Some(limit)).await;
        assert!(round.timed_out);
        assert_eq!(round.tally.decision(), Decision::Pending);
        assert_eq!(round.errors(), [node_error(0)]);
        assert_eq!(left.running.len(), 2);
    }

    /// A waiter learns the release's outcome as soon as it is recorded; a deletion stands
    /// against a later release that found nothing; no answer in time reads as "not
    /// deleted".
    #[tokio::test]
    async fn ending_reports_each_nodes_release() {
        let ending = Arc::new(Ending::new(3, Duration::from_secs(30)));
        let waiter = tokio::spawn({
            let ending = Arc::clone(&ending);
            async move { ending.deleted(0).await }
        });
        while ending.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        ending.record(0, true);
        // Woken by the record, long before the 30 s limit.
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(woken, Ok(Ok(true))), "{woken:?}");

        ending.record(0, false);
        assert!(
            ending.deleted(0).await,
            "a retry finding nothing undid a deletion"
        );
        ending.record(1, false);
        assert!(!ending.deleted(1).await);
        ending.record(1, true);
        assert!(ending.deleted(1).await);

        // A repeated grant may have followed the release: the deletion proves nothing.
        ending.repeated(1);
        assert!(!ending.deleted(1).await);

        let quick = Ending::new(3, Duration::from_millis(10));
        assert!(!quick.deleted(2).await, "no answer reads as not deleted");
        assert!(!quick.deleted(7).await, "no such node");

        // A waiter that is cancelled counts itself out.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), ending.deleted(2)).await;
        assert!(cancelled.is_err());
        assert_eq!(ending.waiting.load(Ordering::SeqCst), 0);
    }

    /// As a stream, the calls hand out every reply once, then end.
    #[tokio::test]
    async fn calls_as_a_stream_yield_each_reply_once() {
        let mut calls = Calls::with_capacity(4);
        for i in 0..4 {
            calls.push(i, async move {
                tokio::task::yield_now().await;
                Ok(i * 10)
            });
        }
        let mut got: Vec<(usize, usize)> = calls
            .map(|(i, r)| (i, r.unwrap()))
            .collect::<Vec<_>>()
            .await;
        got.sort_unstable();
        assert_eq!(got, [(0, 0), (1, 10), (2, 20), (3, 30)]);
    }
}
