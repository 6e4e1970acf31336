//! Leader election: a sibling of the mutex on the lease core. Leadership is a watched
//! lease on the election's lock, won as the mutex is won; **the term is its fencing
//! token**. What is the election's own is the leader record (who leads, in which term,
//! with which value), which observers read without contending.
//!
//! # Why it is safe
//!
//! - **One leader at a time.** Leading is holding the election's lock, which is the
//!   mutex's argument: two holders would need two majorities sharing a node that held
//!   the key for one owner at a time.
//! - **Terms strictly increase** across leaders: the term is the lock's token, committed
//!   on a majority (the mutex's token argument). Pass it to storage writes, and a deposed
//!   leader's late writes are refused by the storage-side fence.
//! - **A leader stops before its successor starts.** Its watchdog renews the lease and
//!   reports a loss over the loss channel before the deadline;
//!   [`Leadership::is_leader`] answers false from the moment the validity is gone or a
//!   loss is published, never after.
//! - **The record never outlives the lease.** The record is written only while the lock
//!   is the writer's (`elect_proclaim.lua`), with at most the lock's remaining lease; it
//!   is renewed with the lock and deleted with it. So a record on a majority, unexpired,
//!   names the owner holding the lock there: [`Election::leader`] reports a leader only
//!   when a majority agree on the record, and its validity is how long that majority
//!   still holds it, less the drift allowance.
//! - **Observers do not contend.** They read records and follow the election's
//!   announcements (a new record, a leadership's end), polling as a fallback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::client::{Client, Watchdog};
use crate::clock;
use crate::core::quorum::{self, Decision, Vote};
use crate::core::{NodeCalls, decided, no_quorum, run_round};
use crate::error::{Error, LossReason, NodeError, Step};
use crate::fence::FencingToken;
use crate::lease::wait::{self, Held, Waiting};
use crate::mutex::{AcquireOptions, AcquirePlan, LockGuard, check_resource, wraps_guard};
use crate::observe::OpSpan;
use crate::scripts::Keys;

pub(crate) mod follow;

pub use follow::{Follower, LeaderChange};

pub use crate::scripts::LEADERSHIPS_KEPT;

/// Longest accepted leader value, in bytes.
pub const MAX_LEADER_VALUE: usize = 4096;

/// An election over the client's nodes. Get one with [`Client::election`]; it is cheap
/// to clone.
///
/// ```no_run
/// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
/// let election = client.election("scheduler")?;
/// let leading = election.campaign("node-7:8080").await?; // waits until this one leads
/// println!("leading in term {}", leading.term());
/// // ... act as the leader while leading.is_leader(), passing leading.term() to writes ...
/// leading.resign().await?; // the next candidate takes over at once
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Election {
    client: Client,
    name: Arc<str>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who leads, as a majority of nodes report it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The value the leader published (say, its address).
    pub value: String,
    /// Its term: its fencing token.
    pub term: FencingToken,
    /// How long, from when it was read, a majority still held the leadership (less the
    /// drift allowance).
    pub validity: Duration,
    /// The leadership's owner id (tells two leaderships with the same value apart).
    owner: String,
}

impl Leader {
    /// A leader as an implementation of the election traits reports it.
    pub(crate) fn new(
        value: String,
        term: FencingToken,
        validity: Duration,
        owner: String,
    ) -> Self {
        Self {
            value,
            term,
            validity,
            owner,
        }
    }

    /// The same leadership and value (validity aside).
    fn same(&self, other: &Leader) -> bool {
        (&self.owner, self.term, &self.value) == (&other.owner, other.term, &other.value)
    }
}

impl Client {
    /// The election `name`; nothing is contacted yet. Its keys are apart from a mutex of
    /// the same name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name.
    pub fn election(&self, name: &str) -> Result<Election, Error> {
        check_resource(name)?;
        Ok(Election {
            client: self.clone(),
            name: name.into(),
            keys: Arc::new(Keys::election(&self.settings().prefix, name)),
        })
    }
}

fn check_value(value: &str) -> Result<(), Error> {
    if value.len() > MAX_LEADER_VALUE {
        return Err(Error::InvalidResource {
            name: value.chars().take(64).collect(),
            reason: "a leader value is at most 4096 bytes",
        });
    }
    Ok(())
}

impl Election {
    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Campaigns until this candidate leads (or the client's wait timeout runs out), then
    /// publishes `value` as the leader's. A watchdog keeps the leadership and reports its
    /// loss.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`]; [`Error::InvalidResource`] for a value over
    /// [`MAX_LEADER_VALUE`] bytes.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn campaign(&self, value: &str) -> Result<Leadership, Error> {
        self.campaign_with(value, AcquireOptions::new()).await
    }

