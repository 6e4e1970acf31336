//! Object-safe lock interfaces, to write code against, swap implementations behind, and
//! fake in unit tests: [`LockProvider`] hands out named [`DistributedLock`]s, whose
//! acquisitions are [`LockHandle`]s; [`SemaphoreProvider`] hands out
//! [`DistributedSemaphore`]s, whose permits are [`LockHandle`]s too; [`RwLockProvider`]
//! hands out [`DistributedRwLock`]s, whose readers and writers are [`LockHandle`]s;
//! [`SetProvider`] takes several locks all or nothing, as a [`SetHandle`];
//! [`ElectionProvider`] hands out [`DistributedElection`]s, whose leaderships are
//! [`LockHandle`]s with the term as token. Every method returns a boxed future, so each trait
//! works as `Arc<dyn …>` / `Box<dyn …>`.
//!
//! [`Client`] implements them over the quorum; [`LocalLocks`] is an in-process twin with
//! no Redis (its leases run on tokio's clock, so `tokio::time::pause` works). The test
//! kit's `conformance` module checks any implementation against the contract below.
//!
//! ## The contract
//!
//! - **Exclusion.** While a handle is valid, no other acquisition of the same name
//!   succeeds.
//! - **Tokens.** Every acquisition of a name carries a token strictly greater than every
//!   earlier one's.
//! - **Leases.** A handle's validity counts down from its TTL; [`LockHandle::extend`]
//!   renews it for another TTL while it lasts. Handles from these traits have no
//!   watchdog: extend them, or let them expire. Once expired, the name can be taken
//!   again, and the old handle's [`lost`](LockHandle::lost) has answered.
//! - **Release.** [`LockHandle::release`] answers `true` when the lock was still held,
//!   `false` when it had been lost (another holder may have overlapped).
//! - **Cancellation.** Dropping an acquire future leaves nothing held.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), redfence::Error> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redfence::{LocalLocks, LockProvider};
//!
//! async fn nightly(locks: Arc<dyn LockProvider>) -> Result<u64, redfence::Error> {
//!     let lock = locks.lock("nightly")?;
//!     let held = lock.acquire(None, Some(Duration::from_secs(5))).await?;
//!     let token = held.token().get(); // pass it to every write
//!     assert!(held.release().await?);
//!     Ok(token)
//! }
//!
//! // `Arc::new(client)` runs it over the quorum; the in-process twin here.
//! let locks: Arc<dyn LockProvider> = Arc::new(LocalLocks::new());
//! let first = nightly(Arc::clone(&locks)).await?;
//! assert!(nightly(locks).await? > first);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod keyed;
mod local;

pub use keyed::{KeyLocks, Keyed};
pub use local::LocalLocks;

use crate::client::{Client, Watchdog};
use crate::election::{Election, Leader};
use crate::error::{Error, LossReason};
use crate::fence::FencingToken;
use crate::mutex::{AcquireOptions, LockGuard, check_resource};
use crate::rwlock::RwLock;
use crate::semaphore::Semaphore;
use crate::set::SetGuard;

/// A boxed, `Send` future: what every method of these traits returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hands out named locks.
pub trait LockProvider: Send + Sync + fmt::Debug {
    /// The lock named `name`; nothing is contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name.
    fn lock(&self, name: &str) -> Result<Box<dyn DistributedLock>, Error>;
}

/// One named lock.
pub trait DistributedLock: Send + Sync + fmt::Debug {
    /// Its name.
    fn name(&self) -> &str;

    /// One attempt, with a lease of `ttl` (the provider's default when `None`):
    /// `Ok(None)` when another holder has it.
    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>>;

    /// Waits for the lock for up to `wait` (the provider's default when `None`); an
    /// [`Error::WaitTimeout`] when it did not come.
    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>>;
}

/// Hands out named counting semaphores.
///
/// The contract, beside the locks': at most `permits` handles of one semaphore are valid
/// at once; each handle's [`name`](LockHandle::name) is `NAME#SLOT`, and tokens strictly
/// increase per slot (fence writes by that name); a release or an expiry frees a permit,
/// and a release wakes a waiter. Every user of a name must give the same permit count.
pub trait SemaphoreProvider: Send + Sync + fmt::Debug {
    /// The semaphore `name` with `permits` permits; nothing is contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name; [`Error::Config`] for
    /// zero permits or more than [`MAX_PERMITS`](crate::MAX_PERMITS).
    fn semaphore(&self, name: &str, permits: usize)
    -> Result<Box<dyn DistributedSemaphore>, Error>;
}

/// One named counting semaphore; its permits are [`LockHandle`]s.
pub trait DistributedSemaphore: Send + Sync + fmt::Debug {
    /// Its name.
    fn name(&self) -> &str;

    /// How many holders it admits at once.
    fn permits(&self) -> usize;

    /// One attempt, with a lease of `ttl` (the provider's default when `None`):
    /// `Ok(None)` when no permit could be had.
    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>>;

    /// Waits for a permit for up to `wait` (the provider's default when `None`); an
    /// [`Error::WaitTimeout`] when none came.
    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>>;
}

