//! The reader-writer lock: many readers or one writer, over the quorum. A sibling of the
//! mutex on the lease core: the grant round, the waiting loop, the scoped run and the
//! held lease are the core's; what is its own is the two per-node claims
//! (`rw_read.lua`, `rw_write.lua`) and how a reader's lease is kept (an entry in a reader
//! set, [`Hold::Member`](crate::scripts::Hold)).
//!
//! # Why majorities suffice
//!
//! Exclusion between a reader and a writer is a conflict between two holders, which is
//! what a majority rules out (unlike a K-permit limit; see the semaphore). A reader's
//! majority and a writer's majority share a node. On that node the writer's grant
//! refuses while a live reader entry is there, and the reader's grant refuses while the
//! writer's key is there; each stays until released or expired, and the drift allowance
//! ends the validity before any node's lease. So whichever of the two came second on the
//! shared node was refused there, and cannot hold a majority at the same time as the
//! other. Writers exclude each other exactly as the mutex does (same key semantics, same
//! token argument: the counter is incremented only on a grant, while the key is ours,
//! and the token is committed on a majority).
//!
//! # Tokens
//!
//! A writer's token is the mutex's: strictly increasing across writers. A reader's token
//! is the largest counter its granting nodes reported, not committed (readers do not
//! exclude each other, so nothing needs to be above it): it is **at least the token of
//! every writer that acquired before the reader started**. That writer committed T on a
//! majority before its acquisition returned; the reader's majority shares a node with it,
//! whose counter was at least T when the reader's grant ran. So storage can tell a read
//! made after a write (`read token >= write token`) from one that may have started
//! before it. Readers may share a token with each other and with the last writer.
//!
//! # Writers are not starved
//!
//! A writer refused because readers are live leaves a waiting marker on those nodes
//! (expiring with its lease, renewed while it retries); new readers are refused where a
//! marker is. The live readers finish or expire, each on its own lease (a crashed reader
//! pins no one beyond its TTL), and the writer gets in. A writer that gives up leaves
//! its markers to expire within one TTL. Readers can be starved by a stream of writers:
//! this is a writer-preferring lock.
//!
//! The model in `src/models/mutex.rs` (its reader-writer configuration) checks all of
//! this over every schedule of a small system, including lost replies, repeated calls
//! and crashes, and finds the break when a reader ignores the writer or a writer the
//! readers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::client::{Client, Watchdog};
use crate::error::Error;
use crate::lease::grant::{self, Granted, Won};
use crate::lease::wait::{self, Waiting};
use crate::mutex::{AcquireOptions, AcquirePlan, LockGuard, check_resource, wraps_guard};
use crate::node::Announce;
use crate::ops::RwLockStatus;
use crate::scripts::RwKeys;

/// A reader-writer lock over the client's nodes: many [`ReadGuard`]s or one
/// [`WriteGuard`] at a time. Get one with [`Client::rwlock`]; it is cheap to clone.
///
/// ```no_run
/// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
/// let catalog = client.rwlock("catalog")?;
/// let read = catalog.read().await?; // shared with other readers
/// println!("reading as of token {}", read.token());
/// read.release().await?;
/// let write = catalog.write().await?; // alone
/// println!("writing with token {}", write.token());
/// write.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RwLock {
    client: Client,
    name: Arc<str>,
    keys: Arc<RwKeys>,
}

impl std::fmt::Debug for RwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLock")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Which side an attempt takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

impl Client {
    /// The reader-writer lock `name`; nothing is contacted yet. Its keys are apart from
    /// a mutex of the same name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty or over-long name.
    pub fn rwlock(&self, name: &str) -> Result<RwLock, Error> {
        check_resource(name)?;
        Ok(RwLock {
            client: self.clone(),
            name: name.into(),
            keys: Arc::new(RwKeys::new(&self.settings().prefix, name)),
        })
    }
}

