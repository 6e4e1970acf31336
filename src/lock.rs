//! [`Client`]: one acquisition attempt ([`Client::try_acquire`]) and the waiting loop
//! ([`Client::acquire`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::config::{ClientBuilder, Settings};
use crate::error::{Error, LossReason};
use crate::guard::LockGuard;
use crate::node::{Node, Release};
use crate::quorum;
use crate::round::{Background, Calls, Ending};
use crate::scripts::Keys;
use crate::wakeup::Wakeups;
use crate::watchdog;

/// Longest accepted resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 1024;

/// A RedLock client over N independent nodes. Cheap to clone; clones share connections.
///
/// ## Behavior
///
/// - **Node loss.** Each call goes to every node at once and is decided as soon as its
///   outcome is certain, so up to `N - quorum` dead, paused or slow nodes cost nothing on
///   a decided call. Connections open lazily and reopen in the background.
/// - **Timeouts.** Each node gets [`node_timeout`](ClientBuilder::node_timeout) per call;
///   an acquisition takes at most two such rounds (grant, then token commit).
/// - **Drop.** A [`LockGuard`] dropped without [`release`](LockGuard::release) is released
///   on a spawned task if a tokio runtime is running, else left to expire with its TTL.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) nodes: Vec<Arc<Node>>,
    pub(crate) settings: Settings,
    /// Watchdogs running for this client's guards.
    pub(crate) watchdogs: Arc<AtomicUsize>,
    /// Pub/sub connections that wake waiters when a lock is released.
    pub(crate) wakeups: Arc<Wakeups>,
    /// Work left running after the calls that started it returned.
    pub(crate) background: Arc<Background>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Inner {
            nodes,
            settings,
            watchdogs,
            wakeups,
            background,
        } = &*self.0;
        let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        f.debug_struct("Client")
            .field("nodes", &names)
            .field("settings", settings)
            .field("watchdogs", &watchdogs.load(Ordering::Relaxed))
            .field("wakeups", wakeups)
            .field("background", &background.running())
            .finish()
    }
}

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
    /// [`auto_extend`](ClientBuilder::auto_extend) for `acquire`, off for `try_acquire`).
    pub watchdog: Option<bool>,
    /// The watchdog's maximum hold time instead of the client's.
    pub max_hold: Option<Duration>,
}

impl AcquireOptions {
    /// Client defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lease; see [`ClientBuilder::ttl`].
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the wait; see [`ClientBuilder::wait_timeout`].
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Turns the watchdog on or off; see [`ClientBuilder::auto_extend`].
    #[must_use]
    pub fn watchdog(mut self, on: bool) -> Self {
        self.watchdog = Some(on);
        self
    }

    /// Sets the maximum hold time; see [`ClientBuilder::max_hold`].
    #[must_use]
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = Some(max);
        self
    }
}

/// One acquisition's resolved settings.
pub(crate) struct Plan {
    pub(crate) ttl: Duration,
    pub(crate) watchdog: Option<watchdog::Plan>,
}

impl Client {
    /// A builder with every default; add nodes with [`ClientBuilder::node`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub(crate) fn nodes(&self) -> &[Arc<Node>] {
        &self.0.nodes
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub(crate) fn background(&self) -> &Arc<Background> {
        &self.0.background
    }

    pub(crate) fn watchdog_count(&self) -> &Arc<AtomicUsize> {
        &self.0.watchdogs
    }

    /// The nodes, as `host:port`.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.0.nodes.iter().map(|n| n.name())
    }

    /// Nodes that must agree: `N / 2 + 1`.
    pub fn quorum(&self) -> usize {
        quorum::quorum(self.0.nodes.len())
    }

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
        let plan = self.plan(&options, false)?;
        let keys = Arc::new(Keys::new(&self.0.settings.prefix, resource));
        self.attempt(resource, &keys, &plan).await
    }

    /// Takes `resource`, retrying for up to the client's wait timeout. Unless turned off
    /// ([`ClientBuilder::auto_extend`]), a watchdog then keeps it alive and reports its
    /// loss on the guard's [`state`](LockGuard::state) channel.
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
        let s = &self.0.settings;
        let plan = self.plan(&options, s.auto_extend)?;
        let wait = options.wait.unwrap_or(s.wait_timeout);
        let keys = Arc::new(Keys::new(&s.prefix, resource));
        let start = Instant::now();
        // Woken by any node announcing a release of this resource; the jittered retry
        // delay runs alongside for expiries, lost messages and nodes without pub/sub.
        let mut releases = self.0.wakeups.watch(&keys.released);
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
        let guard = self.acquire_with(resource, options.watchdog(true)).await?;
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

    /// Waits, for at most `limit`, until the client's background work is done, and returns
    /// how many tasks are still running (0 when all finished).
    ///
    /// Some work outlives the call that started it: the calls to nodes that had not
    /// answered when a round was decided, the release of a failed or cancelled attempt or
    /// of a dropped guard, the second release of a grant that landed late. It runs on the
    /// tokio runtime, and ends with it. Call this before a short-lived program's runtime
    /// ends (the CLI does, after releasing), so that a slow node still gets its release
    /// rather than keeping a finished owner's key for a whole TTL. Each task is bounded by
    /// the node timeout (twice it for a late grant's release), so a `limit` of a few node
    /// timeouts is enough. The client stays usable.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let guard = client.acquire("nightly").await?;
    /// // ... work ...
    /// guard.release().await?;
    /// let left = client.shutdown(std::time::Duration::from_secs(2)).await;
    /// assert_eq!(left, 0, "releases still pending: their keys expire with the TTL");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self, limit: Duration) -> usize {
        self.0.background.idle(limit).await
    }

    /// Watchdogs running for this client's guards (each stops on release or drop).
    pub fn active_watchdogs(&self) -> usize {
        self.0.watchdogs.load(Ordering::SeqCst)
    }

    fn plan(&self, options: &AcquireOptions, watchdog_default: bool) -> Result<Plan, Error> {
        let s = &self.0.settings;
        let ttl = options.ttl.unwrap_or(s.ttl);
        s.check_ttl(ttl)?;
        let watchdog = if options.watchdog.unwrap_or(watchdog_default) {
            let max_hold = options.max_hold.or(s.max_hold);
            Some(s.watchdog_plan(ttl, max_hold)?)
        } else {
            None
        };
        Ok(Plan { ttl, watchdog })
    }

    /// Releases `owner` on the given nodes without waiting for the answers; `announce`
    /// wakes waiters (for a lock that was held).
    pub(crate) fn release_in_background(
        &self,
        nodes: &[usize],
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        announce: bool,
        ending: Arc<Ending>,
    ) {
        let calls = self.release_calls(nodes.iter().copied(), keys, owner, announce, &ending);
        self.0.background.finish(calls);
    }

    /// One release of `owner` per given node, each recorded in `ending`; `announce`
    /// wakes waiters (for a lock that was held).
    pub(crate) fn release_calls(
        &self,
        nodes: impl ExactSizeIterator<Item = usize>,
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        announce: bool,
        ending: &Arc<Ending>,
    ) -> Calls<Release> {
        let mut calls = Calls::with_capacity(nodes.len());
        for i in nodes {
            let (node, keys, owner, ending) = (
                Arc::clone(&self.0.nodes[i]),
                Arc::clone(keys),
                owner.clone(),
                Arc::clone(ending),
            );
            calls.push(i, async move {
                ending.release(&node, i, &keys, &owner, announce).await
            });
        }
        calls
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
