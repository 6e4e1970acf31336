//! [`LocalLocks`]: the lock interfaces in one process, with no Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    BoxFuture, DistributedElection, DistributedLock, DistributedRwLock, DistributedSemaphore,
    ElectionProvider, LockHandle, LockProvider, RwLockProvider, SemaphoreProvider, SetHandle,
    SetProvider,
};
use crate::client::{DEFAULT_TTL, DEFAULT_WAIT};
use crate::election::Leader;
use crate::error::{ConfigError, Error, LossReason};
use crate::fence::FencingToken;
use crate::mutex::{check_extension, check_resource};
use crate::semaphore::check_permits;
use crate::set::check_set;

/// The lock interfaces ([`LockProvider`] and the rest) in one process, with no Redis: for
/// unit tests of code written against the traits, and as a reference model of the
/// contract. Leases run on tokio's clock, so `tokio::time::pause()` and `advance()` drive
/// them; tokens strictly increase per name; an expired lease is lost and its name free.
/// Clones share their locks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), redfence::Error> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use redfence::{LocalLocks, LockProvider};
///
/// let locks: Arc<dyn LockProvider> = Arc::new(LocalLocks::new());
/// let lock = locks.lock("job")?;
/// let held = lock.try_acquire(Some(Duration::from_secs(1))).await?.expect("free");
/// assert!(lock.try_acquire(None).await?.is_none(), "exclusive");
/// let token = held.token();
/// assert!(held.release().await?);
/// let next = lock.try_acquire(None).await?.expect("free again");
/// assert!(next.token() > token);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LocalLocks {
    shared: Arc<Shared>,
    ttl: Duration,
    wait: Duration,
}

#[derive(Debug, Default)]
struct Shared {
    names: Mutex<HashMap<String, Name>>,
    owners: AtomicU64,
}

/// One name: its token counter, its holder, and the waiters to wake on release.
#[derive(Debug, Default)]
struct Name {
    counter: u64,
    holder: Option<Holder>,
    /// A reader-writer lock's readers, each with its own expiry.
    readers: Vec<Holder>,
    /// A reader-writer lock's waiting writer: its wait's id, and when the marker expires.
    waiting: Option<(u64, Instant)>,
    /// An election's leader record: the leader's owner id, term and value.
    record: Option<(u64, FencingToken, String)>,
    released: Arc<Notify>,
}

impl Name {
    /// `owner`'s record: the key's holder, or one of the readers (owner ids are unique).
    fn holder_mut(&mut self, owner: u64) -> Option<&mut Holder> {
        if self.holder.is_some_and(|h| h.owner == owner) {
            return self.holder.as_mut();
        }
        self.readers.iter_mut().find(|h| h.owner == owner)
    }
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    owner: u64,
    expires: Instant,
}

impl Default for LocalLocks {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLocks {
    /// Locks with the client's default TTL (10 s) and wait (10 s).
    pub fn new() -> Self {
        Self::with_defaults(DEFAULT_TTL, DEFAULT_WAIT)
    }

    /// Locks whose acquisitions default to `ttl` and `wait`.
    pub fn with_defaults(ttl: Duration, wait: Duration) -> Self {
        Self {
            shared: Arc::default(),
            ttl,
            wait,
        }
    }
}

impl LocalLocks {
    /// The lease asked for, or the default; never zero.
    fn ttl(&self, ttl: Option<Duration>) -> Result<Duration, Error> {
        let ttl = ttl.unwrap_or(self.ttl);
        if ttl.is_zero() {
            return Err(ConfigError::Zero { setting: "ttl" }.into());
        }
        Ok(ttl)
    }
}

impl Shared {
    fn names(&self) -> MutexGuard<'_, HashMap<String, Name>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The release signal of the lease stored under `key`.
    fn released(&self, key: &str) -> Arc<Notify> {
        let mut names = self.names();
        Arc::clone(&names.entry(key.to_owned()).or_default().released)
    }

