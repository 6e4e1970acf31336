//! Several resources held all or nothing, as one lease: a sibling of the mutex on the
//! lease core. What is its own is the per-node claim (`grant_all.lua`: every key or none,
//! in one script) and one token per resource; the grant round, the commit rounds (one per
//! resource, together), the watchdog (all keys in one extension round), the release (all
//! keys in one call per node) and the waiting loop are the core's.
//!
//! # Why it is safe, and cannot deadlock
//!
//! Each resource is held as the mutex holds it: a node grants the set only when none of
//! its keys is another owner's, and then holds every key for the owner until released or
//! expired. A set won on a majority therefore holds each of its resources on that
//! majority, and any other holder of one of them (alone or in another set) would need a
//! majority of its own sharing a node with it, where the key was taken. Each resource's
//! counter is incremented while its key is ours and its token committed on a majority,
//! which is the mutex's token argument, per resource.
//!
//! Nothing waits while holding part of a set: a node grants all or nothing, an attempt
//! that did not win releases everything it took, and only then waits. So two clients
//! taking overlapping sets in opposite orders cannot deadlock; at worst both fail a round
//! (each holds some nodes), release, and retry with jitter, as a split vote of the lock.

use std::sync::Arc;

use crate::client::{Client, Watchdog};
use crate::error::Error;
use crate::fence::FencingToken;
use crate::lease::grant::{self, Granted, Won};
use crate::lease::wait::{self, Held, Waiting};
use crate::mutex::{AcquireOptions, AcquirePlan, LockGuard, check_resource, wraps_guard};
use crate::scripts::Keys;

/// Most resources in one set. A grant reads and sets every key in one script, so a set's
/// cost on each node grows with its size.
pub const MAX_SET: usize = 64;

impl Client {
    /// One attempt to take every resource in `resources`, or none: `Ok(None)` when other
    /// owners hold some of them on enough nodes to rule out a quorum.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty set, a bad or repeated name, or more than
    /// [`MAX_SET`] names; otherwise as [`try_acquire`](Self::try_acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_acquire_all<S: AsRef<str>>(
        &self,
        resources: &[S],
    ) -> Result<Option<SetGuard>, Error> {
        self.try_acquire_all_with(resources, AcquireOptions::new())
            .await
    }

    /// [`try_acquire_all`](Self::try_acquire_all) with per-call options (the watchdog is
    /// off unless the options turn it on).
    ///
    /// # Errors
    ///
    /// As [`try_acquire_all`](Self::try_acquire_all), plus [`Error::Config`] for a bad
    /// option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_acquire_all_with<S: AsRef<str>>(
        &self,
        resources: &[S],
        options: AcquireOptions,
    ) -> Result<Option<SetGuard>, Error> {
        let set = Set::new(self, resources)?;
        let plan = self.plan(&options, Watchdog::Off)?;
        set.attempt(&plan).await
    }

    /// Takes every resource in `resources` (or none), waiting up to the client's wait
    /// timeout; a watchdog then keeps all of them alive in one extension round per
    /// interval, and reports the loss of any as the loss of the set.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let both = client.acquire_all(&["account:7", "account:9"]).await?;
    /// let (from, to) = (both.token_of("account:7"), both.token_of("account:9"));
    /// // ... move money, passing each account's token to its writes ...
    /// both.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_acquire_all`](Self::try_acquire_all) and [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn acquire_all<S: AsRef<str>>(&self, resources: &[S]) -> Result<SetGuard, Error> {
        self.acquire_all_with(resources, AcquireOptions::new())
            .await
    }

    /// [`acquire_all`](Self::acquire_all) with per-call options.
    ///
    /// # Errors
    ///
    /// As [`acquire_all`](Self::acquire_all), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn acquire_all_with<S: AsRef<str>>(
        &self,
        resources: &[S],
        options: AcquireOptions,
    ) -> Result<SetGuard, Error> {
        let set = Set::new(self, resources)?;
        let s = self.settings();
        let plan = self.plan(&options, s.watchdog)?;
        // Woken by releases of the first resource (in name order); the retry delay covers
        // the others.
        let waiting = Waiting {
            wakeups: self.wakeups(),
            counters: self.nodes().counters(),
            channel: &set.keys.released,
            resource: &set.label,
            wait: options.wait.unwrap_or(s.wait),
            retry_delay: s.retry_delay,
            retry_jitter: s.retry_jitter,
        };
        wait::until_won(waiting, || set.attempt(&plan)).await
    }

    /// Runs `work` holding every resource in `resources`, as [`run`](Self::run) does
    /// under one lock: with a watchdog, released after, `work` cancelled on the loss of
    /// any of them.
    ///
    /// # Errors
    ///
    /// As [`acquire_all`](Self::acquire_all); [`Error::Lost`] when the set was lost
    /// before `work` finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future cancels `work` at its current `.await` and releases
    /// the lock (from the guard's drop), as a loss does.
    pub async fn run_all<S: AsRef<str>, T>(
        &self,
        resources: &[S],
        work: impl AsyncFnOnce(&SetGuard) -> T,
    ) -> Result<T, Error> {
        let options = AcquireOptions::new().watchdog(Watchdog::On);
        let guard = self.acquire_all_with(resources, options).await?;
        let not_owner = self.nodes().len() + 1 - self.quorum();
        wait::scoped(guard, not_owner, work).await
    }
}