impl RwLock {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every node's view of the lock, without changing anything; for operators and
    /// dashboards, not for deciding who may write: the writer on a quorum (with the
    /// newest writer token), the readers live on a quorum, and a writer waiting on a
    /// quorum (whose marker keeps new readers out). Unreachable nodes are reported per
    /// node.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let status = client.rwlock("catalog")?.inspect().await;
    /// match &status.writer.holder {
    ///     Some(w) => println!("written by {w}"),
    ///     None => println!("{} readers", status.readers.len()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn inspect(&self) -> RwLockStatus {
        self.client.inspect_rw(&self.name, &self.keys).await
    }

    /// One attempt to read, on all nodes at once: `Ok(None)` when a writer holds or
    /// waits on enough nodes to rule out a quorum.
    ///
    /// # Errors
    ///
    /// As [`Client::try_acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_read(&self) -> Result<Option<ReadGuard>, Error> {
        self.try_read_with(AcquireOptions::new()).await
    }

    /// [`try_read`](Self::try_read) with per-call options (the watchdog is off unless
    /// the options turn it on).
    ///
    /// # Errors
    ///
    /// As [`try_read`](Self::try_read), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_read_with(&self, options: AcquireOptions) -> Result<Option<ReadGuard>, Error> {
        let plan = self.client.plan(&options, Watchdog::Off)?;
        let guard = self
            .attempt(Side::Read, &plan, &Waiter::new(self, Side::Read))
            .await?;
        Ok(guard.map(|guard| ReadGuard { guard }))
    }

    /// Reads, waiting up to the client's wait timeout for writers to finish (woken by
    /// their release); a watchdog keeps the read lease alive unless turned off.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn read(&self) -> Result<ReadGuard, Error> {
        self.read_with(AcquireOptions::new()).await
    }

    /// [`read`](Self::read) with per-call options.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn read_with(&self, options: AcquireOptions) -> Result<ReadGuard, Error> {
        let guard = self.wait(Side::Read, options).await?;
        Ok(ReadGuard { guard })
    }

    /// One attempt to write, on all nodes at once: `Ok(None)` when another writer or
    /// live readers rule out a quorum (the waiting marker it left where readers are is
    /// withdrawn at once: nobody waits).
    ///
    /// # Errors
    ///
    /// As [`Client::try_acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_write(&self) -> Result<Option<WriteGuard>, Error> {
        self.try_write_with(AcquireOptions::new()).await
    }

    /// [`try_write`](Self::try_write) with per-call options (the watchdog is off unless
    /// the options turn it on).
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn try_write_with(
        &self,
        options: AcquireOptions,
    ) -> Result<Option<WriteGuard>, Error> {
        let plan = self.client.plan(&options, Watchdog::Off)?;
        let waiter = Waiter::new(self, Side::Write);
        let guard = self.attempt(Side::Write, &plan, &waiter).await?;
        Ok(guard.map(|guard| {
            waiter.done();
            WriteGuard { guard }
        }))
    }

    /// Writes, waiting up to the client's wait timeout for readers and writers to finish
    /// (new readers wait behind this writer); a watchdog keeps the lease alive unless
    /// turned off.
    ///
    /// # Errors
    ///
    /// As [`Client::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn write(&self) -> Result<WriteGuard, Error> {
        self.write_with(AcquireOptions::new()).await
    }

    /// [`write`](Self::write) with per-call options.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write), plus [`Error::Config`] for a bad option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future at any `.await` releases, in the background, whatever
    /// it had been granted so far, so nothing stays held until its TTL runs out, and no lease
    /// is ever held without a guard (`tests/cancel.rs`).
    pub async fn write_with(&self, options: AcquireOptions) -> Result<WriteGuard, Error> {
        let guard = self.wait(Side::Write, options).await?;
        Ok(WriteGuard { guard })
    }

    /// Runs `work` as a reader, as [`Client::run`] does under a lock.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read); [`Error::Lost`] when the lease was lost before `work`
    /// finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future cancels `work` at its current `.await` and releases
    /// the lock (from the guard's drop), as a loss does.
    pub async fn run_read<T>(&self, work: impl AsyncFnOnce(&ReadGuard) -> T) -> Result<T, Error> {
        let guard = self
            .read_with(AcquireOptions::new().watchdog(Watchdog::On))
            .await?;
        wait::scoped(guard, self.not_owner(), work).await
    }

    /// Runs `work` as the writer, as [`Client::run`] does under a lock.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let token = client
    ///     .rwlock("catalog")?
    ///     .run_write(async |w| w.token()) // ... pass it to every write ...
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write); [`Error::Lost`] when the lease was lost before `work`
    /// finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future cancels `work` at its current `.await` and releases
    /// the lock (from the guard's drop), as a loss does.
    pub async fn run_write<T>(&self, work: impl AsyncFnOnce(&WriteGuard) -> T) -> Result<T, Error> {
        let guard = self
            .write_with(AcquireOptions::new().watchdog(Watchdog::On))
            .await?;
        wait::scoped(guard, self.not_owner(), work).await
    }

    fn not_owner(&self) -> usize {
        self.client.nodes().len() + 1 - self.client.quorum()
    }

    async fn wait(&self, side: Side, options: AcquireOptions) -> Result<LockGuard, Error> {
        let s = self.client.settings();
        let plan = self.client.plan(&options, s.watchdog)?;
        let waiting = Waiting {
            wakeups: self.client.wakeups(),
            counters: self.client.nodes().counters(),
            channel: &self.keys.writer.released,
            resource: &self.name,
            wait: options.wait.unwrap_or(s.wait),
            retry_delay: s.retry_delay,
            retry_jitter: s.retry_jitter,
        };
        let waiter = Waiter::new(self, side);
        let won = wait::until_won(waiting, || self.attempt(side, &plan, &waiter)).await;
        if won.is_ok() {
            waiter.done();
        }
        won
    }

    /// One attempt on `side`: the lease core's grant with that side's claim. Writers'
    /// tokens are committed; readers' are the largest counter seen.
    async fn attempt(
        &self,
        side: Side,
        plan: &AcquirePlan,
        waiter: &Waiter<'_>,
    ) -> Result<Option<LockGuard>, Error> {
        let lease_keys = match side {
            Side::Read => &self.keys.reader,
            Side::Write => &self.keys.writer,
        };
        let candidates = std::slice::from_ref(lease_keys);
        let terms = self.client.terms(plan, side == Side::Write);
        let name = |_| self.name.to_string();
        let won = grant::acquire(
            self.client.nodes(),
            &self.name,
            candidates,
            terms,
            name,
            |c| {
                let keys = Arc::clone(&self.keys);
                let (id, marked) = (Arc::clone(&waiter.id), Arc::clone(&waiter.marked));
                async move {
                    let on_repeat = c.on_repeat();
                    let counter = match side {
                        Side::Read => {
                            c.node
                                .grant_reader(&keys, &c.owner, c.ttl_ms, on_repeat)
                                .await?
                        }
                        Side::Write => {
                            let granted = c
                                .node
                                .grant_writer(&keys, &c.owner, &id, c.ttl_ms, on_repeat)
                                .await;
                            if !matches!(granted, Ok(Some(_))) {
                                marked.store(true, Ordering::Relaxed);
                            }
                            granted?
                        }
                    };
                    Ok(counter.map(Granted::only))
                }
            },
        )
        .await?;
        Ok(won.map(|Won { lease, .. }| self.client.guard(lease, plan)))
    }
}