/// Hands out named reader-writer locks.
///
/// The contract, beside the locks': while a writer's handle is valid, no other handle of
/// the name (reader or writer) is; readers' handles are valid together. A writer waiting
/// for readers holds new readers off (writer preference). Writers' tokens strictly
/// increase; a reader's token is at least every earlier writer's (readers may share one).
pub trait RwLockProvider: Send + Sync + fmt::Debug {
    /// The reader-writer lock `name`; nothing is contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name.
    fn rwlock(&self, name: &str) -> Result<Box<dyn DistributedRwLock>, Error>;
}

/// One named reader-writer lock; both sides' leases are [`LockHandle`]s.
pub trait DistributedRwLock: Send + Sync + fmt::Debug {
    /// Its name.
    fn name(&self) -> &str;

    /// One attempt to read (`Ok(None)`: a writer holds or waits).
    fn try_read(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>>;

    /// Waits up to `wait` to read.
    fn read(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>>;

    /// One attempt to write (`Ok(None)`: a writer or readers hold it).
    fn try_write(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>>;

    /// Waits up to `wait` to write, holding new readers off meanwhile.
    fn write(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>>;
}

/// Hands out named leader elections.
///
/// The contract, beside the locks': one leadership valid at a time; terms (the
/// leaderships' tokens) strictly increase; `leader` reports the valid leadership's value
/// and term, or none; a leadership ends by release or expiry, and its loss is reported.
pub trait ElectionProvider: Send + Sync + fmt::Debug {
    /// The election `name`; nothing is contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name.
    fn election(&self, name: &str) -> Result<Box<dyn DistributedElection>, Error>;
}

/// One named election; a leadership is a [`LockHandle`] whose token is its term.
pub trait DistributedElection: Send + Sync + fmt::Debug {
    /// Its name.
    fn name(&self) -> &str;

    /// One attempt to lead, publishing `value` (`Ok(None)`: another leads).
    fn try_campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn LockHandle>>, Error>>;

    /// Campaigns up to `wait` to lead, publishing `value`.
    fn campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn LockHandle>, Error>>;

    /// Who leads now, if anyone.
    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>, Error>>;
}

/// Takes several locks of one provider all or nothing: the same locks as
/// [`LockProvider`]'s, of the same names.
///
/// The contract, beside the locks': a set is held whole or not at all (a refused set
/// leaves none of its locks taken); each lock in it has its own token, strictly above
/// every earlier holder's of that lock, alone or in a set; the handle extends, loses and
/// releases the set as one.
pub trait SetProvider: Send + Sync + fmt::Debug {
    /// One attempt at every lock in `names` (`Ok(None)`: some are held elsewhere).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty set, a bad or repeated name, or more than
    /// [`MAX_SET`](crate::MAX_SET) names.
    fn try_acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn SetHandle>>, Error>>;

    /// Waits up to `wait` for every lock in `names`.
    ///
    /// # Errors
    ///
    /// As [`try_acquire_all`](Self::try_acquire_all); [`Error::WaitTimeout`] when the
    /// set did not come.
    fn acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn SetHandle>, Error>>;
}

/// A held set of locks: a [`LockHandle`] (its [`token`](LockHandle::token) is the first
/// lock's) with every lock's token.
pub trait SetHandle: LockHandle {
    /// Each lock's name with its token, in name order.
    fn tokens(&self) -> Vec<(String, FencingToken)>;
}

/// A held lock.
pub trait LockHandle: Send + Sync + fmt::Debug {
    /// The lock's name.
    fn name(&self) -> &str;
    /// The fencing token: pass it to every write the lock protects.
    fn token(&self) -> FencingToken;
    /// Time left before exclusivity can no longer be assumed (zero once lost).
    fn validity(&self) -> Duration;
    /// Renews the lease for another TTL; the new validity, or [`Error::Lost`].
    fn extend(&self) -> BoxFuture<'_, Result<Duration, Error>>;
    /// Renews the lease for `ttl` instead of its own TTL.
    fn extend_for(&self, ttl: Duration) -> BoxFuture<'_, Result<Duration, Error>>;
    /// Resolves when the lock is lost (or released), with the reason.
    fn lost(&self) -> BoxFuture<'_, LossReason>;
    /// Releases it: `true` when it was still held.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<bool, Error>>;
}

impl LockProvider for Client {
    fn lock(&self, name: &str) -> Result<Box<dyn DistributedLock>, Error> {
        check_resource(name)?;
        Ok(Box::new(ClientLock {
            client: self.clone(),
            name: name.to_owned(),
        }))
    }
}

/// A [`Client`]'s lock of one name.
#[derive(Debug)]
struct ClientLock {
    client: Client,
    name: String,
}

/// The options of an acquisition through these traits: no watchdog (the contract's
/// leases are extended by their holder), the TTL and wait when given.
fn options(ttl: Option<Duration>, wait: Option<Duration>) -> AcquireOptions {
    let mut o = AcquireOptions::new().watchdog(Watchdog::Off);
    if let Some(ttl) = ttl {
        o = o.ttl(ttl);
    }
    if let Some(wait) = wait {
        o = o.wait(wait);
    }
    o
}

impl DistributedLock for ClientLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let guard = self
                .client
                .try_acquire_with(&self.name, options(ttl, None))
                .await?;
            Ok(guard.map(|g| Box::new(g) as Box<dyn LockHandle>))
        })
    }

    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let guard = self
                .client
                .acquire_with(&self.name, options(ttl, wait))
                .await?;
            Ok(Box::new(guard) as Box<dyn LockHandle>)
        })
    }
}

