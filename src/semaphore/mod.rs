//! The counting semaphore: K permits over the quorum, each permit a mutex on one of K
//! slots. A sibling of the mutex on the lease core: the grant round, the waiting loop, the
//! scoped run and the held lease are the core's; what is the semaphore's own is the
//! per-node claim (`grant_slot.lua`: the first free slot in this attempt's order) and the
//! [`Permit`] naming its slot.
//!
//! # Why the slots, and not a count per node
//!
//! A count per node (each node admits up to K holders; a majority of admissions makes a
//! holder) does not bound the holders by K for K ≥ 2. With 5 nodes and K = 2, holders
//! admitted on {1,2,3}, {1,4,5} and {2,3,4} leave every node at two holders while three
//! hold a permit: a majority rules out a conflict between two holders, not among K + 1.
//! The model in `src/models/semaphore.rs` finds that schedule.
//!
//! Here a permit is slot `s`'s mutex, won at a majority like the lock. Two holders of one
//! slot would need two majorities that each granted it, and they share a node, which gave
//! the slot to only one owner at a time (its key stays until released or expired, and
//! the drift allowance ends the validity before any node's lease). So each slot has at
//! most one valid holder, and there are at most K. Each slot's fencing token is the
//! mutex's, per slot: committed on a majority, strictly increasing across the slot's
//! holders. The model checks the construction over every schedule of its bounds.
//!
//! One round per acquisition when uncontended: every node grants, in one script, the
//! first free slot in the attempt's order, which starts at a random slot so that
//! concurrent clients spread over the slots. The attempt wins the slot a majority granted
//! ([`quorum::split_decision`](crate::core::quorum)); the slots other nodes granted it are
//! released. Nodes can disagree (node 1 gives slot 0, node 2 slot 1, node 3 slot 2) and
//! leave no slot a majority although a permit is free; that attempt fails and is retried
//! like a split vote of the lock.

use std::sync::Arc;

use futures::future::join_all;
use rand::RngExt;

use crate::client::{Client, Watchdog};
use crate::error::{ConfigError, Error};
use crate::lease::grant::{self, Granted, Won};
use crate::lease::wait::{self, Waiting};
use crate::mutex::{AcquireOptions, AcquirePlan, LockGuard, check_resource, wraps_guard};
use crate::ops::LockStatus;
use crate::scripts::Keys;

/// Most permits a semaphore may have. Each grant reads the slots in turn on every node
/// (about a microsecond of node time per slot taken), so large counts cost in contention.
pub const MAX_PERMITS: usize = 1024;

/// A counting semaphore: at most [`permits`](Self::permits) holders of `name` at once,
/// over the client's nodes. Get one with [`Client::semaphore`]; it is cheap to clone.
///
/// Every client of one name must use the same permit count: each count is a different
/// set of slots, and holders counted against different sets are not bounded by either.
///
/// ```no_run
/// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
/// let exports = client.semaphore("exports", 3)?;
/// let permit = exports.acquire().await?; // one of three, with a watchdog
/// println!("slot {} token {}", permit.slot(), permit.token());
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    client: Client,
    name: Arc<str>,
    /// Slot `s`'s keys at index `s`.
    slots: Arc<[Arc<Keys>]>,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.name)
            .field("permits", &self.permits())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The counting semaphore `name` with `permits` permits; nothing is contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name; [`Error::Config`]
    /// ([`ConfigError::Permits`]) for zero permits or more than [`MAX_PERMITS`].
    pub fn semaphore(&self, name: &str, permits: usize) -> Result<Semaphore, Error> {
        check_permits(name, permits)?;
        let prefix = &self.settings().prefix;
        Ok(Semaphore {
            client: self.clone(),
            name: name.into(),
            slots: (0..permits)
                .map(|s| Arc::new(Keys::slot(prefix, name, s)))
                .collect(),
        })
    }
}

/// A semaphore's name and permit count: a valid resource name, 1 to [`MAX_PERMITS`].
pub(crate) fn check_permits(name: &str, permits: usize) -> Result<(), Error> {
    check_resource(name)?;
    if permits == 0 || permits > MAX_PERMITS {
        return Err(ConfigError::Permits {
            value: permits,
            max: MAX_PERMITS,
        }
        .into());
    }
    Ok(())
}

impl Semaphore {
    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many holders it admits at once.
    pub fn permits(&self) -> usize {
        self.slots.len()
    }

