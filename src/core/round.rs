//! One round of calls to every node: gather answers until the outcome is certain, then
//! return without waiting for the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::Stream;

use super::quorum::{self, Decision, Tally, Vote};
use crate::clock;
use crate::error::{Error, NodeError, Step};

pub(crate) type Reply<T> = (usize, Result<T, NodeError>);

/// One call per node, polled together: each wake-up polls every call still running.
///
/// For the handful of nodes a lock has, that is cheaper than `FuturesUnordered` (no task
/// allocation and no ready queue per call), and it lets a round take in every reply that
/// has arrived, not only the one that woke it, so that calls rarely outlive their round.
pub(crate) struct NodeCalls<T> {
    running: Vec<Call<T>>,
    /// Finished, not yet taken (the stream hands out one reply at a time).
    ready: VecDeque<Reply<T>>,
}

impl<T> NodeCalls<T> {
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

impl<T> Stream for NodeCalls<T> {
    type Item = Reply<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Reply<T>>> {
        let NodeCalls { running, ready } = self.get_mut();
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

// Nothing in `NodeCalls` is pinned in place: the calls are boxed.
impl<T> Unpin for NodeCalls<T> {}

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
    mut calls: NodeCalls<T>,
    n: usize,
    vote: impl Fn(&Result<T, NodeError>) -> Vote,
    decided: impl Fn(&Tally) -> bool,
    limit: Option<Instant>,
) -> (Round<T>, NodeCalls<T>) {
    let mut tally = Tally::new(n);
    let mut answers = Vec::with_capacity(n);
    // Each answer's vote, for the span: `vote` may count as it goes (a grant round's
    // per-candidate counts), so it is called once per answer, here, and never again.
    #[cfg(feature = "tracing")]
    let mut votes = Vec::with_capacity(n);
    let mut timed_out = false;
    if !decided(&tally) {
        let gather = std::future::poll_fn(|cx| {
            poll_all(&mut calls.running, cx, |(i, r)| {
                let v = vote(&r);
                tally.record(v);
                #[cfg(feature = "tracing")]
                votes.push(v);
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
    #[cfg(feature = "tracing")]
    record(&tally, &answers, &votes, timed_out);
    (
        Round {
            tally,
            answers,
            timed_out,
        },
        calls,
    )
}

/// Records a decided round on the current span (the operation's): the tally, and each
/// answer in arrival order as `node:vote`, the node by its index in the client's order
/// (as [`Client::node_names`](crate::Client::node_names) lists them) and a failure by its
/// kind. Nodes that had not answered when the round was decided are not listed.
#[cfg(feature = "tracing")]
fn record<T>(tally: &Tally, answers: &[Reply<T>], votes: &[Vote], timed_out: bool) {
    use std::fmt::Write;

    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let mut text = String::with_capacity(answers.len() * 8);
    for ((i, a), v) in answers.iter().zip(votes) {
        let said = match (a, v) {
            (Err(e), _) => e.kind().label(),
            (Ok(_), Vote::Yes) => "yes",
            (Ok(_), Vote::No) => "no",
            (Ok(_), Vote::Failed) => "bad_reply",
        };
        let gap = if text.is_empty() { "" } else { " " };
        let _ = write!(text, "{gap}{i}:{said}");
    }
    if timed_out {
        text.push_str(" (out of time)");
    }
    span.record("granted", tally.yes);
    span.record("refused", tally.no);
    span.record("failed", tally.failed);
    span.record("answers", text.as_str());
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
    use std::time::Duration;

    use futures::stream::StreamExt;

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
        let mut calls = NodeCalls::with_capacity(5);
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
        let mut calls: NodeCalls<bool> = NodeCalls::with_capacity(3);
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

    /// A vote that counts as it goes (a grant round's per-candidate counts) is called
    /// once per answer, also when a subscriber records the round on its span: calling it
    /// again would count a grant twice and could make a lost round look won.
    #[cfg(feature = "tracing")]
    #[tokio::test]
    async fn a_round_votes_once_per_answer_with_a_subscriber_listening() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing::Instrument;

        let subscriber = tracing_subscriber::registry();
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::debug_span!(
            target: "redfence",
            "acquire",
            granted = tracing::field::Empty,
            refused = tracing::field::Empty,
            failed = tracing::field::Empty,
            answers = tracing::field::Empty,
        );
        assert!(!span.is_disabled());
        let mut calls = NodeCalls::with_capacity(3);
        for i in 0..3 {
            calls.push(i, async move { Ok(i) });
        }
        let counted = AtomicUsize::new(0);
        let vote = |_: &Result<usize, NodeError>| {
            counted.fetch_add(1, Ordering::Relaxed);
            Vote::Yes
        };
        let (round, _) = run_round(calls, 3, vote, |_| false, None)
            .instrument(span)
            .await;
        assert_eq!(round.answers.len(), 3);
        assert_eq!(counted.load(Ordering::Relaxed), 3);
    }

    /// As a stream, the calls hand out every reply once, then end.
    #[tokio::test]
    async fn calls_as_a_stream_yield_each_reply_once() {
        let mut calls = NodeCalls::with_capacity(4);
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
