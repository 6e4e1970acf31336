//! [`Stats`]: a client's counters as plain numbers, for users without a metrics stack,
//! and the lock-free histogram behind its latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::NodeErrorKind;

/// A snapshot of one client's counters since it was built
/// ([`Client::stats`](crate::Client::stats)). Counters only grow; take two snapshots and
/// subtract for a rate.
///
/// ```no_run
/// # async fn demo(client: redfence::Client) {
/// let s = client.stats();
/// println!(
///     "{} won of {} attempts, p99 {:?}, {} losses",
///     s.attempts.won,
///     s.attempts.total(),
///     s.attempt_latency.quantile(0.99),
///     s.losses.total(),
/// );
/// for node in &s.nodes {
///     println!("{}: {} errors in {} calls", node.name, node.errors, node.calls);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Acquisition attempts (a grant round on every node, and the token commit), by
    /// outcome. Every primitive's attempts count here.
    pub attempts: Attempts,
    /// How long each attempt took, whatever its outcome.
    pub attempt_latency: Latency,
    /// Waits (`acquire`, `acquire_timeout`, `run` and their kin: attempts until one wins),
    /// by outcome.
    pub waits: Waits,
    /// How long each wait took, whatever its outcome.
    pub wait_time: Latency,
    /// Extension rounds (the watchdog's and `extend`'s), by outcome; a batched round
    /// counts once per lease it carried.
    pub extensions: Extensions,
    /// How late each watchdog renewal was sent after its schedule (`extend_interval`
    /// after the last one): zero when on time or early (batched renewals go up to 50 ms
    /// early, to share a call).
    pub renewal_lateness: Latency,
    /// Release rounds, by outcome.
    pub releases: Releases,
    /// Held leases lost, by reason.
    pub losses: Losses,
    /// Watchdogs running now.
    pub active_watchdogs: usize,
    /// Background tasks running now: calls left to finish after their round was decided,
    /// and releases of failed attempts and dropped guards.
    pub background_tasks: usize,
    /// Each node, in the client's order.
    pub nodes: Vec<NodeStats>,
}

/// Acquisition attempts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempts {
    /// A quorum granted, the token was committed, validity remained.
    pub won: u64,
    /// A quorum was out of reach because others hold it.
    pub refused: u64,
    /// Failed nodes kept a quorum out of reach (grant or commit).
    pub no_quorum: u64,
    /// Won, but too late: no validity was left.
    pub no_validity: u64,
    /// Any other error (a lasting node error, bad input).
    pub error: u64,
}

impl Attempts {
    /// All attempts.
    pub fn total(&self) -> u64 {
        self.won + self.refused + self.no_quorum + self.no_validity + self.error
    }
}

/// Waits by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waits {
    /// An attempt won.
    pub won: u64,
    /// The wait ran out.
    pub timed_out: u64,
    /// A lasting error ended it.
    pub failed: u64,
}

/// Extension rounds by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extensions {
    /// A quorum renewed the lease.
    pub renewed: u64,
    /// A majority said the lease is gone or someone else's.
    pub not_owner: u64,
    /// Failed nodes kept a quorum out of reach (the watchdog retries while validity
    /// lasts).
    pub unreachable: u64,
    /// The lease's validity ran out first.
    pub timed_out: u64,
}

/// Release rounds by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Releases {
    /// A quorum still held the lease and deleted it.
    pub released: u64,
    /// A majority no longer held it (it had expired or was taken).
    pub not_held: u64,
    /// Failed nodes kept a quorum out of reach; the keys expire with their TTL.
    pub failed: u64,
}

/// Losses of held leases by reason (see [`LossReason`](crate::LossReason)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Losses {
    /// A majority said the lease is gone or someone else's (a set's part included).
    pub not_owner: u64,
    /// Failed nodes kept a quorum out of reach until validity ran out.
    pub quorum_unreachable: u64,
    /// Validity ran out before an extension completed.
    pub validity_elapsed: u64,
    /// The watchdog reached its maximum hold time.
    pub max_hold_reached: u64,
}

impl Losses {
    /// All losses.
    pub fn total(&self) -> u64 {
        self.not_owner + self.quorum_unreachable + self.validity_elapsed + self.max_hold_reached
    }
}

/// One node's calls and failures.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct NodeStats {
    /// `host:port`.
    pub name: String,
    /// Calls sent or attempted (background calls included).
    pub calls: u64,
    /// Calls that failed, every kind.
    pub errors: u64,
    /// Failed calls by kind, kinds that never failed left out.
    pub errors_by_kind: Vec<(NodeErrorKind, u64)>,
    /// Connections opened after the first (the node restarted, or the connection broke).
    pub reconnects: u64,
    /// Whether the node's last call failed.
    pub failing: bool,
}

