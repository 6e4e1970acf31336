//! [`KeyLocks`]: the key-based lock interface, and [`Keyed`], which serves it from any
//! [`LockProvider`] by keeping the handles it holds.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{BoxFuture, LockHandle, LockProvider};
use crate::error::{ConfigError, Error};
use crate::fence::FencingToken;

/// Locks by key, in the shape many callers already code against: `try_acquire(key,
/// ttl_ms)` is `Ok(true)` when acquired, `Ok(false)` when held elsewhere (or already held
/// here: it is not re-entrant), `Err` on a cluster or connection error; `release(key)`
/// and `extend(key, extra_ttl_ms)` act on the lock this instance holds for `key`, and
/// fail with [`Error::NotHeld`] for a key it does not hold. Object-safe:
/// `Box<dyn KeyLocks>` works.
///
/// The token of a held key is [`token`](Self::token): pass it to every write the lock
/// protects.
pub trait KeyLocks: Send + Sync + fmt::Debug {
    /// Takes `key` for `ttl_ms` milliseconds, in one attempt.
    fn try_acquire<'a>(&'a self, key: &'a str, ttl_ms: u64) -> BoxFuture<'a, Result<bool, Error>>;
    /// Releases `key`; [`Error::Lost`] when it had been lost in the meantime (another
    /// holder may have overlapped).
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// Renews `key`'s lease to `extra_ttl_ms` milliseconds from now.
    fn extend<'a>(&'a self, key: &'a str, extra_ttl_ms: u64) -> BoxFuture<'a, Result<(), Error>>;
    /// The fencing token of `key`, while this instance holds it.
    fn token(&self, key: &str) -> Option<FencingToken>;
}

/// [`KeyLocks`] over any [`LockProvider`]: the quorum [`Client`](crate::Client) or
/// [`LocalLocks`](crate::LocalLocks). It keeps the handle of every key it holds;
/// dropping it drops them, which releases them in the background (or, outside a
/// runtime, leaves them to expire with their TTL).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), redfence::Error> {
/// use std::sync::Arc;
/// use redfence::{KeyLocks, Keyed, LocalLocks};
///
/// // `Keyed::new(Arc::new(client))` for the quorum; the in-process twin here.
/// let provider = Arc::new(LocalLocks::new());
/// let locks: Box<dyn KeyLocks> = Box::new(Keyed::new(provider.clone()));
/// let others: Box<dyn KeyLocks> = Box::new(Keyed::new(provider));
/// assert!(locks.try_acquire("invoice-42", 10_000).await?);
/// assert!(!others.try_acquire("invoice-42", 10_000).await?);
/// let token = locks.token("invoice-42").expect("held");
/// // ... write with the token ...
/// locks.extend("invoice-42", 30_000).await?;
/// locks.release("invoice-42").await?;
/// assert!(others.try_acquire("invoice-42", 10_000).await?);
/// assert!(others.token("invoice-42").unwrap() > token);
/// # Ok(())
/// # }
/// ```
pub struct Keyed {
    provider: Arc<dyn LockProvider>,
    held: Mutex<HashMap<String, Box<dyn LockHandle>>>,
}

impl fmt::Debug for Keyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.held().keys().cloned().collect();
        f.debug_struct("Keyed")
            .field("provider", &self.provider)
            .field("held", &keys)
            .finish()
    }
}

impl Keyed {
    /// Key-based locks from `provider`.
    pub fn new(provider: Arc<dyn LockProvider>) -> Self {
        Self {
            provider,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Box<dyn LockHandle>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle of `key`, taken out (the map's lock is never held across an await).
    fn take(&self, key: &str) -> Result<Box<dyn LockHandle>, Error> {
        self.held().remove(key).ok_or_else(|| Error::NotHeld {
            resource: key.to_owned(),
        })
    }
}

fn ttl(setting: &'static str, ms: u64) -> Result<Duration, Error> {
    if ms == 0 {
        return Err(ConfigError::Zero { setting }.into());
    }
    Ok(Duration::from_millis(ms))
}

impl KeyLocks for Keyed {
    fn try_acquire<'a>(&'a self, key: &'a str, ttl_ms: u64) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let ttl = ttl("ttl_ms", ttl_ms)?;
            if self
                .held()
                .get(key)
                .is_some_and(|h| !h.validity().is_zero())
            {
                return Ok(false);
            }
            let lock = self.provider.lock(key)?;
            let Some(handle) = lock.try_acquire(Some(ttl)).await? else {
                return Ok(false);
            };
            // An expired handle of the same key, if any, is replaced (and dropped).
            self.held().insert(key.to_owned(), handle);
            Ok(true)
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let handle = self.take(key)?;
            if handle.release().await? {
                Ok(())
            } else {
                Err(Error::Lost {
                    resource: key.to_owned(),
                    reason: crate::LossReason::ValidityElapsed,
                })
            }
        })
    }

    fn extend<'a>(&'a self, key: &'a str, extra_ttl_ms: u64) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let ttl = ttl("extra_ttl_ms", extra_ttl_ms)?;
            let handle = self.take(key)?;
            let extended = handle.extend_for(ttl).await;
            match extended {
                // A lost lock is forgotten; anything else (a transient quorum failure)
                // keeps it, for a retry while it lasts.
                Err(e) if e.is_lost() => Err(e),
                other => {
                    self.held().insert(key.to_owned(), handle);
                    other.map(drop)
                }
            }
        })
    }

    fn token(&self, key: &str) -> Option<FencingToken> {
        self.held().get(key).map(|h| h.token())
    }
}