    /// Every node's view of every permit, without changing anything; for operators and
    /// dashboards, not for deciding who may write. One [`LockStatus`] per slot, in slot
    /// order, named `NAME#SLOT` as a permit's [`resource`](LockGuard::resource) is: its
    /// holder on a quorum, and its fence counter (the slot's newest token). Unreachable
    /// nodes are reported per node.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let crawlers = client.semaphore("crawlers", 4)?;
    /// let held = crawlers.inspect().await.iter().filter(|s| s.is_held()).count();
    /// println!("{held} of {} permits held", crawlers.permits());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn inspect(&self) -> Vec<LockStatus> {
        join_all(self.slots.iter().enumerate().map(|(slot, keys)| {
            let name = format!("{}#{slot}", self.name);
            async move { self.client.inspect_keys(&name, keys).await }
        }))
        .await
    }

    /// One attempt to take a permit, on all nodes at once.
    ///
    /// Returns `Ok(None)` when the answers rule out every slot: all permits are held, or
    /// the nodes split their grants over several slots (retry).
    ///
    /// # Errors
    ///
    /// As [`Client::try_acquire`]: [`Error::NoQuorum`] when failed nodes made the
    /// difference, [`Error::NoValidity`] when the attempt left no validity.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_acquire(&self) -> Result<Option<Permit>, Error> {
        self.try_acquire_with(AcquireOptions::new()).await
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
    pub async fn try_acquire_with(&self, options: AcquireOptions) -> Result<Option<Permit>, Error> {
        let plan = self.client.plan(&options, Watchdog::Off)?;
        self.attempt(&plan).await
    }

    /// Takes a permit, waiting for up to the client's wait timeout (woken by any release
    /// of a permit). Unless turned off, a watchdog keeps it alive and reports its loss,
    /// as for [`Client::acquire`].
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`]: [`Error::WaitTimeout`] when the wait ran out.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn acquire(&self) -> Result<Permit, Error> {
        self.acquire_with(AcquireOptions::new()).await
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
    pub async fn acquire_with(&self, options: AcquireOptions) -> Result<Permit, Error> {
        let s = self.client.settings();
        let plan = self.client.plan(&options, s.watchdog)?;
        let waiting = Waiting {
            wakeups: self.client.wakeups(),
            counters: self.client.nodes().counters(),
            channel: &self.slots[0].released,
            resource: &self.name,
            wait: options.wait.unwrap_or(s.wait),
            retry_delay: s.retry_delay,
            retry_jitter: s.retry_jitter,
        };
        wait::until_won(waiting, || self.attempt(&plan)).await
    }

    /// Runs `work` holding a permit, as [`Client::run`] does under a lock: waits for a
    /// permit with a watchdog, runs `work`, releases; if the permit is lost first, `work`
    /// is cancelled and the loss returned.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let crawlers = client.semaphore("crawlers", 4)?;
    /// let pages = crawlers
    ///     .run(async |permit| {
    ///         // at most four of these run at once, across every client
    ///         permit.slot()
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); [`Error::Lost`] when the permit was lost before
    /// `work` finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future cancels `work` at its current `.await` and releases
    /// the lock (from the guard's drop), as a loss does.
    pub async fn run<T>(&self, work: impl AsyncFnOnce(&Permit) -> T) -> Result<T, Error> {
        self.run_with(AcquireOptions::new(), work).await
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
        options: AcquireOptions,
        work: impl AsyncFnOnce(&Permit) -> T,
    ) -> Result<T, Error> {
        let permit = self.acquire_with(options.watchdog(Watchdog::On)).await?;
        let nodes = self.client.nodes().len();
        wait::scoped(permit, nodes + 1 - self.client.quorum(), work).await
    }

    /// One attempt: the lease core's grant with the slots as candidates, tried from a
    /// random slot on.
    async fn attempt(&self, plan: &AcquirePlan) -> Result<Option<Permit>, Error> {
        let k = self.slots.len();
        let first = rand::rng().random_range(0..k);
        let slot = move |candidate: usize| (first + candidate) % k;
        let order: Arc<[Arc<Keys>]> = (0..k).map(|c| Arc::clone(&self.slots[slot(c)])).collect();
        let name = |c| format!("{}#{}", self.name, slot(c));
        let terms = self.client.terms(plan, true);
        let won = grant::acquire(self.client.nodes(), &self.name, &order, terms, name, |c| {
            let order = Arc::clone(&order);
            async move {
                let on_repeat = c.on_repeat();
                let granted = c
                    .node
                    .grant_slot(&order, &c.owner, c.ttl_ms, on_repeat)
                    .await?;
                Ok(granted.map(|(candidate, counter)| Granted::of(candidate, counter)))
            }
        })
        .await?;
        Ok(won.map(|Won { candidate, lease }| Permit {
            guard: self.client.guard(lease, plan),
            slot: slot(candidate),
            permits: k,
        }))
    }
}

/// A held permit of a [`Semaphore`]: a lease on one slot, with everything a
/// [`LockGuard`] has (it derefs to one): token, validity, extend, loss reporting. Its
/// [`resource`](LockGuard::resource) is `NAME#SLOT`.
///
/// The [`token`](LockGuard::token) increases strictly across the holders **of its slot**
/// (K holders may run at once, so no single order covers them all): fence storage writes
/// by [`resource`](LockGuard::resource), not by the semaphore's name, and a permit lost
/// and taken over by another holder has its late writes refused.
///
/// Dropping it releases it on a spawned task, as a guard does.
#[must_use = "the permit is released as soon as it is dropped"]
#[derive(Debug)]
pub struct Permit {
    guard: LockGuard,
    slot: usize,
    permits: usize,
}

wraps_guard!(Permit, "permit");

impl Permit {
    /// The slot held, in `0..permits`.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The semaphore's permit count.
    pub fn permits(&self) -> usize {
        self.permits
    }
}
