//! [`LockState`]: what a held lease is doing, as its handle's state channel reports it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use crate::error::LossReason;

/// What a lock is doing now, as its guard's [`state`](crate::LockGuard::state) channel reports it.
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

/// A lease's state, with a watch channel made on the first subscription: most leases are
/// never watched (a job holding one lock per task checks nothing but its token), and a
/// channel costs a few hundred bytes per lease. Changes and subscriptions take one lock,
/// so a subscriber sees every change made after it subscribed.
#[derive(Debug)]
pub(crate) struct StateCell(Mutex<(LockState, Option<watch::Sender<LockState>>)>);

impl StateCell {
    pub(crate) fn new(state: LockState) -> Self {
        Self(Mutex::new((state, None)))
    }

    fn lock(&self) -> MutexGuard<'_, (LockState, Option<watch::Sender<LockState>>)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `f` of the state now.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&LockState) -> R) -> R {
        f(&self.lock().0)
    }

    /// Lets `f` change the state; when it says it did, subscribers are told. Returns
    /// what `f` said.
    pub(crate) fn send_if_modified(&self, f: impl FnOnce(&mut LockState) -> bool) -> bool {
        let mut cell = self.lock();
        let (state, sender) = &mut *cell;
        let changed = f(state);
        if changed && let Some(tx) = sender {
            tx.send_replace(state.clone());
        }
        changed
    }

    /// A receiver of every state from now on (the channel closes with the lease).
    pub(crate) fn subscribe(&self) -> watch::Receiver<LockState> {
        let mut cell = self.lock();
        let (state, sender) = &mut *cell;
        sender
            .get_or_insert_with(|| watch::Sender::new(state.clone()))
            .subscribe()
    }
}