    /// [`campaign`](Self::campaign) with per-call options (its wait, TTL, watchdog).
    ///
    /// # Errors
    ///
    /// As [`campaign`](Self::campaign), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn campaign_with(
        &self,
        value: &str,
        options: AcquireOptions,
    ) -> Result<Leadership, Error> {
        check_value(value)?;
        let s = self.client.settings();
        let plan = self.client.plan(&options, s.watchdog)?;
        let waiting = Waiting {
            wakeups: self.client.wakeups(),
            counters: self.client.nodes().counters(),
            channel: &self.keys.released,
            resource: &self.name,
            wait: options.wait.unwrap_or(s.wait),
            retry_delay: s.retry_delay,
            retry_jitter: s.retry_jitter,
        };
        wait::until_won(waiting, || self.attempt(value, &plan)).await
    }

    /// One attempt to lead: `Ok(None)` when another candidate leads.
    ///
    /// # Errors
    ///
    /// As [`campaign_with`](Self::campaign_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_campaign_with(
        &self,
        value: &str,
        options: AcquireOptions,
    ) -> Result<Option<Leadership>, Error> {
        check_value(value)?;
        let plan = self.client.plan(&options, Watchdog::Off)?;
        self.attempt(value, &plan).await
    }

    /// Who leads now, read from every node: `None` when no majority agrees on a leader
    /// (none, or a hand-over under way).
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when too many nodes failed to tell.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        let nodes = self.client.nodes();
        let n = nodes.len();
        let q = quorum::quorum(n);
        let start = clock::now();
        let mut calls = NodeCalls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, keys) = (Arc::clone(node), Arc::clone(&self.keys));
            calls.push(i, async move { node.read_leader(&keys).await });
        }
        let mut records: HashMap<(String, u64, String), Vec<Duration>> = HashMap::new();
        let mut errors: Vec<NodeError> = Vec::new();
        let mut found = None;
        while let Some((_, reply)) = calls.next().await {
            match reply {
                Ok(Some((owner, term, value, left))) => {
                    let key = (owner, term, value);
                    let lefts = records.entry(key.clone()).or_default();
                    lefts.push(left);
                    if lefts.len() >= q {
                        found = Some((key, lefts.clone()));
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        nodes.background().finish(calls);
        if let Some(((owner, term, value), mut lefts)) = found {
            // Held by the majority until the q-th longest lease among them runs out.
            lefts.sort_unstable_by(|a, b| b.cmp(a));
            let held = lefts.get(q - 1).copied().unwrap_or_default();
            let validity = held
                .saturating_sub(nodes.drift(held))
                .saturating_sub(clock::since(start));
            return Ok(Some(Leader {
                value,
                term: FencingToken::new(term),
                validity,
                owner,
            }));
        }
        if errors.len() > n - q {
            return Err(Error::NoQuorum {
                resource: self.name.to_string(),
                step: Step::Inspect,
                granted: 0,
                refused: n - errors.len(),
                failed: errors.len(),
                quorum: q,
                nodes: n,
                errors,
            });
        }
        Ok(None)
    }

    /// A receiver of the current leader, kept up to date by a task that reads
    /// [`leader`](Self::leader) whenever the election announces a change (a new record, a
    /// leadership's end) and, as a fallback, every `poll`. It never contends for the
    /// lock. The task ends when every receiver is dropped.
    ///
    /// The first value is read before this returns. Each update is a different
    /// leadership or value; a hand-over shows as `None` in between when observed then.
    ///
    /// # Errors
    ///
    /// As [`leader`](Self::leader), for the first read.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn observe(&self, poll: Duration) -> Result<watch::Receiver<Option<Leader>>, Error> {
        let mut releases = self.client.wakeups().watch(&self.keys.released);
        releases.listen();
        releases.mark();
        let first = self.leader().await?;
        let (tx, rx) = watch::channel(first);
        let election = self.clone();
        let poll = poll.max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = releases.released() => {}
                    () = tokio::time::sleep(poll) => {}
                }
                // Before the read: an announcement that arrives while it runs (the
                // record reaching the rest of the majority) wakes the next wait.
                releases.mark();
                // A failed read keeps the last known leader until the next one.
                let Ok(now) = election.leader().await else {
                    continue;
                };
                tx.send_if_modified(|cur| {
                    let changed = match (&*cur, &now) {
                        (Some(a), Some(b)) => !a.same(b),
                        (None, None) => false,
                        _ => true,
                    };
                    if changed {
                        cur.clone_from(&now);
                    }
                    changed
                });
            }
        });
        Ok(rx)
    }

    /// One attempt: the mutex's, on the election's lock (the token is the term), then the
    /// record published on a majority.
    async fn attempt(&self, value: &str, plan: &AcquirePlan) -> Result<Option<Leadership>, Error> {
        let Some(guard) = self.client.attempt(&self.name, &self.keys, plan).await? else {
            return Ok(None);
        };
        let leading = Leadership {
            guard,
            value: Mutex::new(value.to_owned()),
        };
        if let Err(e) = leading.publish(value).await {
            // Not a leader nobody can see: step down (best effort; the keys expire).
            let _ = leading.resign().await;
            return Err(e);
        }
        Ok(Some(leading))
    }
}

