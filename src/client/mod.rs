//! [`Client`]: the handle every primitive hangs off, its [builder](ClientBuilder) and
//! its [settings](settings).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod builder;
pub(crate) mod settings;

#[allow(deprecated)]
pub use settings::DEFAULT_WAIT_TIMEOUT;

pub use builder::ClientBuilder;
pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRIFT_FACTOR, DEFAULT_MAX_IN_FLIGHT, DEFAULT_NODE_TIMEOUT,
    DEFAULT_PREFIX, DEFAULT_RETRY_DELAY, DEFAULT_RETRY_JITTER, DEFAULT_TTL, DEFAULT_WAIT, MAX_HOLD,
    MAX_TTL, Watchdog,
};

use crate::core::Nodes;
use crate::core::wakeup::Wakeups;
use crate::observe::Stats;
use settings::Settings;

/// A RedLock client over N independent nodes. Cheap to clone; clones share connections.
///
/// ## Behavior
///
/// - **Node loss.** Each call goes to every node at once and is decided as soon as its
///   outcome is certain, so up to `N - quorum` dead, paused or slow nodes cost nothing on
///   a decided call. Connections open lazily and reopen in the background.
/// - **Timeouts.** Each node gets [`node_timeout`](ClientBuilder::node_timeout) per call;
///   an acquisition takes at most two such rounds (grant, then token commit).
/// - **Drop.** A [`LockGuard`](crate::LockGuard) dropped without [`release`](crate::LockGuard::release) is released
///   on a spawned task if a tokio runtime is running, else left to expire with its TTL.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

pub(crate) struct Inner {
    /// The nodes, and the background work on them.
    pub(crate) nodes: Nodes,
    pub(crate) settings: Settings,
    /// Watchdogs running for this client's guards.
    pub(crate) watchdogs: Arc<AtomicUsize>,
    /// Pub/sub connections that wake waiters when a lock is released.
    pub(crate) wakeups: Arc<Wakeups>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Inner {
            nodes,
            settings,
            watchdogs,
            wakeups,
        } = &*self.0;
        f.debug_struct("Client")
            .field("nodes", nodes)
            .field("settings", settings)
            .field("watchdogs", &watchdogs.load(Ordering::Relaxed))
            .field("wakeups", wakeups)
            .finish()
    }
}

impl Client {
    /// A builder with every default; add nodes with [`ClientBuilder::node`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub(crate) fn nodes(&self) -> &Nodes {
        &self.0.nodes
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub(crate) fn wakeups(&self) -> &Arc<Wakeups> {
        &self.0.wakeups
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
        self.0.nodes.quorum()
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
        self.0.nodes.background().idle(limit).await
    }

    /// Watchdogs running for this client's guards (each stops on release or drop).
    pub fn active_watchdogs(&self) -> usize {
        self.0.watchdogs.load(Ordering::SeqCst)
    }

    /// This client's counters since it was built: attempts, waits, extensions, releases
    /// and losses by outcome, attempt and wait latencies, watchdogs and background tasks
    /// running, and each node's calls, errors by kind and reconnects. Plain numbers, for
    /// users without a metrics stack (the `metrics` feature sends the same through the
    /// `metrics` facade). Clones share one set of counters.
    ///
    /// ```no_run
    /// # async fn demo(client: redfence::Client) -> Result<(), redfence::Error> {
    /// let guard = client.acquire("report").await?;
    /// guard.release().await?;
    /// let stats = client.stats();
    /// assert_eq!(stats.attempts.won, 1);
    /// println!("attempt p50 {:?}", stats.attempt_latency.quantile(0.5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        let nodes = &self.0.nodes;
        let mut stats = nodes.counters().snapshot();
        stats.active_watchdogs = self.active_watchdogs();
        stats.background_tasks = nodes.background().running();
        stats.nodes = nodes
            .iter()
            .map(|n| n.health().snapshot(n.name()))
            .collect();
        stats
    }
}
