//! A conformance suite for the lock interfaces ([`LockProvider`] and the rest): runs any
//! implementation through the contract (exclusion, token order, release answers,
//! extension, expiry and loss, cancellation), and any [`SemaphoreProvider`] through the
//! semaphore's ([`Conformance::check_semaphores`]: the permit bound, tokens per slot,
//! wake-up on release, expiry, cancellation), and names the first broken promise. The
//! crate runs it against the quorum client on real nodes and against [`LocalLocks`];
//! run it against your own implementation or fake the same way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use redfence::LocalLocks;
//! use redfence::testkit::conformance::Conformance;
//!
//! let passed = Conformance::new().check(&LocalLocks::new()).await?;
//! println!("{} checks passed", passed.len());
//! # Ok(())
//! # }
//! ```
//!
//! It takes a few TTLs of real time (default TTL 1 s), and uses names of its own (with a
//! random suffix), so it can share nodes with other work.
//!
//! [`LocalLocks`]: crate::LocalLocks

use std::collections::HashMap;
use std::time::Duration;

use crate::{
    DistributedElection, DistributedRwLock, DistributedSemaphore, ElectionProvider, Error,
    FencingToken, LockHandle, LockProvider, LossReason, RwLockProvider, SemaphoreProvider,
    SetProvider,
};

/// A broken promise: which check, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conformance check {check:?} failed: {detail}")]
#[non_exhaustive]
pub struct Violation {
    /// The check that failed.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}

/// The suite's settings.
#[derive(Debug, Clone)]
#[must_use = "call .check(provider)"]
pub struct Conformance {
    ttl: Duration,
}

impl Default for Conformance {
    fn default() -> Self {
        Self::new()
    }
}

fn fail<T>(check: &'static str, detail: impl Into<String>) -> Result<T, Violation> {
    Err(Violation {
        check,
        detail: detail.into(),
    })
}

/// `Ok` or the error, as a violation of `check`.
fn ok<T>(check: &'static str, r: Result<T, Error>) -> Result<T, Violation> {
    r.or_else(|e| fail(check, format!("unexpected error: {e}")))
}

impl Conformance {
    /// The suite with a 1 s TTL for the leases it takes.
    pub fn new() -> Self {
        Self {
            ttl: Duration::from_secs(1),
        }
    }

    /// The TTL of the leases the suite takes (long enough for the implementation's own
    /// minimum; the suite waits a few of them). Defaults to 1 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Runs every check against `provider`; the names of the checks passed, or the first
    /// violation.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub async fn check(&self, provider: &dyn LockProvider) -> Result<Vec<&'static str>, Violation> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let name = |check: &str| format!("conformance-{check}-{run}");
        self.exclusion(provider, &name("exclusion")).await?;
        self.tokens(provider, &name("tokens")).await?;
        self.extension(provider, &name("extension")).await?;
        self.expiry(provider, &name("expiry")).await?;
        self.cancellation(provider, &name("cancellation")).await?;
        Ok(vec![
            "exclusion",
            "tokens",
            "release",
            "extension",
            "expiry",
            "cancellation",
        ])
    }

    async fn take(
        &self,
        check: &'static str,
        provider: &dyn LockProvider,
        name: &str,
    ) -> Result<Box<dyn LockHandle>, Violation> {
        let lock = ok(check, provider.lock(name))?;
        ok(
            check,
            lock.acquire(Some(self.ttl), Some(3 * self.ttl)).await,
        )
    }

    /// A held lock is refused to every other attempt, and a wait for it times out as
    /// "held".
    async fn exclusion(&self, provider: &dyn LockProvider, name: &str) -> Result<(), Violation> {
        const CHECK: &str = "exclusion";
        let held = self.take(CHECK, provider, name).await?;
        let lock = ok(CHECK, provider.lock(name))?;
        if ok(CHECK, lock.try_acquire(Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "a second try_acquire got the lock while it was held");
        }
        match lock.acquire(Some(self.ttl), Some(self.ttl / 10)).await {
            Err(e) if e.is_held_elsewhere() => {}
            Err(e) => return fail(CHECK, format!("a wait on a held lock failed with {e}")),
            Ok(_) => return fail(CHECK, "a waiter got the lock while it was held"),
        }
        match held.release().await {
            Ok(true) => Ok(()),
            other => fail(
                "release",
                format!("releasing a held lock answered {other:?}"),
            ),
        }
    }

