//! [`LockGuard`]: a held lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::stream::FuturesUnordered;

use crate::error::{Error, LossReason, Step};
use crate::fence::FencingToken;
use crate::lock::{Client, finish_in_background, no_quorum, run_round};
use crate::quorum::{self, Decision, Vote};
use crate::scripts::Keys;

pub(crate) struct GuardParts {
    pub(crate) client: Client,
    pub(crate) resource: String,
    pub(crate) keys: Arc<Keys>,
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    pub(crate) ttl: Duration,
    /// When the validity runs out, on this process' monotonic clock.
    pub(crate) deadline: Instant,
    pub(crate) validity: Duration,
    pub(crate) ended: Arc<AtomicBool>,
}

/// A held lock. Pass [`token`](Self::token) to every write it protects, stop before
/// [`validity`](Self::validity) runs out (or [`extend`](Self::extend)), and
/// [`release`](Self::release) it when done.
///
/// Dropping it without `release` releases it on a spawned task when a tokio runtime is
/// running (never blocking), and otherwise leaves it to expire with its TTL.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    parts: GuardParts,
    deadline: Mutex<Instant>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("resource", &self.parts.resource)
            .field("token", &self.parts.token)
            .field("ttl", &self.parts.ttl)
            .field("validity", &self.validity())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub(crate) fn new(parts: GuardParts) -> Self {
        Self {
            deadline: Mutex::new(parts.deadline),
            parts,
            released: false,
        }
    }

    /// The fencing token of this acquisition.
    pub fn token(&self) -> FencingToken {
        self.parts.token
    }

    /// The lock name.
    pub fn resource(&self) -> &str {
        &self.parts.resource
    }

    /// The lease asked of the nodes.
    pub fn ttl(&self) -> Duration {
        self.parts.ttl
    }

    /// When exclusivity can no longer be assumed, on the monotonic clock.
    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Time left before [`deadline`](Self::deadline); zero once it has passed.
    pub fn validity(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Validity at the moment the lock was acquired.
    pub fn initial_validity(&self) -> Duration {
        self.parts.validity
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
    ///   when a majority no longer holds this owner's key;
    /// - [`Error::NoQuorum`] when failed nodes kept a quorum out of reach; the lock may
    ///   still be held until [`deadline`](Self::deadline), and a retry may succeed.
    pub async fn extend(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let old_deadline = self.deadline();
        if start >= old_deadline {
            return Err(self.lost(LossReason::ValidityElapsed));
        }
        let p = &self.parts;
        let nodes = p.client.nodes();
        let n = nodes.len();
        let ttl_ms = u64::try_from(p.ttl.as_millis()).unwrap_or(u64::MAX);
        let calls: FuturesUnordered<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, keys, owner) = (Arc::clone(node), Arc::clone(&p.keys), p.owner.clone());
                async move { (i, node.extend(&keys, &owner, ttl_ms).await) }.boxed()
            })
            .collect();
        let (round, pending) = tokio::time::timeout_at(
            old_deadline.into(),
            run_round(calls, n, flag_vote, |t| t.decision() != Decision::Pending),
        )
        .await
        .map_err(|_| self.lost(LossReason::ValidityElapsed))?;
        finish_in_background(pending);
        match round.tally.decision() {
            // The renewed leases started no earlier than `start`, so the new validity
            // counts from there, less the drift allowance.
            Decision::Won => {
                let drift = quorum::drift(p.ttl, p.client.settings().drift_factor);
                let new_deadline = start + p.ttl.saturating_sub(drift);
                if Instant::now() >= old_deadline {
                    return Err(self.lost(LossReason::ValidityElapsed));
                }
                *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = new_deadline;
                Ok(self.validity())
            }
            Decision::Refused => Err(self.lost(LossReason::NotOwner {
                nodes: round.tally.no,
            })),
            Decision::Failed | Decision::Pending => {
                Err(no_quorum(&p.resource, Step::Extend, &round, n))
            }
        }
    }

    fn lost(&self, reason: LossReason) -> Error {
        Error::Lost {
            resource: self.parts.resource.clone(),
            reason,
        }
    }

    /// Deletes the lock on every node (only where this guard still owns it) and says
    /// whether a quorum still held it: `Ok(false)` means the lock had already been lost,
    /// so the critical section may have overlapped another holder's.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when failed nodes kept the answer out of reach; the keys left
    /// behind expire with their TTL.
    pub async fn release(mut self) -> Result<bool, Error> {
        self.released = true;
        self.parts.ended.store(true, Ordering::SeqCst);
        let p = &self.parts;
        let nodes = p.client.nodes();
        let n = nodes.len();
        let calls: FuturesUnordered<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, keys, owner) = (Arc::clone(node), Arc::clone(&p.keys), p.owner.clone());
                async move { (i, node.release(&keys, &owner).await) }.boxed()
            })
            .collect();
        let (round, pending) =
            run_round(calls, n, flag_vote, |t| t.decision() != Decision::Pending).await;
        finish_in_background(pending);
        match round.tally.decision() {
            Decision::Won => Ok(true),
            Decision::Refused => Ok(false),
            Decision::Failed | Decision::Pending => {
                Err(no_quorum(&p.resource, Step::Release, &round, n))
            }
        }
    }
}

fn flag_vote(r: &Result<bool, crate::error::NodeError>) -> Vote {
    match r {
        Ok(true) => Vote::Yes,
        Ok(false) => Vote::No,
        Err(_) => Vote::Failed,
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.parts.ended.store(true, Ordering::SeqCst);
        // Never block here: release on the runtime if there is one, else the TTL expires
        // the keys.
        if tokio::runtime::Handle::try_current().is_ok() {
            let all: Vec<usize> = (0..self.parts.client.nodes().len()).collect();
            self.parts
                .client
                .release_in_background(&all, &self.parts.keys, &self.parts.owner);
        }
    }
}
