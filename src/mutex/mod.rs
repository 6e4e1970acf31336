//! The mutex, the first primitive on the lease core: one acquisition attempt
//! ([`Client::try_acquire`], in `attempt`), the waiting loop ([`Client::acquire`]), the
//! scoped runner ([`Client::run`]) and the [`LockGuard`].

use std::sync::Arc;
use std::time::Duration;

mod attempt;
mod guard;

pub use guard::LockGuard;
pub(crate) use guard::{check_extension, wraps_guard};

use crate::client::{Client, Watchdog};
use crate::error::Error;
use crate::lease::wait::{self, Waiting};
use crate::lease::watchdog;
use crate::scripts::Keys;

/// Longest accepted resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 1024;

/// Per-call settings for [`Client::acquire_with`] and friends; unset fields use the
/// client's.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AcquireOptions {
    /// Lease to ask for instead of the client's TTL.
    pub ttl: Option<Duration>,
    /// How long to keep trying instead of the client's wait timeout.
    pub wait: Option<Duration>,
    /// Whether a watchdog keeps the lock alive (default: the client's
    /// [`watchdog`](crate::ClientBuilder::watchdog) for `acquire`, off for `try_acquire`).
    pub watchdog: Option<Watchdog>,
    /// The watchdog's maximum hold time instead of the client's.
    pub max_hold: Option<Duration>,
}

impl AcquireOptions {
    /// Client defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lease; see [`ClientBuilder::ttl`](crate::ClientBuilder::ttl).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the wait; see [`ClientBuilder::wait`](crate::ClientBuilder::wait).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Turns the watchdog on or off (a [`Watchdog`] or a `bool`); see
    /// [`ClientBuilder::watchdog`](crate::ClientBuilder::watchdog).
    #[must_use]
    pub fn watchdog(mut self, watchdog: impl Into<Watchdog>) -> Self {
        self.watchdog = Some(watchdog.into());
        self
    }

    /// Sets the maximum hold time; see [`ClientBuilder::max_hold`](crate::ClientBuilder::max_hold).
    #[must_use]
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = Some(max);
        self
    }
}

/// One acquisition's resolved settings.
pub(crate) struct AcquirePlan {
    pub(crate) ttl: Duration,
    pub(crate) watchdog: Option<watchdog::Schedule>,
}

