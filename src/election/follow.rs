//! Following an election: every leadership, in term order, from the election's log.
//!
//! # Why a follower sees every leadership
//!
//! - A campaign returns a leadership only after its first publication was written on a
//!   majority, and each node logs a term's first publication (`elect_proclaim.lua`) in
//!   the same script as the record, while the lock is the leader's there. So every
//!   leadership is in the log of a majority of nodes before its campaign returns.
//! - A follower reads the logs of a majority and takes the union: two majorities share a
//!   node, so every leadership whose campaign has returned by the time the read starts is
//!   in it.
//! - A read is not one instant, though: it may read one node before a term T is logged
//!   there and another after a later term X is. So a term is handed out only once a read
//!   that *started after* the read that first showed it has come back (the terms up to
//!   the first read's highest are then confirmed). Why that is enough: X was logged, so X
//!   was won, so T's lease had ended on a majority, which is after T's deadline (keys
//!   outlive the deadline by the drift allowance); T's campaign returned only if its
//!   publication was decided on a majority before that deadline (the publication round's
//!   limit), so T was in the logs of a majority before the confirming read started, and
//!   that read's majority shares a node with them. (Found by the chaos run: a follower,
//!   reading through a slow link to one node, was shown X and never T.)
//! - Each node keeps the last [`LEADERSHIPS_KEPT`] leaderships. A follower that falls further
//!   behind is told: the next change it reads says [`LeaderChange::gap_before`].
//!
//! What the log does not cover: a node restarted without persistence forgets its log
//! (as it forgets its locks; the mutex's assumption), and a campaign that logged its term
//! on some nodes but failed to publish on a majority (and stepped down at once) may be
//! shown too: it did hold the lock, briefly, and its term is a real token.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{Election, LEADERSHIPS_KEPT};
use crate::core::NodeCalls;
use crate::core::quorum;
use crate::core::wakeup::Waiter;
use crate::error::{Error, NodeError, Step};
use crate::fence::FencingToken;
use crate::node::LogRead;

/// A leadership as the election's log records it: its term and the value its leader
/// first published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderChange {
    /// The leadership's term (its fencing token).
    pub term: FencingToken,
    /// The value its leader published when it won (later
    /// [`proclaim`](super::Leadership::proclaim)s show in
    /// [`observe`](Election::observe), not here).
    pub value: String,
    /// True when leaderships between the previous change and this one may have been
    /// missed: the follower fell more than [`LEADERSHIPS_KEPT`] leaderships behind.
    pub gap_before: bool,
}