    /// One attempt on the lease stored under `key`, handed out as `name`; on refusal, the
    /// holder's expiry.
    fn take(
        self: &Arc<Self>,
        key: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<LocalHandle, Instant> {
        let mut names = self.names();
        let entry = names.entry(key.to_owned()).or_default();
        let now = Instant::now();
        if let Some(h) = entry.holder.filter(|h| h.expires > now) {
            return Err(h.expires);
        }
        entry.counter += 1;
        let owner = self.owners.fetch_add(1, Ordering::Relaxed);
        entry.holder = Some(Holder {
            owner,
            expires: now + ttl,
        });
        Ok(self.handle(key, name, owner, entry.counter, ttl))
    }

    fn handle(
        self: &Arc<Self>,
        key: &str,
        name: &str,
        owner: u64,
        token: u64,
        ttl: Duration,
    ) -> LocalHandle {
        LocalHandle {
            shared: Arc::clone(self),
            keys: vec![key.to_owned()],
            name: name.to_owned(),
            owner,
            tokens: vec![FencingToken::new(token)],
            set: Vec::new(),
            ttl,
            released: false,
        }
    }

    /// One attempt on every lock in `set` (names, in order), all or nothing; on refusal,
    /// the expiry of a holder in the way.
    fn take_set(self: &Arc<Self>, set: &[String], ttl: Duration) -> Result<LocalHandle, Instant> {
        let mut names = self.names();
        let now = Instant::now();
        for name in set {
            if let Some(h) = names
                .get(name)
                .and_then(|n| n.holder)
                .filter(|h| h.expires > now)
            {
                return Err(h.expires);
            }
        }
        let owner = self.owners.fetch_add(1, Ordering::Relaxed);
        let mut tokens = Vec::with_capacity(set.len());
        for name in set {
            let entry = names.entry(name.clone()).or_default();
            entry.counter += 1;
            entry.holder = Some(Holder {
                owner,
                expires: now + ttl,
            });
            tokens.push(FencingToken::new(entry.counter));
        }
        Ok(LocalHandle {
            shared: Arc::clone(self),
            keys: set.to_vec(),
            name: format!("{set:?}"),
            owner,
            tokens,
            set: set.to_vec(),
            ttl,
            released: false,
        })
    }

    /// One attempt on the reader-writer lock stored under `key`, as a reader or (with
    /// the wait's id, for its marker) a writer; on refusal, when to look again. The same
    /// rules as the nodes' scripts: readers are refused while a writer holds or waits; a
    /// writer is refused while another holds, or while readers live (then it marks its
    /// wait); a reader's token is the counter, a writer's the counter incremented.
    fn take_rw(
        self: &Arc<Self>,
        key: &str,
        name: &str,
        ttl: Duration,
        writer: Option<u64>,
    ) -> Result<LocalHandle, Instant> {
        let mut names = self.names();
        let entry = names.entry(key.to_owned()).or_default();
        let now = Instant::now();
        entry.readers.retain(|r| r.expires > now);
        entry.waiting = entry.waiting.filter(|&(_, until)| until > now);
        if let Some(h) = entry.holder.filter(|h| h.expires > now) {
            return Err(h.expires);
        }
        let owner = self.owners.fetch_add(1, Ordering::Relaxed);
        let me = Holder {
            owner,
            expires: now + ttl,
        };
        let Some(waiter) = writer else {
            if let Some((_, until)) = entry.waiting {
                return Err(until);
            }
            entry.readers.push(me);
            return Ok(self.handle(key, name, owner, entry.counter, ttl));
        };
        if let Some(first) = entry.readers.iter().map(|r| r.expires).min() {
            if entry.waiting.is_none_or(|(w, _)| w == waiter) {
                entry.waiting = Some((waiter, now + ttl));
            }
            return Err(first);
        }
        if entry.waiting.is_some_and(|(w, _)| w == waiter) {
            entry.waiting = None;
        }
        entry.counter += 1;
        entry.holder = Some(me);
        Ok(self.handle(key, name, owner, entry.counter, ttl))
    }

    /// A writer's wait ended: its marker goes, and the readers it held off are woken.
    fn withdraw(&self, key: &str, waiter: u64) {
        let mut names = self.names();
        if let Some(entry) = names.get_mut(key)
            && entry.waiting.is_some_and(|(w, _)| w == waiter)
        {
            entry.waiting = None;
            entry.released.notify_waiters();
        }
    }
}

impl LockProvider for LocalLocks {
    fn lock(&self, name: &str) -> Result<Box<dyn DistributedLock>, Error> {
        check_resource(name)?;
        Ok(Box::new(LocalLock {
            locks: self.clone(),
            name: name.to_owned(),
        }))
    }
}

#[derive(Debug)]
struct LocalLock {
    locks: LocalLocks,
    name: String,
}

impl LocalLock {
    /// One attempt; on refusal, the holder's expiry.
    fn attempt(&self, ttl: Duration) -> Result<LocalHandle, Instant> {
        Shared::take(&self.locks.shared, &self.name, &self.name, ttl)
    }