    /// Successive holders' tokens strictly increase.
    async fn tokens(&self, provider: &dyn LockProvider, name: &str) -> Result<(), Violation> {
        const CHECK: &str = "tokens";
        let mut last = None;
        for _ in 0..5 {
            let held = self.take(CHECK, provider, name).await?;
            let token = held.token();
            if let Some(prev) = last.filter(|p| token <= *p) {
                return fail(CHECK, format!("token {token} handed out after {prev}"));
            }
            last = Some(token);
            if !ok(CHECK, held.release().await)? {
                return fail("release", "releasing a held lock answered false");
            }
        }
        Ok(())
    }

    /// An extension renews the lease: the lock stays held past its first expiry.
    async fn extension(&self, provider: &dyn LockProvider, name: &str) -> Result<(), Violation> {
        const CHECK: &str = "extension";
        let held = self.take(CHECK, provider, name).await?;
        tokio::time::sleep(self.ttl / 2).await;
        let validity = ok(CHECK, held.extend().await)?;
        if validity <= self.ttl / 2 {
            return fail(
                CHECK,
                format!("validity after extending is only {validity:?}"),
            );
        }
        // Past the first lease's end: still held, still exclusive.
        tokio::time::sleep(self.ttl * 7 / 10).await;
        if held.validity().is_zero() {
            return fail(CHECK, "the extended lock expired with its first lease");
        }
        let lock = ok(CHECK, provider.lock(name))?;
        if ok(CHECK, lock.try_acquire(Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "another holder got an extended lock");
        }
        match held.release().await {
            Ok(true) => Ok(()),
            other => fail(
                CHECK,
                format!("releasing the extended lock answered {other:?}"),
            ),
        }
    }

    /// A lease left alone expires: its loss is reported, its validity is zero, the lock
    /// passes on with a larger token, and the late release says it was lost.
    async fn expiry(&self, provider: &dyn LockProvider, name: &str) -> Result<(), Violation> {
        const CHECK: &str = "expiry";
        let held = self.take(CHECK, provider, name).await?;
        let reason = tokio::time::timeout(2 * self.ttl, held.lost()).await;
        match reason {
            Ok(LossReason::Released) => return fail(CHECK, "lost() said released, not lost"),
            Ok(_) => {}
            Err(_) => return fail(CHECK, "no loss reported after twice the TTL"),
        }
        if !held.validity().is_zero() {
            return fail(
                CHECK,
                format!("validity {:?} after the loss", held.validity()),
            );
        }
        let next = self.take(CHECK, provider, name).await?;
        if next.token() <= held.token() {
            return fail(
                "tokens",
                format!(
                    "token {} after the expired holder's {}",
                    next.token(),
                    held.token()
                ),
            );
        }
        if ok(CHECK, held.release().await)? {
            return fail(
                CHECK,
                "releasing an expired lock that passed on answered true",
            );
        }
        match next.release().await {
            Ok(true) => Ok(()),
            other => fail(
                CHECK,
                format!("releasing the next holder answered {other:?}"),
            ),
        }
    }

    /// A waiter whose acquire future is dropped holds nothing afterwards.
    async fn cancellation(&self, provider: &dyn LockProvider, name: &str) -> Result<(), Violation> {
        const CHECK: &str = "cancellation";
        let held = self.take(CHECK, provider, name).await?;
        let lock = ok(CHECK, provider.lock(name))?;
        let waited = tokio::time::timeout(
            self.ttl / 10,
            lock.acquire(Some(self.ttl), Some(3 * self.ttl)),
        )
        .await;
        if waited.is_ok() {
            return fail(CHECK, "a waiter finished while the lock was held");
        }
        if !ok(CHECK, held.release().await)? {
            return fail("release", "releasing a held lock answered false");
        }
        let next = self.take(CHECK, provider, name).await?;
        ok(CHECK, next.release().await).map(drop)
    }

