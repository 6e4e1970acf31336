//! [`ReleaseLedger`]: the end of one owner's keys, shared by the attempt that took them, the
//! lease that holds them, and the task finishing the attempt's late calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::NodeError;
use crate::node::{Announce, Node, Release};
use crate::scripts::Keys;

/// The end of one owner's keys: whether they must go, and what the owner's release did on
/// each node (deleted the key there; kept it: not ours, or failed; or not answered yet).
///
/// An acquire call still in flight when its attempt was decided can grant after the
/// owner ended. If the owner's release on that node deleted the key, the grant was
/// processed first and nothing is left; only otherwise does the task finishing the
/// stragglers release once more. Every lock released right after it was taken would
/// otherwise cost a second release on each straggling node.
pub(crate) struct ReleaseLedger {
    /// Set once the owner's keys must go: the attempt failed or was cancelled, or its
    /// guard was released or dropped.
    ended: AtomicBool,
    /// Per node: [`UNANSWERED`], [`KEPT`] or [`DELETED`] (the [`OUTCOME`] bits), and
    /// [`REPEATED`] once the grant was sent a second time, on a new connection, so the
    /// owner's release may have come before it and deleting proves nothing. (One byte
    /// per node, one allocation: a client may hold a hundred thousand of these.)
    outcome: Box<[AtomicU8]>,
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
const OUTCOME: u8 = 3;
const REPEATED: u8 = 4;

impl ReleaseLedger {
    pub(crate) fn new(n: usize, limit: Duration) -> Self {
        Self {
            ended: AtomicBool::new(false),
            outcome: (0..n).map(|_| AtomicU8::new(UNANSWERED)).collect(),
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
        announce: Announce,
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
        let outcome = if deleted { DELETED } else { KEPT };
        let _ = slot.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
            Some((s & REPEATED) | (s & OUTCOME).max(outcome))
        });
        // Either a waiter counted itself before this store and is woken here, or it reads
        // the outcome after counting itself (both sides are SeqCst).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.answered.notify_waiters();
        }
    }

    /// The grant on node `i` is about to be sent again, on a new connection.
    pub(crate) fn repeated(&self, i: usize) {
        if let Some(slot) = self.outcome.get(i) {
            slot.fetch_or(REPEATED, Ordering::SeqCst);
        }
    }

    /// Whether the owner's release on node `i` deleted the key before any grant could
    /// follow it; waits (bounded) for it to answer, and says false when it did not in
    /// time, or when the grant was repeated (the repeat may have come after the release).
    pub(crate) async fn deleted(&self, i: usize) -> bool {
        let Some(slot) = self.outcome.get(i) else {
            return false;
        };
        if slot.load(Ordering::SeqCst) & REPEATED != 0 {
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
                match slot.load(Ordering::SeqCst) & OUTCOME {
                    UNANSWERED => notified.await,
                    outcome => return outcome == DELETED,
                }
            }
        };
        tokio::time::timeout(self.limit, answered).await == Ok(true)
    }
}

/// One waiter counted in [`ReleaseLedger::waiting`] while it lives.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter learns the release's outcome as soon as it is recorded; a deletion stands
    /// against a later release that found nothing; no answer in time reads as "not
    /// deleted".
    #[tokio::test]
    async fn ending_reports_each_nodes_release() {
        let ledger = Arc::new(ReleaseLedger::new(3, Duration::from_secs(30)));
        let waiter = tokio::spawn({
            let ledger = Arc::clone(&ledger);
            async move { ledger.deleted(0).await }
        });
        while ledger.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        ledger.record(0, true);
        // Woken by the record, long before the 30 s limit.
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(woken, Ok(Ok(true))), "{woken:?}");

        ledger.record(0, false);
        assert!(
            ledger.deleted(0).await,
            "a retry finding nothing undid a deletion"
        );
        ledger.record(1, false);
        assert!(!ledger.deleted(1).await);
        ledger.record(1, true);
        assert!(ledger.deleted(1).await);

        // A repeated grant may have followed the release: the deletion proves nothing.
        ledger.repeated(1);
        assert!(!ledger.deleted(1).await);

        let quick = ReleaseLedger::new(3, Duration::from_millis(10));
        assert!(!quick.deleted(2).await, "no answer reads as not deleted");
        assert!(!quick.deleted(7).await, "no such node");

        // A waiter that is cancelled counts itself out.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), ledger.deleted(2)).await;
        assert!(cancelled.is_err());
        assert_eq!(ledger.waiting.load(Ordering::SeqCst), 0);
    }
}