    fn ttl(&self, ttl: Option<Duration>) -> Result<Duration, Error> {
        self.locks.ttl(ttl)
    }
}

impl DistributedLock for LocalLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let ttl = self.ttl(ttl)?;
            Ok(self
                .attempt(ttl)
                .ok()
                .map(|h| Box::new(h) as Box<dyn LockHandle>))
        })
    }

    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let ttl = self.ttl(ttl)?;
            let wait = wait.unwrap_or(self.locks.wait);
            let released = [self.locks.shared.released(&self.name)];
            let h = wait_for(&self.name, wait, &released, || self.attempt(ttl)).await?;
            Ok(Box::new(h) as Box<dyn LockHandle>)
        })
    }
}

/// Attempts until one wins, woken by `released` or the holder's expiry; an
/// [`Error::WaitTimeout`] naming `name` after `wait`.
async fn wait_for(
    name: &str,
    wait: Duration,
    released: &[Arc<Notify>],
    mut attempt: impl FnMut() -> Result<LocalHandle, Instant>,
) -> Result<LocalHandle, Error> {
    let start = Instant::now();
    let give_up = start + wait;
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Registered before the attempt, so a release right after it still wakes this
        // waiter.
        let mut notified: Vec<_> = released.iter().map(|r| Box::pin(r.notified())).collect();
        for n in &mut notified {
            n.as_mut().enable();
        }
        let expires = match attempt() {
            Ok(h) => return Ok(h),
            Err(expires) => expires,
        };
        let now = Instant::now();
        if now >= give_up {
            return Err(Error::WaitTimeout {
                resource: name.to_owned(),
                waited: now - start,
                attempts,
                last_error: None,
            });
        }
        tokio::select! {
            _ = futures::future::select_all(notified) => {}
            () = tokio::time::sleep_until(expires.min(give_up)) => {}
        }
    }
}

impl RwLockProvider for LocalLocks {
    fn rwlock(&self, name: &str) -> Result<Box<dyn DistributedRwLock>, Error> {
        check_resource(name)?;
        Ok(Box::new(LocalRwLock {
            locks: self.clone(),
            name: name.to_owned(),
            // Apart from locks and semaphores of the same name.
            key: format!("\0rw\0{name}"),
        }))
    }
}

#[derive(Debug)]
struct LocalRwLock {
    locks: LocalLocks,
    name: String,
    key: String,
}

impl LocalRwLock {
    /// A writer's wait (or single attempt), whose marker goes when it ends without the
    /// lock, cancelled included; `None` for a reader.
    fn writer(&self, write: bool) -> Option<Withdraw<'_>> {
        write.then(|| Withdraw {
            lock: self,
            id: self.locks.shared.owners.fetch_add(1, Ordering::Relaxed),
            won: false,
        })
    }

    fn try_take(
        &self,
        ttl: Option<Duration>,
        write: bool,
    ) -> Result<Option<Box<dyn LockHandle>>, Error> {
        let ttl = self.locks.ttl(ttl)?;
        let mut writer = self.writer(write);
        let id = writer.as_ref().map(|w| w.id);
        let got = self
            .locks
            .shared
            .take_rw(&self.key, &self.name, ttl, id)
            .ok();
        if let Some(w) = writer.as_mut() {
            w.won = got.is_some();
        }
        Ok(got.map(|h| Box::new(h) as Box<dyn LockHandle>))
    }

    async fn take(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
        write: bool,
    ) -> Result<Box<dyn LockHandle>, Error> {
        let ttl = self.locks.ttl(ttl)?;
        let wait = wait.unwrap_or(self.locks.wait);
        let mut writer = self.writer(write);
        let id = writer.as_ref().map(|w| w.id);
        let shared = &self.locks.shared;
        let attempt = || shared.take_rw(&self.key, &self.name, ttl, id);
        let released = [shared.released(&self.key)];
        let got = wait_for(&self.name, wait, &released, attempt).await;
        if let Some(w) = writer.as_mut() {
            w.won = got.is_ok();
        }
        Ok(Box::new(got?) as Box<dyn LockHandle>)
    }
}

/// A local writer's wait: its marker id, withdrawn on drop unless it won.
struct Withdraw<'a> {
    lock: &'a LocalRwLock,
    id: u64,
    won: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if !self.won {
            self.lock.locks.shared.withdraw(&self.lock.key, self.id);
        }
    }
}

impl DistributedRwLock for LocalRwLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_read(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(std::future::ready(self.try_take(ttl, false)))
    }

    fn read(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(self.take(ttl, wait, false))
    }

    fn try_write(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(std::future::ready(self.try_take(ttl, true)))
    }

    fn write(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(self.take(ttl, wait, true))
    }
}