/// This candidate's leadership: a watched lease on the election's lock. Derefs to a
/// [`LockGuard`] (validity, watchdog, `lost`); its [`term`](Self::term) is the token.
#[must_use = "the leadership ends as soon as it is dropped"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    value: Mutex<String>,
}

wraps_guard!(Leadership, "leadership");

impl Leadership {
    /// The term: strictly increasing across leaders. Pass it to every write the leader
    /// makes, as a fencing token.
    pub fn term(&self) -> FencingToken {
        self.guard.token()
    }

    /// True while this leadership is valid: false from the moment its validity ran out
    /// or its loss was published (never true again).
    pub fn is_leader(&self) -> bool {
        !self.guard.validity().is_zero()
    }

    /// The value published for this leadership.
    pub fn value(&self) -> String {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a new value for this leadership, without an election; observers see it.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when this is no longer the leader; [`Error::NoQuorum`] when failed
    /// nodes kept a majority out of reach (the old value may still show);
    /// [`Error::InvalidResource`] for a value over [`MAX_LEADER_VALUE`] bytes.
    ///
    /// # Cancel safety
    ///
    /// Not atomic when dropped: the new value may then be on some nodes only, and
    /// [`Election::leader`] reports whichever value a majority agree on, or no leader
    /// while neither has a majority, until a later proclamation (or the leadership's end).
    /// Nothing else is affected.
    pub async fn proclaim(&self, value: &str) -> Result<(), Error> {
        check_value(value)?;
        self.publish(value).await?;
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = value.to_owned();
        Ok(())
    }

    /// Steps down: releases the leadership, which announces it, so the next candidate
    /// and every observer look at once. `Ok(false)` means it had already been lost.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a release dropped mid-way still releases, from the guard's drop, in the
    /// background (`tests/cancel.rs`).
    pub async fn resign(self) -> Result<bool, Error> {
        self.release().await
    }

    /// Writes the record on every node while the lock is ours, decided at a majority.
    async fn publish(&self, value: &str) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.lost_error(LossReason::ValidityElapsed));
        }
        let lease = self.guard.lease();
        let nodes = lease.nodes();
        let n = nodes.len();
        let term = lease.token().get();
        let mut calls = NodeCalls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, keys, owner) = (
                Arc::clone(node),
                Arc::clone(lease.keys()),
                lease.owner().clone(),
            );
            let value = value.to_owned();
            calls.push(i, async move {
                node.proclaim(&keys, &owner, term, &value).await
            });
        }
        let vote = |r: &Result<bool, NodeError>| match r {
            Ok(true) => Vote::Yes,
            Ok(false) => Vote::No,
            Err(_) => Vote::Failed,
        };
        let span = OpSpan::proclaim(self.resource());
        let (round, pending) = span
            .token(term)
            .run(run_round(calls, n, vote, decided, Some(self.deadline())))
            .await;
        span.outcome(match round.tally.decision() {
            Decision::Won => "published",
            Decision::Refused => "not_owner",
            Decision::Failed | Decision::Pending => "no_quorum",
        });
        nodes.background().finish(pending);
        match round.tally.decision() {
            Decision::Won => Ok(()),
            Decision::Refused => Err(self.lost_error(LossReason::NotOwner {
                nodes: round.tally.no,
            })),
            Decision::Failed | Decision::Pending => {
                Err(no_quorum(self.resource(), Step::Proclaim, &round, n))
            }
        }
    }

    fn lost_error(&self, reason: LossReason) -> Error {
        Error::Lost {
            resource: self.resource().to_owned(),
            reason,
        }
    }
}