/// A latency distribution: count, sum, maximum, and buckets an eighth of a power of two
/// wide, so that a quantile is exact to within 12.5 % (above: it is a bucket's upper
/// bound). Microsecond resolution.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Latency {
    count: u64,
    sum_us: u64,
    max_us: u64,
    /// `(bucket, count)` for the non-empty buckets, in bucket order.
    buckets: Vec<(usize, u64)>,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count)
            .field("mean", &self.mean())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl Latency {
    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean, `None` when nothing was recorded.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_us / self.count))
    }

    /// The largest recorded, `None` when nothing was.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.max_us))
    }

    /// The `q` quantile (0.5 for the median, 0.99 for p99): the upper bound of the bucket
    /// it falls in, never above the maximum. `None` when nothing was recorded or `q` is
    /// not within 0..=1.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // The rank of the q quantile, 1-based: at least the first, at most the last.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for &(b, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper(b).min(self.max_us)));
            }
        }
        self.max()
    }
}

/// Values from 0 to 2^40 µs (about 12 days); longer ones count in the last bucket.
const TOP: u64 = (1 << 40) - 1;
/// Buckets: 8 exact ones (0–7 µs), then 8 per power of two up to `TOP`.
const BUCKETS: usize = 304;

/// The bucket of `v` µs: exact below 8, else the power of two and the next three bits.
pub(crate) fn bucket(v: u64) -> usize {
    let v = v.min(TOP);
    if v < 8 {
        // Lossless: v < 8.
        #[allow(clippy::cast_possible_truncation)]
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize;
    // Bits below the top one, the first three of them.
    #[allow(clippy::cast_possible_truncation)]
    let sub = ((v >> (e - 3)) & 7) as usize;
    (e - 2) * 8 + sub
}

/// The smallest value in bucket `b`.
pub(crate) fn lower(b: usize) -> u64 {
    if b < 8 {
        return b as u64;
    }
    let (e, sub) = (b / 8 + 2, (b % 8) as u64);
    (8 + sub) << (e - 3)
}

/// The largest value in bucket `b`.
pub(crate) fn upper(b: usize) -> u64 {
    if b < 8 {
        return b as u64;
    }
    lower(b) + (1 << (b / 8 - 1)) - 1
}

/// The live histogram behind a [`Latency`]: one relaxed add per record.
pub(crate) struct Histogram {
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot; records landing meanwhile may be in some of its numbers and not others.
    pub(crate) fn snapshot(&self) -> Latency {
        let buckets: Vec<(usize, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(b, c)| (b, c.load(Ordering::Relaxed)))
            .filter(|&(_, c)| c > 0)
            .collect();
        Latency {
            // The buckets' total, so that a quantile's rank is always within them.
            count: buckets.iter().map(|(_, c)| c).sum(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every value falls in a bucket whose bounds hold it, no more than an eighth
        /// wider than the value.
        #[test]
        fn a_bucket_holds_its_value_within_an_eighth(v in 0u64..=TOP) {
            let b = bucket(v);
            prop_assert!(b < BUCKETS);
            prop_assert!(lower(b) <= v && v <= upper(b), "{v} in {b}: {}..={}", lower(b), upper(b));
            prop_assert!(upper(b) - v <= v / 8, "{v}: bucket up to {}", upper(b));
        }

        /// Quantiles of recorded values are never below the true one and within an eighth
        /// above it.
        #[test]
        fn quantiles_are_within_an_eighth_above(
            values in proptest::collection::vec(0u64..10_000_000, 1..200),
            q in 0.0f64..=1.0,
        ) {
            let h = Histogram::default();
            for &v in &values {
                h.record(Duration::from_micros(v));
            }
            let mut sorted = values;
            sorted.sort_unstable();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let truth = sorted[rank - 1];
            let got = h.snapshot().quantile(q).unwrap().as_micros() as u64;
            prop_assert!(got >= truth && got - truth <= truth / 8, "q {q}: {got} vs {truth}");
        }
    }

    /// Buckets tile the range: each starts right after the previous one ends.
    #[test]
    fn buckets_tile_the_range() {
        for b in 1..BUCKETS {
            assert_eq!(lower(b), upper(b - 1) + 1, "bucket {b}");
        }
        assert_eq!(upper(BUCKETS - 1), TOP);
    }

    #[test]
    fn an_empty_latency_has_no_quantile_and_a_bad_q_is_refused() {
        assert_eq!(Latency::default().quantile(0.5), None);
        let h = Histogram::default();
        h.record(Duration::from_millis(3));
        let l = h.snapshot();
        assert_eq!(l.quantile(1.5), None);
        assert_eq!(l.quantile(f64::NAN), None);
        assert_eq!(l.max(), Some(Duration::from_millis(3)));
        assert_eq!(l.quantile(0.5), Some(Duration::from_millis(3)));
    }
}