impl ElectionProvider for LocalLocks {
    fn election(&self, name: &str) -> Result<Box<dyn DistributedElection>, Error> {
        check_resource(name)?;
        Ok(Box::new(LocalElection {
            locks: self.clone(),
            name: name.to_owned(),
            // Apart from a lock of the same name.
            key: format!("\0elect\0{name}"),
        }))
    }
}

#[derive(Debug)]
struct LocalElection {
    locks: LocalLocks,
    name: String,
    key: String,
}

impl LocalElection {
    /// One attempt: the lock, then the record.
    fn attempt(&self, value: &str, ttl: Duration) -> Result<LocalHandle, Instant> {
        let h = Shared::take(&self.locks.shared, &self.key, &self.name, ttl)?;
        let mut names = self.locks.shared.names();
        if let Some(entry) = names.get_mut(&self.key) {
            entry.record = Some((h.owner, LockHandle::token(&h), value.to_owned()));
            entry.released.notify_waiters();
        }
        Ok(h)
    }
}

impl DistributedElection for LocalElection {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let ttl = self.locks.ttl(ttl)?;
            let got = self.attempt(value, ttl).ok();
            Ok(got.map(|h| Box::new(h) as Box<dyn LockHandle>))
        })
    }

    fn campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let ttl = self.locks.ttl(ttl)?;
            let wait = wait.unwrap_or(self.locks.wait);
            let released = [self.locks.shared.released(&self.key)];
            let h = wait_for(&self.name, wait, &released, || self.attempt(value, ttl)).await?;
            Ok(Box::new(h) as Box<dyn LockHandle>)
        })
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>, Error>> {
        let names = self.locks.shared.names();
        let now = Instant::now();
        let leader = names.get(&self.key).and_then(|entry| {
            let holder = entry.holder.filter(|h| h.expires > now)?;
            let (owner, term, value) = entry.record.clone()?;
            (owner == holder.owner)
                .then(|| Leader::new(value, term, holder.expires - now, owner.to_string()))
        });
        Box::pin(std::future::ready(Ok(leader)))
    }
}

impl SetProvider for LocalLocks {
    fn try_acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn SetHandle>>, Error>> {
        Box::pin(async move {
            let (set, ttl) = (check_set(names)?, self.ttl(ttl)?);
            let got = self.shared.take_set(&set, ttl).ok();
            Ok(got.map(|h| Box::new(h) as Box<dyn SetHandle>))
        })
    }

    fn acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn SetHandle>, Error>> {
        Box::pin(async move {
            let (set, ttl) = (check_set(names)?, self.ttl(ttl)?);
            let released: Vec<Arc<Notify>> = set.iter().map(|n| self.shared.released(n)).collect();
            let label = format!("{set:?}");
            let wait = wait.unwrap_or(self.wait);
            let attempt = || self.shared.take_set(&set, ttl);
            let h = wait_for(&label, wait, &released, attempt).await?;
            Ok(Box::new(h) as Box<dyn SetHandle>)
        })
    }
}

impl SetHandle for LocalHandle {
    fn tokens(&self) -> Vec<(String, FencingToken)> {
        self.set
            .iter()
            .cloned()
            .zip(self.tokens.iter().copied())
            .collect()
    }
}

impl SemaphoreProvider for LocalLocks {
    fn semaphore(
        &self,
        name: &str,
        permits: usize,
    ) -> Result<Box<dyn DistributedSemaphore>, Error> {
        check_permits(name, permits)?;
        // Stored apart from locks (a key no lock name can have: names are not empty), and
        // every slot shares one release signal, so any release wakes every waiter.
        let keys: Vec<String> = (0..permits)
            .map(|s| format!("\0permit\0{name}#{s}"))
            .collect();
        let released = {
            let mut names = self.shared.names();
            let signal = Arc::clone(&names.entry(keys[0].clone()).or_default().released);
            for k in &keys[1..] {
                names.entry(k.clone()).or_default().released = Arc::clone(&signal);
            }
            signal
        };
        Ok(Box::new(LocalSemaphore {
            locks: self.clone(),
            name: name.to_owned(),
            keys,
            released,
        }))
    }
}

#[derive(Debug)]
struct LocalSemaphore {
    locks: LocalLocks,
    name: String,
    /// Slot `s`'s key at index `s`.
    keys: Vec<String>,
    released: Arc<Notify>,
}

impl LocalSemaphore {
    /// The first free slot; on refusal, the earliest expiry of a holder.
    fn attempt(&self, ttl: Duration) -> Result<LocalHandle, Instant> {
        let mut earliest: Option<Instant> = None;
        for (slot, key) in self.keys.iter().enumerate() {
            let name = format!("{}#{slot}", self.name);
            match Shared::take(&self.locks.shared, key, &name, ttl) {
                Ok(h) => return Ok(h),
                Err(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
            }
        }
        Err(earliest.unwrap_or_else(Instant::now))
    }
}

impl DistributedSemaphore for LocalSemaphore {
    fn name(&self) -> &str {
        &self.name
    }

