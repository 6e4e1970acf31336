#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(rustdoc::broken_intra_doc_links)]

// Dependencies point one way: mutex, semaphore, rwlock, set and election (the primitives) → client → lease → core → node →
// scripts; error, clock and fence are leaves; ops and testkit sit on top.
mod client;
mod clock;
mod core;
mod election;
mod error;
pub mod fence;
mod interface;
mod lease;
#[cfg(test)]
mod models;
mod mutex;
mod node;
mod observe;
mod ops;
mod rwlock;
mod scripts;
mod semaphore;
mod set;
/// What [`Client::stats`] counts, as plain numbers: the parts of a [`Stats`].
pub mod stats {
    pub use crate::observe::{Attempts, Extensions, Latency, Losses, NodeStats, Releases, Waits};
}
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

#[allow(deprecated)]
pub use client::DEFAULT_WAIT_TIMEOUT;
pub use client::{
    Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRIFT_FACTOR, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_NODE_TIMEOUT, DEFAULT_PREFIX, DEFAULT_RETRY_DELAY, DEFAULT_RETRY_JITTER, DEFAULT_TTL,
    DEFAULT_WAIT, MAX_HOLD, MAX_TTL, Watchdog,
};
pub use clock::now;
pub use election::{
    Election, Follower, LEADERSHIPS_KEPT, Leader, LeaderChange, Leadership, MAX_LEADER_VALUE,
};
pub use error::{ConfigError, Error, LossReason, NodeError, NodeErrorKind, Step};
pub use fence::FencingToken;
pub use interface::{
    BoxFuture, DistributedElection, DistributedLock, DistributedRwLock, DistributedSemaphore,
    ElectionProvider, KeyLocks, Keyed, LocalLocks, LockHandle, LockProvider, RwLockProvider,
    SemaphoreProvider, SetHandle, SetProvider,
};
pub use lease::LockState;
pub use mutex::{AcquireOptions, LockGuard, MAX_RESOURCE_LEN};
pub use observe::Stats;
pub use ops::{
    LockStatus, NodeCheck, NodeLock, NodeReaders, NodeView, NodeWarning, ReadersView, RwLockStatus,
};
pub use rwlock::{ReadGuard, RwLock, WriteGuard};
pub use semaphore::{MAX_PERMITS, Permit, Semaphore};
pub use set::{MAX_SET, SetGuard};
