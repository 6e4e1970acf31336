//! The mutex, the first primitive on the lease core: one acquisition attempt
//! ([`Client::try_acquire`], in `attempt`), the waiting loop ([`Client::acquire`]), the
//! scoped runner ([`Client::run`]) and the [`LockGuard`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

mod attempt;
mod guard;

pub use guard::LockGuard;
pub(crate) use guard::check_extension;

use crate::client::{Client, Watchdog};
use crate::error::{Error, LossReason};
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
    pub async fn try_acquire(&self, resource: &str) -> Result<Option<LockGuard>, Error> {
        self.try_acquire_with(resource, AcquireOptions::new()).await
    }

    /// [`try_acquire`](Self::try_acquire) with per-call options (the watchdog is off
    /// unless the options turn it on).
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire), plus [`Error::Config`] for a bad option.
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
    pub async fn acquire_with(
        &self,
        resource: &str,
        options: AcquireOptions,
    ) -> Result<LockGuard, Error> {
        check_resource(resource)?;
        let s = &self.settings();
        let plan = self.plan(&options, s.watchdog)?;
        let wait = options.wait.unwrap_or(s.wait);
        let keys = Arc::new(Keys::new(&s.prefix, resource));
        let start = Instant::now();
        // Woken by any node announcing a release of this resource; the jittered retry
        // delay runs alongside for expiries, lost messages and nodes without pub/sub.
        let mut releases = self.wakeups().watch(&keys.released);
        // This client's waiters of the resource go one at a time, in arrival order.
        let Ok(_turn) = tokio::time::timeout(wait, releases.turn()).await else {
            return Err(Error::WaitTimeout {
                resource: resource.to_owned(),
                waited: start.elapsed(),
                attempts: 0,
                last_error: None,
            });
        };
        let mut attempts = 0;
        let last_error = loop {
            attempts += 1;
            releases.mark();
            let last = match self.attempt(resource, &keys, &plan).await {
                Ok(Some(guard)) => return Ok(guard),
                Ok(None) => None,
                Err(e) if retryable(&e) => Some(e),
                Err(e) => return Err(e),
            };
            let Some(left) = wait.checked_sub(start.elapsed()).filter(|l| !l.is_zero()) else {
                break last;
            };
            // Subscribed only now that there is something to wait for; a release before
            // the subscription is in place is covered by the wake-up that follows it.
            releases.listen();
            let pause = jittered(s.retry_delay, s.retry_jitter).min(left);
            // No sleep after a wake-up: tokio's timers tick in milliseconds, so even a
            // sub-millisecond spread would cost a whole tick. The client's own waiters
            // already take turns (one attempt per release); a split vote with another
            // client falls back to the jittered delay above.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = releases.released() => {}
            }
        };
        Err(Error::WaitTimeout {
            resource: resource.to_owned(),
            waited: start.elapsed(),
            attempts,
            last_error: last_error.map(Box::new),
        })
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
    pub async fn run_with<T>(
        &self,
        resource: &str,
        options: AcquireOptions,
        work: impl AsyncFnOnce(&LockGuard) -> T,
    ) -> Result<T, Error> {
        let guard = self
            .acquire_with(resource, options.watchdog(Watchdog::On))
            .await?;
        let outcome = {
            let work = work(&guard);
            tokio::select! {
                // On a tie the loss wins: never report success for work that overran.
                biased;
                reason = guard.lost() => Err(reason),
                value = work => Ok(value),
            }
        };
        // `work` is dropped by now, so nothing of it runs after the release.
        let lost = |reason| Error::Lost {
            resource: resource.to_owned(),
            reason,
        };
        // Work that finished past the deadline (a runtime too busy for the watchdog to run,
        // or work that blocked inside a poll) overran the lock, whatever release says.
        let outcome = match outcome {
            Ok(_) if guard.validity().is_zero() => Err(LossReason::ValidityElapsed),
            other => other,
        };
        match outcome {
            Ok(value) => match guard.release().await {
                // Release failures leave keys to expire; the watchdog had proven the lock
                // held until the work finished, so the value stands.
                Ok(true) | Err(_) => Ok(value),
                Ok(false) => Err(lost(LossReason::NotOwner {
                    nodes: self.nodes().len() + 1 - self.quorum(),
                })),
            },
            Err(reason) => {
                // Best effort: the keys expire anyway.
                let _ = guard.release().await;
                Err(lost(reason))
            }
        }
    }

    fn plan(
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

/// Whether `acquire` should try again after this error.
///
/// A lasting error (a read-only or misconfigured node, a permission, a key of the wrong
/// type) ends the wait only when the nodes failing that way are enough, on their own, to
/// rule out a quorum. One such node among three is no reason to stop: the round it helped
/// lose may have been lost to another owner's key as well, and the other two nodes grant
/// once that key is gone.
fn retryable(e: &Error) -> bool {
    match e {
        Error::NoQuorum {
            errors,
            nodes,
            quorum,
            ..
        } => {
            let lasting = errors.iter().filter(|e| !e.kind().is_transient()).count();
            lasting <= nodes - quorum
        }
        Error::NoValidity { .. } => true,
        _ => false,
    }
}

fn jittered(delay: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let j = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
    let spread = rand::rng().random_range(0..=2 * j);
    (delay + Duration::from_micros(spread)).saturating_sub(jitter)
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
    use crate::core::quorum;

    #[test]
    fn jitter_stays_within_bounds() {
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(50));
        for _ in 0..1000 {
            let x = jittered(d, j);
            assert!(x >= d - j && x <= d + j, "{x:?}");
        }
    }

    /// Lasting errors end the wait only when they alone rule out a quorum; transient
    /// ones never do.
    #[test]
    fn lasting_errors_end_the_wait_only_when_they_rule_out_a_quorum() {
        use crate::error::{NodeError, NodeErrorKind, Step};
        for n in 1..=9usize {
            let q = quorum::quorum(n);
            for lasting in 0..=n {
                for transient in 0..=n - lasting {
                    let kinds = std::iter::repeat_n(NodeErrorKind::WrongType, lasting)
                        .chain(std::iter::repeat_n(NodeErrorKind::Timeout, transient));
                    let errors = kinds
                        .enumerate()
                        .map(|(i, k)| {
                            NodeError::new(&format!("n{i}"), Step::Acquire, k, "x".into())
                        })
                        .collect();
                    let e = Error::NoQuorum {
                        resource: "r".into(),
                        step: Step::Acquire,
                        granted: 0,
                        refused: 0,
                        failed: lasting + transient,
                        quorum: q,
                        nodes: n,
                        errors,
                    };
                    assert_eq!(retryable(&e), lasting + q <= n, "n {n}, lasting {lasting}");
                }
            }
        }
    }

    #[test]
    fn resource_names_are_checked() {
        assert!(check_resource("").is_err());
        assert!(check_resource(&"x".repeat(MAX_RESOURCE_LEN + 1)).is_err());
        check_resource("{weird}%name").unwrap();
    }
}
