#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(rustdoc::broken_intra_doc_links)]

mod attempt;
mod checks;
mod clock;
mod config;
mod error;
pub mod fence;
mod guard;
mod lock;
mod node;
mod quorum;
mod round;
mod scripts;
mod status;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
mod wakeup;
mod watchdog;

pub use checks::{NodeCheck, NodeWarning};
pub use clock::now;
pub use config::{
    ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRIFT_FACTOR, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_NODE_TIMEOUT, DEFAULT_PREFIX, DEFAULT_RETRY_DELAY, DEFAULT_RETRY_JITTER, DEFAULT_TTL,
    DEFAULT_WAIT_TIMEOUT, MAX_HOLD, MAX_TTL,
};
pub use error::{ConfigError, Error, LossReason, NodeError, NodeErrorKind, Step};
pub use fence::FencingToken;
pub use guard::{LockGuard, LockState};
pub use lock::{AcquireOptions, Client, MAX_RESOURCE_LEN};
pub use status::{LockStatus, NodeLock, NodeView};