    fn permits(&self) -> usize {
        self.keys.len()
    }

    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let ttl = self.locks.ttl(ttl)?;
            Ok(self
                .attempt(ttl)
                .ok()
                .map(|h| Box::new(h) as Box<dyn LockHandle>))
        })
    }

    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let ttl = self.locks.ttl(ttl)?;
            let wait = wait.unwrap_or(self.locks.wait);
            let released = [Arc::clone(&self.released)];
            let h = wait_for(&self.name, wait, &released, || self.attempt(ttl)).await?;
            Ok(Box::new(h) as Box<dyn LockHandle>)
        })
    }
}

/// A held [`LocalLocks`] lock. Dropping it releases it.
#[derive(Debug)]
struct LocalHandle {
    shared: Arc<Shared>,
    /// Where the lease is stored (a set: one key per lock).
    keys: Vec<String>,
    /// What it is called (a permit: `NAME#SLOT`).
    name: String,
    owner: u64,
    /// One per key.
    tokens: Vec<FencingToken>,
    /// A set's lock names, in `keys` order (empty otherwise).
    set: Vec<String>,
    ttl: Duration,
    released: bool,
}

impl LocalHandle {
    /// This owner's expiry, while it holds the name and has not expired.
    fn expires(&self) -> Option<Instant> {
        let mut names = self.shared.names();
        let mut earliest: Option<Instant> = None;
        for key in &self.keys {
            let holder = *names.get_mut(key)?.holder_mut(self.owner)?;
            earliest = Some(earliest.map_or(holder.expires, |e| e.min(holder.expires)));
        }
        earliest.filter(|&e| e > Instant::now())
    }

    /// Frees the name if this owner holds it; true when the lease had not expired.
    fn free(&mut self) -> bool {
        self.released = true;
        let mut names = self.shared.names();
        let now = Instant::now();
        let mut held = true;
        for key in &self.keys {
            let Some(name) = names.get_mut(key) else {
                held = false;
                continue;
            };
            let Some(h) = name.holder_mut(self.owner).copied() else {
                held = false;
                continue;
            };
            name.holder = name.holder.filter(|h| h.owner != self.owner);
            name.readers.retain(|r| r.owner != self.owner);
            name.released.notify_waiters();
            held &= h.expires > now;
        }
        held
    }

    fn lost_error(&self) -> Error {
        Error::Lost {
            resource: self.name.clone(),
            reason: LossReason::ValidityElapsed,
        }
    }
}

impl LockHandle for LocalHandle {
    fn name(&self) -> &str {
        &self.name
    }

    fn token(&self) -> FencingToken {
        self.tokens.first().copied().unwrap_or(FencingToken::new(0))
    }

    fn validity(&self) -> Duration {
        self.expires().map_or(Duration::ZERO, |e| {
            e.saturating_duration_since(Instant::now())
        })
    }

    fn extend(&self) -> BoxFuture<'_, Result<Duration, Error>> {
        self.extend_for(self.ttl)
    }

    fn extend_for(&self, ttl: Duration) -> BoxFuture<'_, Result<Duration, Error>> {
        Box::pin(async move {
            check_extension(ttl)?;
            let mut names = self.shared.names();
            let now = Instant::now();
            // Every key must still be ours and live; then every one is renewed.
            let live = self.keys.iter().all(|key| {
                names
                    .get_mut(key)
                    .and_then(|n| n.holder_mut(self.owner))
                    .is_some_and(|h| h.expires > now)
            });
            if !live {
                return Err(self.lost_error());
            }
            let mut left = Duration::MAX;
            for key in &self.keys {
                if let Some(h) = names.get_mut(key).and_then(|n| n.holder_mut(self.owner)) {
                    h.expires = h.expires.max(now + ttl);
                    left = left.min(h.expires - now);
                }
            }
            Ok(left)
        })
    }

    fn lost(&self) -> BoxFuture<'_, LossReason> {
        Box::pin(async move {
            // Sleeps to the current expiry and looks again: an extension moves it.
            while let Some(expires) = self.expires() {
                tokio::time::sleep_until(expires).await;
            }
            LossReason::ValidityElapsed
        })
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, Result<bool, Error>> {
        let held = self.free();
        Box::pin(async move { Ok(held) })
    }
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        if !self.released {
            self.free();
        }
    }
}
