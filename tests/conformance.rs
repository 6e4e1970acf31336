//! The lock interfaces' conformance suite, against the quorum client on real nodes, the
//! in-process twin (on tokio's paused clock too), and a deliberately broken
//! implementation that the suite must catch.

mod support;

use std::sync::Arc;
use std::time::Duration;

use redfence::testkit::conformance::Conformance;
use redfence::{
    BoxFuture, DistributedElection, DistributedLock, DistributedRwLock, DistributedSemaphore,
    ElectionProvider, Error, FencingToken, Leader, LocalLocks, LockHandle, LockProvider,
    LossReason, RwLockProvider, SemaphoreProvider, SetHandle, SetProvider,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_client_conforms() {
    let cluster = support::cluster(3);
    // A 1 s lease needs node timeouts well under half of it.
    let client = support::client(&cluster)
        .node_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let provider: Arc<dyn LockProvider> = Arc::new(client.clone());
    let passed = Conformance::new().check(provider.as_ref()).await.unwrap();
    assert_eq!(passed.len(), 6);
    let semaphores: Arc<dyn SemaphoreProvider> = Arc::new(client.clone());
    let passed = Conformance::new()
        .check_semaphores(semaphores.as_ref())
        .await
        .unwrap();
    assert_eq!(passed.len(), 5);
    let rwlocks: Arc<dyn RwLockProvider> = Arc::new(client.clone());
    let passed = Conformance::new()
        .check_rwlocks(rwlocks.as_ref())
        .await
        .unwrap();
    assert_eq!(passed.len(), 5);
    let passed = Conformance::new()
        .check_sets(&client, &client)
        .await
        .unwrap();
    assert_eq!(passed.len(), 3);
    let passed = Conformance::new().check_elections(&client).await.unwrap();
    assert_eq!(passed.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_twin_conforms() {
    let provider: Arc<dyn LockProvider> = Arc::new(LocalLocks::new());
    Conformance::new().check(provider.as_ref()).await.unwrap();
    let locks = LocalLocks::new();
    Conformance::new().check_semaphores(&locks).await.unwrap();
    Conformance::new().check_rwlocks(&locks).await.unwrap();
    Conformance::new().check_sets(&locks, &locks).await.unwrap();
    Conformance::new().check_elections(&locks).await.unwrap();
    // Its semaphores' slots are apart from its locks of the same names.
    let held = locks.lock("x#0").unwrap().try_acquire(None).await.unwrap();
    let sem = SemaphoreProvider::semaphore(&locks, "x", 1).unwrap();
    let permit = sem
        .try_acquire(None)
        .await
        .unwrap()
        .expect("apart from the lock x#0");
    assert_eq!(permit.name(), "x#0");
    assert!(held.is_some());
}

/// On tokio's paused clock the twin's leases follow `advance`: the whole suite, with its
/// several TTLs of waiting, runs in no real time.
#[tokio::test(start_paused = true)]
async fn the_local_twin_runs_on_paused_time() {
    let start = std::time::Instant::now();
    Conformance::new()
        .ttl(Duration::from_secs(60))
        .check(&LocalLocks::new())
        .await
        .unwrap();
    Conformance::new()
        .ttl(Duration::from_secs(60))
        .check_semaphores(&LocalLocks::new())
        .await
        .unwrap();
    Conformance::new()
        .ttl(Duration::from_secs(60))
        .check_rwlocks(&LocalLocks::new())
        .await
        .unwrap();
    let locks = LocalLocks::new();
    Conformance::new()
        .ttl(Duration::from_secs(60))
        .check_sets(&locks, &locks)
        .await
        .unwrap();
    Conformance::new()
        .ttl(Duration::from_secs(60))
        .check_elections(&locks)
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Wraps a provider and hands out token 1 to every holder.
#[derive(Debug)]
struct RepeatedTokens(LocalLocks);

#[derive(Debug)]
struct RepeatedLock(Box<dyn DistributedLock>);

#[derive(Debug)]
struct RepeatedHandle(Box<dyn LockHandle>);

impl LockProvider for RepeatedTokens {
    fn lock(&self, name: &str) -> Result<Box<dyn DistributedLock>, Error> {
        Ok(Box::new(RepeatedLock(self.0.lock(name)?)))
    }
}

impl DistributedLock for RepeatedLock {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        Box::pin(async move {
            let held = self.0.try_acquire(ttl).await?;
            Ok(held.map(|h| Box::new(RepeatedHandle(h)) as Box<dyn LockHandle>))
        })
    }

    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let held = self.0.acquire(ttl, wait).await?;
            Ok(Box::new(RepeatedHandle(held)) as Box<dyn LockHandle>)
        })
    }
}