    /// Runs every semaphore check against `provider` (the contract of
    /// [`SemaphoreProvider`]); the names of the checks passed, or the first violation.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub async fn check_semaphores(
        &self,
        provider: &dyn SemaphoreProvider,
    ) -> Result<Vec<&'static str>, Violation> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let name = |check: &str| format!("conformance-{check}-{run}");
        self.permit_bound(provider, &name("bound")).await?;
        self.permit_tokens(provider, &name("tokens")).await?;
        self.permit_wakeup(provider, &name("wakeup")).await?;
        self.permit_expiry(provider, &name("expiry")).await?;
        self.permit_cancellation(provider, &name("cancellation"))
            .await?;
        Ok(vec![
            "permit bound",
            "permit tokens",
            "permit release wakes a waiter",
            "permit expiry",
            "permit cancellation",
        ])
    }

    async fn permits(
        &self,
        check: &'static str,
        sem: &dyn DistributedSemaphore,
        n: usize,
    ) -> Result<Vec<Box<dyn LockHandle>>, Violation> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(ok(
                check,
                sem.acquire(Some(self.ttl), Some(3 * self.ttl)).await,
            )?);
        }
        Ok(held)
    }

    /// K permits are handed out on K distinct slots; the next attempt is refused and a
    /// wait for it times out as "held".
    async fn permit_bound(
        &self,
        provider: &dyn SemaphoreProvider,
        name: &str,
    ) -> Result<(), Violation> {
        const CHECK: &str = "permit bound";
        let sem = ok(CHECK, provider.semaphore(name, 3))?;
        if sem.permits() != 3 || sem.name() != name {
            return fail(
                CHECK,
                format!("semaphore {:?} with {} permits", sem.name(), sem.permits()),
            );
        }
        let held = self.permits(CHECK, sem.as_ref(), 3).await?;
        let mut names: Vec<&str> = held.iter().map(|h| h.name()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != 3 || !names.iter().all(|n| n.starts_with(&format!("{name}#"))) {
            return fail(CHECK, format!("three permits named {names:?}"));
        }
        if ok(CHECK, sem.try_acquire(Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "a fourth permit of three was handed out");
        }
        match sem.acquire(Some(self.ttl), Some(self.ttl / 10)).await {
            Err(e) if e.is_held_elsewhere() => {}
            Err(e) => return fail(CHECK, format!("a wait on a full semaphore failed with {e}")),
            Ok(_) => return fail(CHECK, "a waiter got a fourth permit of three"),
        }
        for h in held {
            if !ok(CHECK, h.release().await)? {
                return fail(CHECK, "releasing a held permit answered false");
            }
        }
        Ok(())
    }

    /// Each slot's tokens strictly increase across its holders.
    async fn permit_tokens(
        &self,
        provider: &dyn SemaphoreProvider,
        name: &str,
    ) -> Result<(), Violation> {
        const CHECK: &str = "permit tokens";
        let sem = ok(CHECK, provider.semaphore(name, 2))?;
        let mut last: HashMap<String, FencingToken> = HashMap::new();
        for _ in 0..4 {
            for h in self.permits(CHECK, sem.as_ref(), 2).await? {
                if let Some(prev) = last
                    .insert(h.name().to_owned(), h.token())
                    .filter(|p| h.token() <= *p)
                {
                    return fail(
                        CHECK,
                        format!("{} handed out token {} after {prev}", h.name(), h.token()),
                    );
                }
                ok(CHECK, h.release().await)?;
            }
        }
        Ok(())
    }

    /// A release hands the permit to a waiter well before the released lease would have
    /// expired.
    async fn permit_wakeup(
        &self,
        provider: &dyn SemaphoreProvider,
        name: &str,
    ) -> Result<(), Violation> {
        const CHECK: &str = "permit release wakes a waiter";
        let sem = ok(CHECK, provider.semaphore(name, 1))?;
        let held = self.permits(CHECK, sem.as_ref(), 1).await?;
        let start = tokio::time::Instant::now();
        let (waited, released) =
            tokio::join!(sem.acquire(Some(self.ttl), Some(3 * self.ttl)), async {
                tokio::time::sleep(self.ttl / 10).await;
                let mut held = held;
                match held.pop() {
                    Some(h) => h.release().await,
                    None => Ok(false),
                }
            });
        if !ok(CHECK, released)? {
            return fail(CHECK, "releasing a held permit answered false");
        }
        let next = ok(CHECK, waited)?;
        if start.elapsed() >= self.ttl {
            return fail(
                CHECK,
                format!(
                    "the waiter got the permit only after {:?}, when the released lease \
                     would have expired anyway",
                    start.elapsed()
                ),
            );
        }
        ok(CHECK, next.release().await).map(drop)
    }

    /// A permit left alone expires: its loss is reported and the slot passes on with a
    /// larger token.
    async fn permit_expiry(
        &self,
        provider: &dyn SemaphoreProvider,
        name: &str,
    ) -> Result<(), Violation> {
        const CHECK: &str = "permit expiry";
        let sem = ok(CHECK, provider.semaphore(name, 1))?;
        let held = ok(CHECK, sem.acquire(Some(self.ttl), Some(3 * self.ttl)).await)?;
        match tokio::time::timeout(2 * self.ttl, held.lost()).await {
            Ok(LossReason::Released) => return fail(CHECK, "lost() said released, not lost"),
            Ok(_) => {}
            Err(_) => return fail(CHECK, "no loss reported after twice the TTL"),
        }
        let next = ok(CHECK, sem.acquire(Some(self.ttl), Some(3 * self.ttl)).await)?;
        if next.token() <= held.token() {
            return fail(
                CHECK,
                format!(
                    "token {} after the expired holder's {}",
                    next.token(),
                    held.token()
                ),
            );
        }
        drop(held);
        ok(CHECK, next.release().await).map(drop)
    }

    /// A waiter whose acquire future is dropped holds nothing afterwards: every permit
    /// can be taken again.
    async fn permit_cancellation(
        &self,
        provider: &dyn SemaphoreProvider,
        name: &str,
    ) -> Result<(), Violation> {
        const CHECK: &str = "permit cancellation";
        let sem = ok(CHECK, provider.semaphore(name, 2))?;
        let held = self.permits(CHECK, sem.as_ref(), 2).await?;
        let waited = tokio::time::timeout(
            self.ttl / 10,
            sem.acquire(Some(self.ttl), Some(3 * self.ttl)),
        )
        .await;
        if waited.is_ok() {
            return fail(CHECK, "a waiter finished while every permit was held");
        }
        for h in held {
            ok(CHECK, h.release().await)?;
        }
        for h in self.permits(CHECK, sem.as_ref(), 2).await? {
            ok(CHECK, h.release().await)?;
        }
        Ok(())
    }

    /// Runs every reader-writer check against `provider` (the contract of
    /// [`RwLockProvider`]); the names of the checks passed, or the first violation.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub async fn check_rwlocks(
        &self,
        provider: &dyn RwLockProvider,
    ) -> Result<Vec<&'static str>, Violation> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let lock = |check: &str| {
            let name = format!("conformance-rw-{check}-{run}");
            ok("rw", provider.rwlock(&name))
        };
        self.rw_sharing(lock("sharing")?.as_ref()).await?;
        self.rw_exclusion(lock("exclusion")?.as_ref()).await?;
        self.rw_preference(lock("preference")?.as_ref()).await?;
        self.rw_tokens(lock("tokens")?.as_ref()).await?;
        self.rw_expiry(lock("expiry")?.as_ref()).await?;
        Ok(vec![
            "rw readers share",
            "rw writer alone",
            "rw writer preference",
            "rw tokens",
            "rw expiry",
        ])
    }

    fn wait(&self) -> Option<Duration> {
        Some(3 * self.ttl)
    }

    /// Readers hold together; a writer is refused meanwhile, and a wait for it times out
    /// as "held".
    async fn rw_sharing(&self, lock: &dyn DistributedRwLock) -> Result<(), Violation> {
        const CHECK: &str = "rw readers share";
        let a = ok(CHECK, lock.read(Some(self.ttl), self.wait()).await)?;
        let Some(b) = ok(CHECK, lock.try_read(Some(self.ttl)).await)? else {
            return fail(CHECK, "a second reader was refused");
        };
        if ok(CHECK, lock.try_write(Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "a writer got in with two readers");
        }
        match lock.write(Some(self.ttl), Some(self.ttl / 10)).await {
            Err(e) if e.is_held_elsewhere() => {}
            Err(e) => return fail(CHECK, format!("a writer's wait failed with {e}")),
            Ok(_) => return fail(CHECK, "a waiting writer got in with two readers"),
        }
        for h in [a, b] {
            if !ok(CHECK, h.release().await)? {
                return fail(CHECK, "releasing a held reader answered false");
            }
        }
        Ok(())
    }

    /// A writer holds alone: readers and writers are refused until it releases.
    async fn rw_exclusion(&self, lock: &dyn DistributedRwLock) -> Result<(), Violation> {
        const CHECK: &str = "rw writer alone";
        let w = ok(CHECK, lock.write(Some(self.ttl), self.wait()).await)?;
        if ok(CHECK, lock.try_read(Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "a reader got in with a writer");
        }
        if ok(CHECK, lock.try_write(Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "a second writer got in");
        }
        match lock.read(Some(self.ttl), Some(self.ttl / 10)).await {
            Err(e) if e.is_held_elsewhere() => {}
            Err(e) => return fail(CHECK, format!("a reader's wait failed with {e}")),
            Ok(_) => return fail(CHECK, "a waiting reader got in with a writer"),
        }
        if !ok(CHECK, w.release().await)? {
            return fail(CHECK, "releasing the writer answered false");
        }
        let r = ok(CHECK, lock.read(Some(self.ttl), self.wait()).await)?;
        ok(CHECK, r.release().await).map(drop)
    }

    /// A writer waiting for a reader holds new readers off, and gets in when the reader
    /// leaves.
    async fn rw_preference(&self, lock: &dyn DistributedRwLock) -> Result<(), Violation> {
        const CHECK: &str = "rw writer preference";
        let r = ok(CHECK, lock.read(Some(self.ttl), self.wait()).await)?;
        let (w, newcomer) = tokio::join!(lock.write(Some(self.ttl), self.wait()), async {
            tokio::time::sleep(self.ttl / 5).await;
            let newcomer = lock.try_read(Some(self.ttl)).await;
            let released = r.release().await;
            (newcomer, released)
        });
        let (newcomer, released) = newcomer;
        if ok(CHECK, newcomer)?.is_some() {
            return fail(CHECK, "a new reader got in while a writer waited");
        }
        if !ok(CHECK, released)? {
            return fail(CHECK, "releasing the first reader answered false");
        }
        let w = ok(CHECK, w)?;
        ok(CHECK, w.release().await).map(drop)
    }

    /// Writers' tokens strictly increase; a reader's is at least every earlier writer's.
    async fn rw_tokens(&self, lock: &dyn DistributedRwLock) -> Result<(), Violation> {
        const CHECK: &str = "rw tokens";
        let mut last: Option<FencingToken> = None;
        for _ in 0..3 {
            let w = ok(CHECK, lock.write(Some(self.ttl), self.wait()).await)?;
            let written = w.token();
            if let Some(prev) = last.filter(|p| written <= *p) {
                return fail(CHECK, format!("writer token {written} after {prev}"));
            }
            last = Some(written);
            ok(CHECK, w.release().await)?;
            let r = ok(CHECK, lock.read(Some(self.ttl), self.wait()).await)?;
            if r.token() < written {
                return fail(
                    CHECK,
                    format!(
                        "reader token {} below the earlier writer's {written}",
                        r.token()
                    ),
                );
            }
            ok(CHECK, r.release().await)?;
        }
        Ok(())
    }

    /// A reader left alone expires: its loss is reported and a writer gets in.
    async fn rw_expiry(&self, lock: &dyn DistributedRwLock) -> Result<(), Violation> {
        const CHECK: &str = "rw expiry";
        let r = ok(CHECK, lock.read(Some(self.ttl), self.wait()).await)?;
        match tokio::time::timeout(2 * self.ttl, r.lost()).await {
            Ok(LossReason::Released) => return fail(CHECK, "lost() said released, not lost"),
            Ok(_) => {}
            Err(_) => return fail(CHECK, "no loss reported after twice the TTL"),
        }
        let w = ok(CHECK, lock.write(Some(self.ttl), self.wait()).await)?;
        if ok(CHECK, r.release().await)? {
            return fail(CHECK, "releasing an expired reader answered true");
        }
        ok(CHECK, w.release().await).map(drop)
    }

    /// Runs every set check against `sets`, with `locks` the same provider's single locks
    /// (the contract of [`SetProvider`]); the names of the checks passed, or the first
    /// violation.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub async fn check_sets(
        &self,
        sets: &dyn SetProvider,
        locks: &dyn LockProvider,
    ) -> Result<Vec<&'static str>, Violation> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let names = |check: &str| -> [String; 3] {
            ["a", "b", "c"].map(|x| format!("conformance-set-{check}-{run}-{x}"))
        };
        self.set_whole(sets, locks, &names("whole")).await?;
        self.set_tokens(sets, locks, &names("tokens")).await?;
        self.set_expiry(sets, locks, &names("expiry")).await?;
        Ok(vec!["set all or nothing", "set tokens", "set expiry"])
    }

    /// One lock of the set held elsewhere: the set is refused and none of it stays taken;
    /// then it is taken whole, every lock refused to others, and released whole.
    async fn set_whole(
        &self,
        sets: &dyn SetProvider,
        locks: &dyn LockProvider,
        names: &[String; 3],
    ) -> Result<(), Violation> {
        const CHECK: &str = "set all or nothing";
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let b = ok(CHECK, locks.lock(&names[1]))?;
        let held = ok(CHECK, b.acquire(Some(self.ttl), self.wait()).await)?;
        if ok(CHECK, sets.try_acquire_all(&all, Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "a set was taken while one of its locks was held");
        }
        for name in [&names[0], &names[2]] {
            let lock = ok(CHECK, locks.lock(name))?;
            match ok(CHECK, lock.try_acquire(Some(self.ttl)).await)? {
                Some(h) => drop(ok(CHECK, h.release().await)?),
                None => return fail(CHECK, format!("a refused set left {name} taken")),
            }
        }
        ok(CHECK, held.release().await)?;
        let set = ok(
            CHECK,
            sets.acquire_all(&all, Some(self.ttl), self.wait()).await,
        )?;
        for name in names {
            let lock = ok(CHECK, locks.lock(name))?;
            if ok(CHECK, lock.try_acquire(Some(self.ttl)).await)?.is_some() {
                return fail(CHECK, format!("{name} was taken while its set was held"));
            }
        }
        if !ok(CHECK, set.release().await)? {
            return fail(CHECK, "releasing a held set answered false");
        }
        for name in names {
            let lock = ok(CHECK, locks.lock(name))?;
            match ok(CHECK, lock.try_acquire(Some(self.ttl)).await)? {
                Some(h) => drop(ok(CHECK, h.release().await)?),
                None => return fail(CHECK, format!("{name} stayed taken after its set")),
            }
        }
        Ok(())
    }

    /// Each lock's tokens increase across its holders, alone or in a set; a set lists
    /// them in name order.
    async fn set_tokens(
        &self,
        sets: &dyn SetProvider,
        locks: &dyn LockProvider,
        names: &[String; 3],
    ) -> Result<(), Violation> {
        const CHECK: &str = "set tokens";
        let a = ok(CHECK, locks.lock(&names[0]))?;
        let alone = ok(CHECK, a.acquire(Some(self.ttl), self.wait()).await)?;
        let before = alone.token();
        ok(CHECK, alone.release().await)?;
        // Given out of order: the tokens still come in name order.
        let given = [names[1].as_str(), names[0].as_str()];
        let set = ok(
            CHECK,
            sets.acquire_all(&given, Some(self.ttl), self.wait()).await,
        )?;
        let tokens = set.tokens();
        let order: Vec<&str> = tokens.iter().map(|(n, _)| n.as_str()).collect();
        if order != [names[0].as_str(), names[1].as_str()] {
            return fail(
                CHECK,
                format!("tokens listed as {order:?}, not in name order"),
            );
        }
        let in_set = tokens[0].1;
        if in_set <= before {
            return fail(
                CHECK,
                format!("{} got {in_set} in a set after {before} alone", names[0]),
            );
        }
        ok(CHECK, set.release().await)?;
        let after = ok(CHECK, a.acquire(Some(self.ttl), self.wait()).await)?;
        if after.token() <= in_set {
            return fail(
                CHECK,
                format!(
                    "{} got {} alone after {in_set} in a set",
                    names[0],
                    after.token()
                ),
            );
        }
        ok(CHECK, after.release().await).map(drop)
    }

    /// A set left alone expires whole: its loss is reported, its locks pass on, and its
    /// late release says it was lost.
    async fn set_expiry(
        &self,
        sets: &dyn SetProvider,
        locks: &dyn LockProvider,
        names: &[String; 3],
    ) -> Result<(), Violation> {
        const CHECK: &str = "set expiry";
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let set = ok(
            CHECK,
            sets.acquire_all(&all, Some(self.ttl), self.wait()).await,
        )?;
        match tokio::time::timeout(2 * self.ttl, set.lost()).await {
            Ok(LossReason::Released) => return fail(CHECK, "lost() said released, not lost"),
            Ok(_) => {}
            Err(_) => return fail(CHECK, "no loss reported after twice the TTL"),
        }
        let c = ok(CHECK, locks.lock(&names[2]))?;
        let next = ok(CHECK, c.acquire(Some(self.ttl), self.wait()).await)?;
        if ok(CHECK, set.release().await)? {
            return fail(
                CHECK,
                "releasing an expired set that passed on answered true",
            );
        }
        ok(CHECK, next.release().await).map(drop)
    }

    /// Runs every election check against `provider` (the contract of
    /// [`ElectionProvider`]); the names of the checks passed, or the first violation.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub async fn check_elections(
        &self,
        provider: &dyn ElectionProvider,
    ) -> Result<Vec<&'static str>, Violation> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let election = |check: &str| {
            ok(
                "election",
                provider.election(&format!("conformance-elect-{check}-{run}")),
            )
        };
        self.one_leader(election("one")?.as_ref()).await?;
        self.terms_in_turn(election("terms")?.as_ref()).await?;
        self.leadership_expiry(election("expiry")?.as_ref()).await?;
        Ok(vec!["one leader", "terms in turn", "leadership expiry"])
    }

    /// One leads, with its value and term readable; another candidate is refused.
    async fn one_leader(&self, e: &dyn DistributedElection) -> Result<(), Violation> {
        const CHECK: &str = "one leader";
        if ok(CHECK, e.leader().await)?.is_some() {
            return fail(CHECK, "a leader before any campaign");
        }
        let a = ok(CHECK, e.campaign("a", Some(self.ttl), self.wait()).await)?;
        if ok(CHECK, e.try_campaign("b", Some(self.ttl)).await)?.is_some() {
            return fail(CHECK, "two leaders at once");
        }
        match ok(CHECK, e.leader().await)? {
            Some(l) if l.value == "a" && l.term == a.token() && !l.validity.is_zero() => {}
            other => return fail(CHECK, format!("leader() answered {other:?}")),
        }
        if !ok(CHECK, a.release().await)? {
            return fail(CHECK, "resigning a valid leadership answered false");
        }
        match ok(CHECK, e.leader().await)? {
            None => Ok(()),
            Some(l) => fail(
                CHECK,
                format!("leader() still answered {l:?} after resigning"),
            ),
        }
    }

    /// Successive leaders have strictly increasing terms, each shown by `leader()`.
    async fn terms_in_turn(&self, e: &dyn DistributedElection) -> Result<(), Violation> {
        const CHECK: &str = "terms in turn";
        let mut last: Option<FencingToken> = None;
        for value in ["x", "y", "z"] {
            let l = ok(CHECK, e.campaign(value, Some(self.ttl), self.wait()).await)?;
            if let Some(prev) = last.filter(|p| l.token() <= *p) {
                return fail(CHECK, format!("term {} after {prev}", l.token()));
            }
            last = Some(l.token());
            match ok(CHECK, e.leader().await)? {
                Some(seen) if seen.value == value && seen.term == l.token() => {}
                other => return fail(CHECK, format!("leader() answered {other:?} for {value}")),
            }
            ok(CHECK, l.release().await)?;
        }
        Ok(())
    }

    /// A leadership left alone expires: its loss is reported, `leader()` shows no one,
    /// and the next leader's term is higher.
    async fn leadership_expiry(&self, e: &dyn DistributedElection) -> Result<(), Violation> {
        const CHECK: &str = "leadership expiry";
        let l = ok(CHECK, e.campaign("gone", Some(self.ttl), self.wait()).await)?;
        match tokio::time::timeout(2 * self.ttl, l.lost()).await {
            Ok(LossReason::Released) => return fail(CHECK, "lost() said released, not lost"),
            Ok(_) => {}
            Err(_) => return fail(CHECK, "no loss reported after twice the TTL"),
        }
        // The loss is reported a margin before the nodes' leases end: the record may
        // show for that long, never longer than the lease, and never as another term.
        let gone = tokio::time::Instant::now() + 2 * self.ttl;
        while let Some(seen) = ok(CHECK, e.leader().await)? {
            if seen.term != l.token() || tokio::time::Instant::now() >= gone {
                return fail(CHECK, format!("leader() answered {seen:?} after the loss"));
            }
            tokio::time::sleep(self.ttl / 20).await;
        }
        let next = ok(CHECK, e.campaign("next", Some(self.ttl), self.wait()).await)?;
        if next.token() <= l.token() {
            return fail(
                CHECK,
                format!("term {} after the expired {}", next.token(), l.token()),
            );
        }
        ok(CHECK, next.release().await).map(drop)
    }
}
