//! [`LockGuard`]: a held mutex, the public face of its lease.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client::MAX_TTL;
use crate::error::{ConfigError, Error, LossReason};
use crate::fence::FencingToken;
use crate::lease::wait::Held;
use crate::lease::{LeaseHandle, LockState};

/// A held lock. Pass [`token`](Self::token) to every write it protects, stop before
/// [`validity`](Self::validity) runs out (or [`extend`](Self::extend), or let the
/// watchdog do it), and [`release`](Self::release) it when done.
///
/// Dropping it without `release` stops its watchdog and releases the lock on a spawned
/// task when a tokio runtime is running (never blocking), and otherwise leaves it to
/// expire with its TTL.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard(LeaseHandle);

/// Token, resource, validity left and state; no raw clock readings.
impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("token", &self.token())
            .field("resource", &self.resource())
            .field("validity", &self.validity())
            .field("state", &self.0.summary())
            .field("watchdog", &self.has_watchdog())
            .finish()
    }
}

impl Held for LockGuard {
    fn lease(&self) -> &LeaseHandle {
        &self.0
    }

    fn into_lease(self) -> LeaseHandle {
        self.0
    }
}

impl LockGuard {
    pub(crate) fn new(handle: LeaseHandle) -> Self {
        Self(handle)
    }

    /// The fencing token of this acquisition.
    pub fn token(&self) -> FencingToken {
        self.0.token()
    }

    /// The lock name.
    pub fn resource(&self) -> &str {
        self.0.resource()
    }

    /// The lease asked of the nodes.
    pub fn ttl(&self) -> Duration {
        self.0.ttl()
    }

    /// When exclusivity can no longer be assumed, on [`redfence::now`](crate::now)'s clock
    /// (the monotonic clock plus time spent suspended): compare it with that, not with
    /// `Instant::now()`. Extensions move it forward.
    pub fn deadline(&self) -> Instant {
        self.0.deadline()
    }

    /// Time left before [`deadline`](Self::deadline); zero once it has passed or the lock
    /// was lost.
    pub fn validity(&self) -> Duration {
        self.0.validity()
    }

    /// Validity at the moment the lock was acquired.
    pub fn initial_validity(&self) -> Duration {
        self.0.initial_validity()
    }

    /// True while a watchdog keeps extending this lock.
    pub fn has_watchdog(&self) -> bool {
        self.0.has_watchdog()
    }

    /// A receiver of the lock's state: held (with its deadline), lost (with the reason and
    /// time), or released. The watchdog and [`extend`](Self::extend) publish to it.
    pub fn state(&self) -> watch::Receiver<LockState> {
        self.0.state()
    }

    /// Resolves when the lock is lost, with the reason: when the watchdog (or an
    /// [`extend`](Self::extend)) reports a loss, or, without a watchdog, when the validity
    /// runs out. A released lock answers [`LossReason::Released`] at once (not a loss),
    /// so nothing waiting on it waits forever.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let guard = client.acquire("report").await?; // with a watchdog by default
    /// tokio::select! {
    ///     reason = guard.lost() => eprintln!("lock lost ({reason}); stopping"),
    ///     () = async { /* long critical section */ } => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only watches the lease's state.
    pub async fn lost(&self) -> LossReason {
        self.0.lost().await
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
    ///   when a majority no longer holds this owner's key; the loss is also published on
    ///   the [`state`](Self::state) channel;
    /// - [`Error::NoQuorum`] when failed nodes kept a quorum out of reach; the lock may
    ///   still be held until [`deadline`](Self::deadline), and a retry may succeed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped extension leaves the guard's validity as it was (it only moves
    /// forward when a round completes); nodes that did renew keep the key longer, never
    /// shorter.
    pub async fn extend(&self) -> Result<Duration, Error> {
        self.0.extend().await
    }

    /// [`extend`](Self::extend) with a lease of `ttl` instead of the one it was acquired
    /// with: the deadline moves to `ttl` (less the drift allowance) after the start of
    /// this call, unless it is already later. Later extensions (and the watchdog) go back
    /// to the acquisition's TTL.
    ///
    /// # Errors
    ///
    /// As [`extend`](Self::extend), and [`Error::Config`] for a zero `ttl` or one above
    /// [`MAX_TTL`](crate::MAX_TTL) (nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped extension leaves the guard's validity as it was (it only moves
    /// forward when a round completes); nodes that did renew keep the key longer, never
    /// shorter.
    pub async fn extend_for(&self, ttl: Duration) -> Result<Duration, Error> {
        check_extension(ttl)?;
        self.0.extend_for(ttl).await
    }

    /// Stops the watchdog, deletes the lock on every node (only where this guard still
    /// owns it) and says whether a quorum still held it: `Ok(false)` means the lock had
    /// already been lost, so the critical section may have overlapped another holder's.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when failed nodes kept the answer out of reach; the keys left
    /// behind expire with their TTL.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a release dropped mid-way still releases, from the guard's drop, in the
    /// background (`tests/cancel.rs`).
    pub async fn release(self) -> Result<bool, Error> {
        self.0.release().await
    }
}

/// A lease asked of an extension: above zero, at most [`MAX_TTL`].
pub(crate) fn check_extension(ttl: Duration) -> Result<(), Error> {
    if ttl.is_zero() {
        return Err(ConfigError::Zero { setting: "ttl" }.into());
    }
    if ttl > MAX_TTL {
        return Err(ConfigError::TooLarge {
            setting: "ttl",
            value: ttl,
            max: MAX_TTL,
        }
        .into());
    }
    Ok(())
}

/// A primitive's held lease that is a [`LockGuard`] with more to say (a permit's slot, a
/// reader's side): derefs to the guard (token, validity, extend, `lost`), and has the
/// guard's `release` and an `into_guard`. The type needs a `guard: LockGuard` field.
macro_rules! wraps_guard {
    ($t:ident, $what:literal) => {
        impl std::ops::Deref for $t {
            type Target = $crate::LockGuard;

            fn deref(&self) -> &$crate::LockGuard {
                &self.guard
            }
        }

        impl $crate::lease::wait::Held for $t {
            fn lease(&self) -> &$crate::lease::LeaseHandle {
                $crate::lease::wait::Held::lease(&self.guard)
            }

            fn into_lease(self) -> $crate::lease::LeaseHandle {
                $crate::lease::wait::Held::into_lease(self.guard)
            }
        }

        impl $t {
            #[doc = concat!("Releases the ", $what, "; as [`LockGuard::release`]: `Ok(false)` means it had")]
            /// already been lost.
            ///
            /// # Errors
            ///
            /// [`Error::NoQuorum`](crate::Error::NoQuorum) when failed nodes kept the
            /// answer out of reach; what is left behind expires with its TTL.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: a release dropped mid-way still releases, from the guard's drop, in the
            /// background (`tests/cancel.rs`).
            pub async fn release(self) -> Result<bool, $crate::Error> {
                self.guard.release().await
            }

            #[doc = concat!("The ", $what, " as a plain guard.")]
            pub fn into_guard(self) -> $crate::LockGuard {
                self.guard
            }
        }
    };
}
pub(crate) use wraps_guard;