/// One writer's wait (or single attempt): the id its waiting markers carry through its
/// attempts, and whether any node may have left one (it refused, or failed: a timed-out
/// call may still run). Dropped, it withdraws them from every node: announced when the
/// writer did not get in (gave up, or was cancelled), so the readers it held off go on at
/// once instead of after its lease; quietly when it did (its grant removed the markers
/// where it was granted, and its key holds readers off anyway; elsewhere they must not
/// outlive it). A writer whose process dies leaves them to expire with its lease, and so
/// does a call that answers only after the wait ended.
struct Waiter<'a> {
    lock: &'a RwLock,
    side: Side,
    id: Arc<str>,
    marked: Arc<AtomicBool>,
    won: AtomicBool,
}

impl<'a> Waiter<'a> {
    fn new(lock: &'a RwLock, side: Side) -> Self {
        Self {
            lock,
            side,
            id: crate::lease::grant::owner_id(),
            marked: Arc::default(),
            won: AtomicBool::new(false),
        }
    }

    /// The writer got in.
    fn done(&self) {
        self.won.store(true, Ordering::Relaxed);
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        // Readers leave no markers. Without a runtime, markers expire.
        if self.side == Side::Read
            || !self.marked.load(Ordering::Relaxed)
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let announce = if self.won.load(Ordering::Relaxed) {
            Announce::Quietly
        } else {
            Announce::Waiters
        };
        let nodes = self.lock.client.nodes();
        let all: Vec<usize> = (0..nodes.len()).collect();
        nodes.release_untracked(&all, &self.lock.keys.waiting, &self.id, announce);
    }
}

/// A held read lease of an [`RwLock`]: shared with other readers, never with a writer.
/// Derefs to a [`LockGuard`] (validity, extend, watchdog, `lost`).
///
/// Its [`token`](LockGuard::token) is at least the token of every writer that acquired
/// before this reader started (it is not unique: readers share it), so storage can tell
/// reads made after a write from reads that may have started before it.
#[must_use = "the read lease is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ReadGuard {
    guard: LockGuard,
}

wraps_guard!(ReadGuard, "read lease");

/// The held write lease of an [`RwLock`]: no reader and no other writer while it is
/// valid. Derefs to a [`LockGuard`]; its [`token`](LockGuard::token) strictly increases
/// across writers, as a mutex's does: pass it to every write.
#[must_use = "the write lease is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct WriteGuard {
    guard: LockGuard,
}

wraps_guard!(WriteGuard, "write lease");