impl SemaphoreProvider for Client {
    fn semaphore(
        &self,
        name: &str,
        permits: usize,
    ) -> Result<Box<dyn DistributedSemaphore>, Error> {
        Ok(Box::new(Client::semaphore(self, name, permits)?))
    }
}

impl DistributedSemaphore for Semaphore {
    fn name(&self) -> &str {
        Semaphore::name(self)
    }

    fn permits(&self) -> usize {
        Semaphore::permits(self)
    }

    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let permit = self.try_acquire_with(options(ttl, None)).await?;
            Ok(permit.map(|p| Box::new(p.into_guard()) as Box<dyn LockHandle>))
        })
    }

    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let permit = self.acquire_with(options(ttl, wait)).await?;
            Ok(Box::new(permit.into_guard()) as Box<dyn LockHandle>)
        })
    }
}

impl RwLockProvider for Client {
    fn rwlock(&self, name: &str) -> Result<Box<dyn DistributedRwLock>, Error> {
        Ok(Box::new(Client::rwlock(self, name)?))
    }
}

impl DistributedRwLock for RwLock {
    fn name(&self) -> &str {
        RwLock::name(self)
    }

    fn try_read(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let r = self.try_read_with(options(ttl, None)).await?;
            Ok(r.map(|r| Box::new(r.into_guard()) as Box<dyn LockHandle>))
        })
    }

    fn read(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let r = self.read_with(options(ttl, wait)).await?;
            Ok(Box::new(r.into_guard()) as Box<dyn LockHandle>)
        })
    }

    fn try_write(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let w = self.try_write_with(options(ttl, None)).await?;
            Ok(w.map(|w| Box::new(w.into_guard()) as Box<dyn LockHandle>))
        })
    }

    fn write(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let w = self.write_with(options(ttl, wait)).await?;
            Ok(Box::new(w.into_guard()) as Box<dyn LockHandle>)
        })
    }
}

impl ElectionProvider for Client {
    fn election(&self, name: &str) -> Result<Box<dyn DistributedElection>, Error> {
        Ok(Box::new(Client::election(self, name)?))
    }
}

impl DistributedElection for Election {
    fn name(&self) -> &str {
        Election::name(self)
    }

    fn try_campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let l = self.try_campaign_with(value, options(ttl, None)).await?;
            Ok(l.map(|l| Box::new(l.into_guard()) as Box<dyn LockHandle>))
        })
    }

    fn campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let l = self.campaign_with(value, options(ttl, wait)).await?;
            Ok(Box::new(l.into_guard()) as Box<dyn LockHandle>)
        })
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>, Error>> {
        Box::pin(Election::leader(self))
    }
}

impl SetProvider for Client {
    fn try_acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn SetHandle>>, Error>> {
        Box::pin(async move {
            let set = self.try_acquire_all_with(names, options(ttl, None)).await?;
            Ok(set.map(|s| Box::new(s) as Box<dyn SetHandle>))
        })
    }

    fn acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn SetHandle>, Error>> {
        Box::pin(async move {
            let set = self.acquire_all_with(names, options(ttl, wait)).await?;
            Ok(Box::new(set) as Box<dyn SetHandle>)
        })
    }
}

impl SetHandle for SetGuard {
    fn tokens(&self) -> Vec<(String, FencingToken)> {
        SetGuard::tokens(self)
            .into_iter()
            .map(|(n, t)| (n.to_owned(), t))
            .collect()
    }
}

/// The quorum client's handles as [`LockHandle`]s: a guard, and the primitives' wrappers
/// that deref to one and have their own `release`.
macro_rules! guard_handle {
    ($t:ty) => {
        impl LockHandle for $t {
            fn name(&self) -> &str {
                self.resource()
            }

            fn token(&self) -> FencingToken {
                LockGuard::token(self)
            }

            fn validity(&self) -> Duration {
                LockGuard::validity(self)
            }

            fn extend(&self) -> BoxFuture<'_, Result<Duration, Error>> {
                Box::pin(LockGuard::extend(self))
            }

            fn extend_for(&self, ttl: Duration) -> BoxFuture<'_, Result<Duration, Error>> {
                Box::pin(LockGuard::extend_for(self, ttl))
            }

            fn lost(&self) -> BoxFuture<'_, LossReason> {
                Box::pin(LockGuard::lost(self))
            }

            fn release(self: Box<Self>) -> BoxFuture<'static, Result<bool, Error>> {
                Box::pin(<$t>::release(*self))
            }
        }
    };
}

guard_handle!(LockGuard);
guard_handle!(SetGuard);
