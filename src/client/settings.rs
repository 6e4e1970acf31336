//! The validated settings a client runs with, their defaults and bounds.

use std::time::Duration;

use crate::core::quorum;
use crate::error::ConfigError;
use crate::lease::watchdog;

/// Default lease asked of every node.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default bound on one node's answer to one call (connection included).
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(200);
/// Default bound on opening a connection in the background.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default pause between attempts of [`Client::acquire`](crate::Client::acquire).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Default random spread (±) around the retry delay.
pub const DEFAULT_RETRY_JITTER: Duration = Duration::from_millis(50);
/// Default time [`Client::acquire`](crate::Client::acquire) keeps trying.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The old name of [`DEFAULT_WAIT`].
#[deprecated(since = "0.1.0", note = "renamed DEFAULT_WAIT: the setting is `wait`")]
pub const DEFAULT_WAIT_TIMEOUT: Duration = DEFAULT_WAIT;

/// Whether a watchdog keeps a held lock alive (extending it every `extend_interval`) and
/// reports its loss. `bool`s convert: `true` is [`On`](Self::On).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watchdog {
    /// A watchdog extends the lock and reports its loss.
    On,
    /// The holder extends it, or lets it expire.
    Off,
}

impl From<bool> for Watchdog {
    fn from(on: bool) -> Self {
        if on { Self::On } else { Self::Off }
    }
}
/// Default clock-drift factor: 1 % of the TTL (plus 2 ms).
pub const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "redfence";
/// Default number of calls that may wait for one node's answers at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Longest accepted TTL: use the watchdog (auto-extension) for longer holds.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted `max_hold`.
pub const MAX_HOLD: Duration = Duration::from_secs(365 * 24 * 3600);
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
pub(crate) const MAX_PREFIX_LEN: usize = 128;

/// The validated settings a [`Client`] runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) ttl: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_jitter: Duration,
    pub(crate) wait: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) min_validity: Duration,
    pub(crate) prefix: String,
    pub(crate) watchdog: Watchdog,
    pub(crate) extend_interval: Option<Duration>,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) batch_renewals: bool,
}

impl Settings {
    /// A TTL must leave validity after the drift allowance and two rounds (acquire and
    /// token commit) that each may take up to the node timeout.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<(), ConfigError> {
        if ttl.is_zero() {
            return Err(ConfigError::Zero { setting: "ttl" });
        }
        if ttl > MAX_TTL {
            return Err(ConfigError::TooLarge {
                setting: "ttl",
                value: ttl,
                max: MAX_TTL,
            });
        }
        // Bounded here so that the sums below cannot overflow.
        if self.min_validity > MAX_TTL {
            return Err(ConfigError::TooLarge {
                setting: "min_validity",
                value: self.min_validity,
                max: MAX_TTL,
            });
        }
        let drift = quorum::drift(ttl, self.drift_factor);
        let used = drift + 2 * self.node_timeout + self.min_validity;
        if ttl <= used {
            // Smallest TTL whose own drift still fits: solve ttl > ttl*f + fixed.
            let fixed = quorum::DRIFT_FLOOR + 2 * self.node_timeout + self.min_validity;
            let minimum = fixed.div_f64(1.0 - self.drift_factor) + Duration::from_millis(1);
            return Err(ConfigError::TtlTooSmall {
                ttl,
                drift,
                node_timeout: self.node_timeout,
                min_validity: self.min_validity,
                minimum,
            });
        }
        Ok(())
    }

    /// The watchdog's schedule for a lease of `ttl`: extensions every `extend_interval`
    /// (default `ttl / 3`), which must leave time for one extension round before the
    /// watchdog's give-up point.
    pub(crate) fn watchdog_plan(
        &self,
        ttl: Duration,
        max_hold: Option<Duration>,
    ) -> Result<watchdog::Schedule, ConfigError> {
        let interval = self.extend_interval.unwrap_or(ttl / 3);
        let budget = ttl
            .saturating_sub(quorum::drift(ttl, self.drift_factor))
            .saturating_sub(watchdog::loss_margin(ttl))
            .saturating_sub(self.node_timeout);
        if interval.is_zero() || interval >= budget {
            return Err(ConfigError::ExtendInterval {
                interval,
                ttl,
                max: budget,
            });
        }
        if let Some(max) = max_hold {
            if max.is_zero() {
                return Err(ConfigError::Zero {
                    setting: "max_hold",
                });
            }
            if max > MAX_HOLD {
                return Err(ConfigError::TooLarge {
                    setting: "max_hold",
                    value: max,
                    max: MAX_HOLD,
                });
            }
        }
        Ok(watchdog::Schedule {
            interval,
            retry: self.retry_delay.max(Duration::from_millis(1)),
            max_hold,
            batched: self.batch_renewals,
        })
    }
}