impl Client {
    /// One attempt to take `resource`, on all nodes at once.
    ///
    /// Returns `Ok(None)` when other owners hold it on enough nodes to rule out a quorum.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidResource`] for an empty or over-long name;
    /// - [`Error::NoQuorum`] when failed nodes (down, paused, erroring) made the
    ///   difference, with each node's cause;
    /// - [`Error::NoValidity`] when the attempt took so long that no validity was left.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_acquire(&self, resource: &str) -> Result<Option<LockGuard>, Error> {
        self.try_acquire_with(resource, AcquireOptions::new()).await
    }

    /// [`try_acquire`](Self::try_acquire) with per-call options (the watchdog is off
    /// unless the options turn it on).
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_acquire_with(
        &self,
        resource: &str,
        options: AcquireOptions,
    ) -> Result<Option<LockGuard>, Error> {
        check_resource(resource)?;
        let plan = self.plan(&options, Watchdog::Off)?;
        let keys = Arc::new(Keys::new(&self.settings().prefix, resource));
        self.attempt(resource, &keys, &plan).await
    }

    /// Takes `resource`, retrying for up to the client's wait timeout. Unless turned off
    /// ([`ClientBuilder::watchdog`](crate::ClientBuilder::watchdog)), a watchdog
    /// then keeps it alive and reports its loss on the guard's
    /// [`state`](LockGuard::state) channel.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let guard = client.acquire("invoices").await?;
    /// println!("token {}, valid for {:?}", guard.token(), guard.validity());
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WaitTimeout`] when the wait ran out, carrying the last attempt's error (or
    /// none, if the lock was simply held); [`Error::InvalidResource`];
    /// [`Error::NoQuorum`] at once when nodes failing for a lasting reason
    /// (authentication, permission, a read-only node, a key of the wrong type) are enough
    /// on their own to rule out a quorum (a minority of them only costs retries).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn acquire(&self, resource: &str) -> Result<LockGuard, Error> {
        self.acquire_with(resource, AcquireOptions::new()).await
    }

    /// [`acquire`](Self::acquire) with an explicit wait.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    #[deprecated(
        since = "0.1.0",
        note = "use `acquire_with(resource, AcquireOptions::new().wait(wait))`: one name per setting"
    )]
    pub async fn acquire_timeout(
        &self,
        resource: &str,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        self.acquire_with(resource, AcquireOptions::new().wait(wait))
            .await
    }

    /// [`acquire`](Self::acquire) with per-call options.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn acquire_with(
        &self,
        resource: &str,
        options: AcquireOptions,
    ) -> Result<LockGuard, Error> {
        check_resource(resource)?;
        let s = &self.settings();
        let plan = self.plan(&options, s.watchdog)?;
        let keys = Arc::new(Keys::new(&s.prefix, resource));
        let waiting = Waiting {
            wakeups: self.wakeups(),
            counters: self.nodes().counters(),
            channel: &keys.released,
            resource,
            wait: options.wait.unwrap_or(s.wait),
            retry_delay: s.retry_delay,
            retry_jitter: s.retry_jitter,
        };
        wait::until_won(waiting, || self.attempt(resource, &keys, &plan)).await
    }

    /// Runs `work` under the lock: acquires `resource` (waiting as
    /// [`acquire`](Self::acquire) does) with a watchdog, runs `work` with the guard, and
    /// releases. If the lock is lost first, `work` is cancelled (dropped at its current
    /// `.await`) and the loss is returned, so a critical section stops before another
    /// holder can start.
    ///
    /// `work` may borrow from its surroundings: there is no `'static` bound.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let rows = client
    ///     .run("nightly-report", async |guard| {
    ///         // ... pass guard.token() to every write ...
    ///         42
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); [`Error::Lost`] when the lock was lost before `work`
    /// finished (or, found at release, while it ran).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future cancels `work` at its current `.await` and releases
    /// the lock (from the guard's drop), as a loss does.
    pub async fn run<T>(
        &self,
        resource: &str,
        work: impl AsyncFnOnce(&LockGuard) -> T,
    ) -> Result<T, Error> {
        self.run_with(resource, AcquireOptions::new(), work).await
    }

    /// [`run`](Self::run) with per-call options (the watchdog is always on).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future cancels `work` at its current `.await` and releases
    /// the lock (from the guard's drop), as a loss does.
    pub async fn run_with<T>(
        &self,
        resource: &str,
        options: AcquireOptions,
        work: impl AsyncFnOnce(&LockGuard) -> T,
    ) -> Result<T, Error> {
        let guard = self
            .acquire_with(resource, options.watchdog(Watchdog::On))
            .await?;
        let not_owner = self.nodes().len() + 1 - self.quorum();
        wait::scoped(guard, not_owner, work).await
    }

    pub(crate) fn plan(
        &self,
        options: &AcquireOptions,
        watchdog_default: Watchdog,
    ) -> Result<AcquirePlan, Error> {
        let s = &self.settings();
        let ttl = options.ttl.unwrap_or(s.ttl);
        s.check_ttl(ttl)?;
        let watchdog = if options.watchdog.unwrap_or(watchdog_default) == Watchdog::On {
            let max_hold = options.max_hold.or(s.max_hold);
            Some(s.watchdog_plan(ttl, max_hold)?)
        } else {
            None
        };
        Ok(AcquirePlan { ttl, watchdog })
    }
}

pub(crate) fn check_resource(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_RESOURCE_LEN {
        "it is longer than 1024 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidResource {
        name: name.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_checked() {
        assert!(check_resource("").is_err());
        assert!(check_resource(&"x".repeat(MAX_RESOURCE_LEN + 1)).is_err());
        check_resource("{weird}%name").unwrap();
    }
}