/// A set being taken: its names in order, and its keys.
struct Set<'a> {
    client: &'a Client,
    names: Arc<[String]>,
    /// The names as one label, for errors and the guard's `resource`.
    label: String,
    keys: Arc<Keys>,
}

/// A set's names checked (at least one, at most [`MAX_SET`], each valid, none twice) and
/// sorted: one order for everyone, so that the tokens come in a stated order.
pub(crate) fn check_set<S: AsRef<str>>(resources: &[S]) -> Result<Vec<String>, Error> {
    let invalid = |name: &str, reason| Error::InvalidResource {
        name: name.chars().take(64).collect(),
        reason,
    };
    let Some(first) = resources.first() else {
        return Err(invalid("", "a set needs at least one resource"));
    };
    if resources.len() > MAX_SET {
        return Err(invalid(first.as_ref(), "a set has at most 64 resources"));
    }
    let mut names: Vec<String> = Vec::with_capacity(resources.len());
    for r in resources {
        check_resource(r.as_ref())?;
        names.push(r.as_ref().to_owned());
    }
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(&w[0], "it is given twice in one set"));
    }
    Ok(names)
}

impl<'a> Set<'a> {
    fn new<S: AsRef<str>>(client: &'a Client, resources: &[S]) -> Result<Self, Error> {
        let names = check_set(resources)?;
        let keys = Arc::new(Keys::set(&client.settings().prefix, &names));
        Ok(Self {
            client,
            label: format!("{names:?}"),
            names: names.into(),
            keys,
        })
    }

    async fn attempt(&self, plan: &AcquirePlan) -> Result<Option<SetGuard>, Error> {
        let candidates = std::slice::from_ref(&self.keys);
        let terms = self.client.terms(plan, true);
        let label = |_| self.label.clone();
        let nodes = self.client.nodes();
        let won = grant::acquire(nodes, &self.label, candidates, terms, label, |c| {
            let keys = Arc::clone(&self.keys);
            async move {
                let on_repeat = c.on_repeat();
                let counters = c
                    .node
                    .grant_all(&keys, &c.owner, c.ttl_ms, on_repeat)
                    .await?;
                Ok(counters.and_then(|counters| {
                    let (&first, more) = counters.split_first()?;
                    Some(Granted {
                        candidate: 0,
                        counter: first,
                        more: more.into(),
                    })
                }))
            }
        })
        .await?;
        Ok(won.map(|Won { lease, .. }| {
            // Before the watchdog starts: a loss then names the resource lost.
            let _ = lease.parts.set(Arc::clone(&self.names));
            SetGuard {
                guard: self.client.guard(lease, plan),
                names: Arc::clone(&self.names),
            }
        }))
    }
}

/// Every resource of a set, held as one lease ([`Client::acquire_all`]). Derefs to a
/// [`LockGuard`] (validity, extend, watchdog, `lost`) whose
/// [`resource`](LockGuard::resource) lists the names and whose
/// [`token`](LockGuard::token) is the first resource's.
///
/// **Tokens.** Each resource has its own, from its own counter, exactly as if it had been
/// locked alone: strictly increasing across that resource's holders, whether they took it
/// alone or in a set. [`tokens`](Self::tokens) lists them in name order (the order
/// [`resources`](Self::resources) gives); pass each resource's token to its own writes.
#[must_use = "the set is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SetGuard {
    guard: LockGuard,
    names: Arc<[String]>,
}

wraps_guard!(SetGuard, "set");

impl SetGuard {
    /// The resources held, in name order.
    pub fn resources(&self) -> &[String] {
        &self.names
    }

    /// Each resource with its token, in name order.
    pub fn tokens(&self) -> Vec<(&str, FencingToken)> {
        let lease = self.guard.lease();
        let tokens = std::iter::once(lease.token()).chain(lease.rest_tokens().iter().copied());
        self.names.iter().map(String::as_str).zip(tokens).collect()
    }

    /// The token of `resource`, if it is in the set.
    pub fn token_of(&self, resource: &str) -> Option<FencingToken> {
        self.tokens()
            .into_iter()
            .find_map(|(name, t)| (name == resource).then_some(t))
    }
}