/// Every leadership of an election, in term order, as it happens: see
/// [`Election::follow`]. Never contends for the lock.
pub struct Follower {
    election: Election,
    changes: Waiter,
    poll: Duration,
    /// The last term handed out (or skipped at the start).
    after: u64,
    pending: VecDeque<LeaderChange>,
    /// Read at once on the next call, without waiting for an announcement.
    read_now: bool,
    /// A read found that leaderships may have been dropped: the next change says so.
    gap: bool,
    /// Terms the last read showed, not yet confirmed by a read started after it (see the
    /// module's argument).
    unconfirmed: BTreeMap<u64, String>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("election", &self.election.name())
            .field("after", &self.after)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Election {
    /// A follower of this election's leaderships: [`Follower::next`] returns each one, in
    /// term order, none skipped (unless the follower falls more than [`LEADERSHIPS_KEPT`] behind,
    /// which the next change says). The first is the latest leadership when this is
    /// called, if there was one. It follows the election's announcements, reading every
    /// `poll` as a fallback, and never contends for the lock.
    ///
    /// [`observe`](Self::observe) shows who leads now; this shows every leader in turn,
    /// however briefly each led.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// use std::time::Duration;
    /// let mut follower = client.election("scheduler")?.follow(Duration::from_secs(1)).await?;
    /// loop {
    ///     let change = follower.next().await?;
    ///     println!("term {}: {}", change.term, change.value);
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when the first read could not reach a majority.
    pub async fn follow(&self, poll: Duration) -> Result<Follower, Error> {
        let changes = self.client.wakeups().watch(&self.keys.released);
        changes.listen();
        let mut follower = Follower {
            election: self.clone(),
            changes,
            poll: poll.max(Duration::from_millis(10)),
            after: 0,
            pending: VecDeque::new(),
            read_now: false,
            gap: false,
            unconfirmed: BTreeMap::new(),
        };
        follower.changes.mark();
        let (mut log, _) = self.read_log(0).await?;
        if let Some((term, value)) = log.pop_last() {
            follower.after = term.saturating_sub(1);
            follower.pending.push_back(LeaderChange {
                term: FencingToken::new(term),
                value,
                gap_before: false,
            });
        }
        Ok(follower)
    }

    /// The union of the log entries above `after` on a majority of nodes (term to value),
    /// and whether leaderships above `after` may have been dropped from a log read.
    async fn read_log(&self, after: u64) -> Result<(BTreeMap<u64, String>, bool), Error> {
        let nodes = self.client.nodes();
        let n = nodes.len();
        let q = quorum::quorum(n);
        let mut calls = NodeCalls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, keys) = (Arc::clone(node), Arc::clone(&self.keys));
            calls.push(i, async move { node.read_log(&keys, after).await });
        }
        let mut union = BTreeMap::new();
        let mut gap = false;
        let mut read = 0;
        let mut errors: Vec<NodeError> = Vec::new();
        while let Some((_, reply)) = calls.next().await {
            match reply {
                Ok(LogRead {
                    kept,
                    oldest,
                    entries,
                }) => {
                    gap |= kept >= LEADERSHIPS_KEPT && oldest > after.saturating_add(1);
                    for (term, _owner, value) in entries {
                        union.entry(term).or_insert(value);
                    }
                    read += 1;
                    if read >= q {
                        break;
                    }
                }
                Err(e) => {
                    errors.push(e);
                    if errors.len() > n - q {
                        break;
                    }
                }
            }
        }
        nodes.background().finish(calls);
        if read < q {
            return Err(Error::NoQuorum {
                resource: self.name.to_string(),
                step: Step::Inspect,
                granted: 0,
                refused: read,
                failed: errors.len(),
                quorum: q,
                nodes: n,
                errors,
            });
        }
        Ok((union, gap))
    }
}

impl Follower {
    /// The next leadership after the last one returned, waiting for it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a cancelled call loses nothing; the next call returns the same
    /// change.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when a read could not reach a majority. The follower stays
    /// usable: the next call waits for the next announcement or poll, then reads again,
    /// still from where it was.
    pub async fn next(&mut self) -> Result<LeaderChange, Error> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                self.after = change.term.get();
                return Ok(change);
            }
            if !self.read_now {
                let poll = self.poll;
                tokio::select! {
                    () = self.changes.released() => {}
                    () = tokio::time::sleep(poll) => {}
                }
                self.read_now = true;
            }
            // An announcement during the read wakes the next wait.
            self.changes.mark();
            let read = self.election.read_log(self.after).await;
            self.read_now = false;
            let (log, gap) = read?;
            self.gap |= gap;
            for (term, value) in confirmed(&mut self.unconfirmed, log) {
                self.pending.push_back(LeaderChange {
                    term: FencingToken::new(term),
                    value,
                    gap_before: std::mem::take(&mut self.gap),
                });
            }
            self.read_now = !self.unconfirmed.is_empty();
        }
    }

    /// The election followed.
    pub fn election(&self) -> &Election {
        &self.election
    }
}

/// What a follower hands out after a read that came back with `log` (the terms above
/// the last one handed out), given the terms the last read showed and did not confirm
/// (`unconfirmed`): this read started after that one came back, so it confirms every
/// term up to the last read's highest (the module's argument); those are returned, in
/// term order. What it shows beyond stays in `unconfirmed`, for the next read, made at
/// once. The election model (`src/models/election.rs`) runs this with a follower reading
/// node by node.
pub(crate) fn confirmed<V>(
    unconfirmed: &mut BTreeMap<u64, V>,
    log: BTreeMap<u64, V>,
) -> BTreeMap<u64, V> {
    let confirmed_upto = unconfirmed.keys().next_back().copied();
    let mut union = std::mem::take(unconfirmed);
    for (term, value) in log {
        union.entry(term).or_insert(value);
    }
    *unconfirmed = match confirmed_upto {
        Some(upto) => union.split_off(&(upto + 1)),
        None => std::mem::take(&mut union),
    };
    union
}
