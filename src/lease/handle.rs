//! [`LeaseHandle`]: the owner's side of a held lease (token, validity, state, loss,
//! extend, release, and release on drop), which every primitive's public handle wraps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::watchdog::{WatchdogTask, loss_margin};
use super::{Extension, Lease, LockState};
use crate::clock;
use crate::error::{Error, LossReason};
use crate::fence::FencingToken;
use crate::node::Announce;
use crate::scripts::Keys;

/// The owner's side of a held lease. Dropping it without [`release`](Self::release)
/// stops its watchdog and releases on a spawned task when a runtime runs (never
/// blocking), else leaves the keys to expire with their TTL.
pub(crate) struct LeaseHandle {
    lease: Arc<Lease>,
    watchdog: Option<WatchdogTask>,
    released: bool,
}

impl std::fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHandle")
            .field("resource", &self.lease.resource)
            .field("token", &self.lease.token)
            .field("ttl", &self.lease.ttl)
            .field("state", &self.lease.state.with(LockState::clone))
            .field("watchdog", &self.watchdog.is_some())
            .finish_non_exhaustive()
    }
}

impl LeaseHandle {
    /// The state in a few words, for `Debug`: held, lost (and why), or released.
    pub(crate) fn summary(&self) -> String {
        self.lease.state.with(|s| match s {
            LockState::Held { .. } => "held".to_owned(),
            LockState::Lost { reason, .. } => format!("lost: {reason}"),
            LockState::Released => "released".to_owned(),
        })
    }

    pub(crate) fn new(lease: Arc<Lease>, watchdog: Option<WatchdogTask>) -> Self {
        Self {
            lease,
            watchdog,
            released: false,
        }
    }

    /// The fencing token of this acquisition.
    pub(crate) fn token(&self) -> FencingToken {
        self.lease.token
    }

    /// The owner id the nodes hold.
    pub(crate) fn owner(&self) -> &Arc<str> {
        &self.lease.owner
    }

    /// The nodes the lease is held on.
    pub(crate) fn nodes(&self) -> &crate::core::Nodes {
        &self.lease.nodes
    }

    /// The keys the lease holds.
    pub(crate) fn keys(&self) -> &Arc<Keys> {
        &self.lease.keys
    }

    /// A set's other resources' tokens, in `Keys::rest` order.
    pub(crate) fn rest_tokens(&self) -> &[FencingToken] {
        &self.lease.rest_tokens
    }

    /// The lock name.
    pub(crate) fn resource(&self) -> &str {
        &self.lease.resource
    }

    /// The lease asked of the nodes.
    pub(crate) fn ttl(&self) -> Duration {
        self.lease.ttl
    }

    /// When exclusivity can no longer be assumed, on [`redfence::now`](crate::now)'s clock
    /// (the monotonic clock plus time spent suspended): compare it with that, not with
    /// `Instant::now()`. Extensions move it forward.
    pub(crate) fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// Time left before [`deadline`](Self::deadline); zero once it has passed or the lock
    /// was lost.
    pub(crate) fn validity(&self) -> Duration {
        if self.lease.is_over() {
            return Duration::ZERO;
        }
        self.deadline().saturating_duration_since(clock::now())
    }

    /// Validity at the moment the lock was acquired.
    pub(crate) fn initial_validity(&self) -> Duration {
        self.lease.initial_validity
    }

    /// True while a watchdog keeps extending this lock.
    pub(crate) fn has_watchdog(&self) -> bool {
        self.watchdog.is_some()
    }

    /// A receiver of the lock's state: held (with its deadline), lost (with the reason and
    /// time), or released. The watchdog and [`extend`](Self::extend) publish to it.
    pub(crate) fn state(&self) -> watch::Receiver<LockState> {
        self.lease.state.subscribe()
    }

    /// Resolves when the lock is lost, with the reason: when the watchdog (or an
    /// [`extend`](Self::extend)) reports a loss, or, without a watchdog, when the validity
    /// runs out; with [`LossReason::Released`] once the lock is released.
    pub(crate) async fn lost(&self) -> LossReason {
        let mut rx = self.lease.state.subscribe();
        // The backstop publishes a margin ahead of the deadline, like the watchdog; with a
        // watchdog it waits for half that margin so the watchdog, which knows the reason
        // (say, which nodes timed out), publishes first.
        let margin = loss_margin(self.lease.ttl);
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
                LockState::Released => return LossReason::Released,
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
                    self.lease.publish_lost(LossReason::ValidityElapsed);
                }
            }
        }
    }

    /// Renews the lease on every node for another TTL and returns the new validity,
    /// counted from the start of this call.
    pub(crate) async fn extend(&self) -> Result<Duration, Error> {
        self.extend_for(self.lease.ttl).await
    }

    /// [`extend`](Self::extend) with a lease of `ttl` (checked by the caller) instead of
    /// the acquisition's.
    pub(crate) async fn extend_for(&self, ttl: Duration) -> Result<Duration, Error> {
        let s = &self.lease;
        match s.extend_until(s.deadline(), ttl).await {
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
    pub(crate) async fn release(mut self) -> Result<bool, Error> {
        if let Some(w) = self.watchdog.take() {
            // Stopped before the release is sent, and awaited: when this returns, the
            // watchdog is gone.
            w.stop().await;
        }
        let result = self.lease.release().await;
        // Only now: if this future is dropped before the release is done, Drop releases.
        self.released = true;
        result
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        // Dropping the handle aborts the watchdog task.
        self.watchdog.take();
        if self.released {
            return;
        }
        self.lease.ledger.end();
        self.lease.mark_released();
        // Never block here: release on the runtime if there is one, else the TTL expires
        // the keys.
        if tokio::runtime::Handle::try_current().is_ok() {
            let s = &self.lease;
            let all: Vec<usize> = (0..s.nodes.len()).collect();
            s.nodes.release_in_background(
                &all,
                &s.keys,
                &s.owner,
                Announce::Waiters,
                Arc::clone(&s.ledger),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::{Nodes, ReleaseLedger};
    use crate::lease::LeaseParts;
    use crate::scripts::Keys;

    /// A lease over no nodes: enough to drive its state by hand.
    fn handle() -> LeaseHandle {
        let now = clock::now();
        let lease = Lease::new(LeaseParts {
            nodes: Nodes::new(Vec::new(), 0.01),
            resource: "r".into(),
            keys: Arc::new(Keys::new("test", "r")),
            owner: "owner".into(),
            token: FencingToken::new(1),
            rest_tokens: Box::default(),
            ttl: Duration::from_secs(60),
            acquired_at: now,
            deadline: now + Duration::from_secs(59),
            ledger: Arc::new(ReleaseLedger::new(0, Duration::from_secs(1))),
        });
        LeaseHandle::new(Arc::new(lease), None)
    }

    /// `lost()` answers `Released` for a released lease, and wakes a waiter when the
    /// release comes while it waits: a `select!` on it cannot hang.
    #[tokio::test]
    async fn lost_resolves_on_release() {
        let h = handle();
        let lease = Arc::clone(&h.lease);
        let (reason, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), h.lost()),
            async {
                tokio::task::yield_now().await;
                lease.mark_released();
            }
        );
        assert_eq!(reason, Ok(LossReason::Released));
        assert_eq!(h.lost().await, LossReason::Released);
        assert_eq!(h.summary(), "released");
    }
}
