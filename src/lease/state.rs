//! [`LockState`]: what a held lease is doing, as its handle's state channel reports it.

use std::time::Instant;

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