impl LockHandle for RepeatedHandle {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn token(&self) -> FencingToken {
        FencingToken::new(1)
    }
    fn validity(&self) -> Duration {
        self.0.validity()
    }
    fn extend(&self) -> BoxFuture<'_, Result<Duration, Error>> {
        self.0.extend()
    }
    fn extend_for(&self, ttl: Duration) -> BoxFuture<'_, Result<Duration, Error>> {
        self.0.extend_for(ttl)
    }
    fn lost(&self) -> BoxFuture<'_, LossReason> {
        self.0.lost()
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<bool, Error>> {
        self.0.release()
    }
}

/// The suite is able to fail: an implementation that repeats its token is caught.
#[tokio::test(start_paused = true)]
async fn a_repeated_token_is_caught() {
    let err = Conformance::new()
        .check(&RepeatedTokens(LocalLocks::new()))
        .await
        .unwrap_err();
    assert_eq!(err.check, "tokens", "{err}");
    assert!(
        err.to_string().contains("token 1 handed out after 1"),
        "{err}"
    );
}

/// The key-based shape over any provider: acquire, refuse, extend, token, release, and
/// a clear error for a key not held here.
async fn keyed_contract(provider: Arc<dyn LockProvider>) {
    use redfence::{KeyLocks, Keyed};
    let a: Box<dyn KeyLocks> = Box::new(Keyed::new(Arc::clone(&provider)));
    let b: Box<dyn KeyLocks> = Box::new(Keyed::new(provider));
    assert!(a.try_acquire("k", 1000).await.unwrap());
    assert!(!b.try_acquire("k", 1000).await.unwrap(), "held elsewhere");
    assert!(!a.try_acquire("k", 1000).await.unwrap(), "not re-entrant");
    let token = a.token("k").expect("a holds k");
    assert_eq!(b.token("k"), None);
    a.extend("k", 2000).await.unwrap();
    assert!(matches!(
        b.release("k").await,
        Err(Error::NotHeld { ref resource }) if resource == "k"
    ));
    assert!(matches!(
        b.extend("k", 1000).await,
        Err(Error::NotHeld { .. })
    ));
    a.release("k").await.unwrap();
    assert!(matches!(a.release("k").await, Err(Error::NotHeld { .. })));
    assert!(b.try_acquire("k", 1000).await.unwrap());
    assert!(b.token("k").unwrap() > token);
    assert!(matches!(
        b.try_acquire("other", 0).await,
        Err(Error::Config(redfence::ConfigError::Zero { .. }))
    ));
    b.release("k").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_locks_over_the_client_and_the_twin() {
    keyed_contract(Arc::new(LocalLocks::new())).await;
    let cluster = support::cluster(3);
    let client = support::client(&cluster)
        .node_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    keyed_contract(Arc::new(client)).await;
}

/// The over-admission of a naive semaphore: one more holder than it says it admits.
#[derive(Debug)]
struct OneTooMany(LocalLocks);

#[derive(Debug)]
struct OneTooManySemaphore(Box<dyn DistributedSemaphore>, usize);

impl SemaphoreProvider for OneTooMany {
    fn semaphore(
        &self,
        name: &str,
        permits: usize,
    ) -> Result<Box<dyn DistributedSemaphore>, Error> {
        let inner = SemaphoreProvider::semaphore(&self.0, name, permits + 1)?;
        Ok(Box::new(OneTooManySemaphore(inner, permits)))
    }
}

impl DistributedSemaphore for OneTooManySemaphore {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn permits(&self) -> usize {
        self.1
    }

    fn try_acquire(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        self.0.try_acquire(ttl)
    }

    fn acquire(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        self.0.acquire(ttl, wait)
    }
}

#[tokio::test(start_paused = true)]
async fn an_over_admitting_semaphore_is_caught() {
    let err = Conformance::new()
        .check_semaphores(&OneTooMany(LocalLocks::new()))
        .await
        .unwrap_err();
    assert_eq!(err.check, "permit bound", "{err}");
    assert!(err.detail.contains("fourth permit of three"), "{err}");
}

/// A reader-writer lock whose writers only ever try, leaving no mark while they wait:
/// readers stream past them.
#[derive(Debug)]
struct NoPreference(LocalLocks);

#[derive(Debug)]
struct NoPreferenceLock(Box<dyn DistributedRwLock>);

impl RwLockProvider for NoPreference {
    fn rwlock(&self, name: &str) -> Result<Box<dyn DistributedRwLock>, Error> {
        Ok(Box::new(NoPreferenceLock(self.0.rwlock(name)?)))
    }
}

impl DistributedRwLock for NoPreferenceLock {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn try_read(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        self.0.try_read(ttl)
    }

    fn read(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        self.0.read(ttl, wait)
    }

    fn try_write(
        &self,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn LockHandle>>, Error>> {
        self.0.try_write(ttl)
    }

    fn write(
        &self,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<Box<dyn LockHandle>, Error>> {
        Box::pin(async move {
            let give_up = tokio::time::Instant::now() + wait.unwrap_or(Duration::from_secs(10));
            loop {
                if let Some(h) = self.0.try_write(ttl).await? {
                    return Ok(h);
                }
                if tokio::time::Instant::now() >= give_up {
                    return Err(Error::WaitTimeout {
                        resource: self.name().to_owned(),
                        waited: Duration::ZERO,
                        attempts: 0,
                        last_error: None,
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_writer_without_preference_is_caught() {
    let err = Conformance::new()
        .check_rwlocks(&NoPreference(LocalLocks::new()))
        .await
        .unwrap_err();
    assert_eq!(err.check, "rw writer preference", "{err}");
}

/// Sets taken one lock at a time, keeping what it got when a later lock is refused: the
/// partial hold all-or-nothing exists to prevent.
#[derive(Debug)]
struct OneByOne(LocalLocks);

impl SetProvider for OneByOne {
    fn try_acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn SetHandle>>, Error>> {
        Box::pin(async move {
            let mut taken = Vec::new();
            for name in names {
                match self.0.lock(name)?.try_acquire(ttl).await? {
                    Some(h) => taken.push(h),
                    None => {
                        // Kept: never released.
                        taken.into_iter().for_each(std::mem::forget);
                        return Ok(None);
                    }
                }
            }
            for h in taken {
                h.release().await?;
            }
            self.0.try_acquire_all(names, ttl).await
        })
    }

    fn acquire_all<'a>(
        &'a self,
        names: &'a [&'a str],
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn SetHandle>, Error>> {
        self.0.acquire_all(names, ttl, wait)
    }
}

#[tokio::test(start_paused = true)]
async fn a_set_taken_one_by_one_is_caught() {
    let locks = LocalLocks::new();
    let err = Conformance::new()
        .check_sets(&OneByOne(locks.clone()), &locks)
        .await
        .unwrap_err();
    assert_eq!(err.check, "set all or nothing", "{err}");
    assert!(err.detail.contains("left"), "{err}");
}

/// An election whose `leader()` keeps answering the last leader it saw, as some election
/// APIs keep answering "leader" after the lease is gone.
#[derive(Debug)]
struct Sticky(LocalLocks);

#[derive(Debug)]
struct StickyElection(
    Box<dyn DistributedElection>,
    std::sync::Mutex<Option<Leader>>,
);

impl ElectionProvider for Sticky {
    fn election(&self, name: &str) -> Result<Box<dyn DistributedElection>, Error> {
        let inner = ElectionProvider::election(&self.0, name)?;
        Ok(Box::new(StickyElection(inner, std::sync::Mutex::default())))
    }
}

impl DistributedElection for StickyElection {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn try_campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn LockHandle>>, Error>> {
        self.0.try_campaign(value, ttl)
    }

    fn campaign<'a>(
        &'a self,
        value: &'a str,
        ttl: Option<Duration>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn LockHandle>, Error>> {
        self.0.campaign(value, ttl, wait)
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>, Error>> {
        Box::pin(async move {
            let now = self.0.leader().await?;
            let mut last = self.1.lock().unwrap();
            if now.is_some() {
                last.clone_from(&now);
            }
            Ok(last.clone())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_election_that_still_answers_a_gone_leader_is_caught() {
    let err = Conformance::new()
        .check_elections(&Sticky(LocalLocks::new()))
        .await
        .unwrap_err();
    assert_eq!(err.check, "one leader", "{err}");
}
