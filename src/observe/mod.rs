//! What a client tells about itself: its counters ([`Stats`], always), spans and events
//! (feature `tracing`), metrics (feature `metrics`).
//!
//! Everything is fed from the two choke points every network effect goes through, and
//! from the few places an operation ends:
//!
//! - a node call ([`NodeHealth`], in `Node::call_repeating`): per-node calls, errors by
//!   kind, reconnects, and one event when a node starts failing and one when it answers
//!   again (not one per failed call);
//! - a round ([`round`], in `run_round`): the tally and each node's answer, recorded on
//!   the operation's span;
//! - the end of an attempt, a wait, an extension, a release, and a loss ([`Counters`]).
//!
//! Without the features, spans are zero-sized and their methods empty; the counters are
//! relaxed atomic adds.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

mod stats;

pub use stats::{Attempts, Extensions, Latency, Losses, NodeStats, Releases, Stats, Waits};

use crate::error::{Error, LossReason, NodeError, NodeErrorKind, Step};
use stats::Histogram;

/// Emits a metric when the `metrics` feature is on; nothing otherwise.
macro_rules! metric {
    ($($t:tt)*) => {
        #[cfg(feature = "metrics")]
        {
            $($t)*
        }
    };
}

/// Emits a tracing event when the `tracing` feature is on; nothing otherwise.
macro_rules! event {
    ($($t:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            $($t)*
        }
    };
}

/// How an attempt ended: its slot in `Counters::attempts`, and its label.
fn attempt_outcome<T>(r: &Result<Option<T>, Error>) -> (usize, &'static str) {
    match r {
        Ok(Some(_)) => (0, "won"),
        Ok(None) => (1, "refused"),
        Err(Error::NoQuorum { .. }) => (2, "no_quorum"),
        Err(Error::NoValidity { .. }) => (3, "no_validity"),
        Err(_) => (4, "error"),
    }
}

/// How an extension round ended, for counting.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExtendOutcome {
    Renewed,
    NotOwner,
    Unreachable,
    TimedOut,
}

impl ExtendOutcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Renewed => "renewed",
            Self::NotOwner => "not_owner",
            Self::Unreachable => "unreachable",
            Self::TimedOut => "timed_out",
        }
    }
}

/// A client's counters: what [`Stats`] reads, fed where operations end.
#[derive(Default)]
pub(crate) struct Counters {
    /// won, refused, `no_quorum`, `no_validity`, error.
    attempts: [AtomicU64; 5],
    attempt_latency: Histogram,
    /// won, `timed_out`, failed.
    waits: [AtomicU64; 3],
    wait_time: Histogram,
    /// renewed, `not_owner`, unreachable, `timed_out`.
    extensions: [AtomicU64; 4],
    renewal_lateness: Histogram,
    /// released, `not_held`, failed.
    releases: [AtomicU64; 3],
    /// `not_owner`, `quorum_unreachable`, `validity_elapsed`, `max_hold_reached`.
    losses: [AtomicU64; 4],
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// An attempt on `resource` ended with `r` after `took`.
    pub(crate) fn attempt<T>(&self, r: &Result<Option<T>, Error>, took: Duration) {
        let (i, outcome) = attempt_outcome(r);
        bump(&self.attempts[i]);
        self.attempt_latency.record(took);
        metric! {
            metrics::counter!("redfence_attempts_total", "outcome" => outcome).increment(1);
            metrics::histogram!("redfence_attempt_seconds", "outcome" => outcome)
                .record(took.as_secs_f64());
        }
        let _ = outcome;
    }

    /// A wait ended: won, timed out (`WaitTimeout`), or failed for a lasting reason.
    pub(crate) fn wait<T>(&self, r: &Result<T, Error>, took: Duration) {
        let (i, outcome) = match r {
            Ok(_) => (0, "won"),
            Err(Error::WaitTimeout { .. }) => (1, "timed_out"),
            Err(_) => (2, "failed"),
        };
        bump(&self.waits[i]);
        self.wait_time.record(took);
        metric! {
            metrics::counter!("redfence_waits_total", "outcome" => outcome).increment(1);
            metrics::histogram!("redfence_wait_seconds", "outcome" => outcome)
                .record(took.as_secs_f64());
        }
        let _ = outcome;
    }

    /// An extension round ended.
    pub(crate) fn extension(&self, outcome: ExtendOutcome) {
        bump(&self.extensions[outcome as usize]);
        let outcome = outcome.label();
        metric! {
            metrics::counter!("redfence_extensions_total", "outcome" => outcome).increment(1);
        }
        let _ = outcome;
    }

    /// A watchdog sent a renewal `late` after its schedule (zero when early).
    pub(crate) fn renewal_sent(&self, late: Duration) {
        self.renewal_lateness.record(late);
        metric! {
            metrics::histogram!("redfence_renewal_lateness_seconds").record(late.as_secs_f64());
        }
    }

    /// A release round ended.
    pub(crate) fn release(&self, r: &Result<bool, Error>) {
        let (i, outcome) = match r {
            Ok(true) => (0, "released"),
            Ok(false) => (1, "not_held"),
            Err(_) => (2, "failed"),
        };
        bump(&self.releases[i]);
        metric! {
            metrics::counter!("redfence_releases_total", "outcome" => outcome).increment(1);
        }
        let _ = outcome;
    }

    /// A held lease was lost (published once per lease).
    pub(crate) fn lost(&self, resource: &str, token: u64, reason: &LossReason) {
        let (i, label) = match reason {
            LossReason::NotOwner { .. } | LossReason::PartNotOwner { .. } => (0, "not_owner"),
            LossReason::QuorumUnreachable { .. } => (1, "quorum_unreachable"),
            LossReason::ValidityElapsed => (2, "validity_elapsed"),
            LossReason::MaxHoldReached { .. } => (3, "max_hold_reached"),
            // Not a loss; never published through here.
            LossReason::Released => return,
        };
        bump(&self.losses[i]);
        metric! {
            metrics::counter!("redfence_losses_total", "reason" => label).increment(1);
        }
        event! {
            tracing::warn!(
                target: "redfence",
                resource,
                token,
                reason = label,
                "lock lost: {reason}"
            );
        }
        let _ = (resource, token, label);
    }

    /// The counters as numbers; the caller adds the gauges and the nodes.
    pub(crate) fn snapshot(&self) -> Stats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let [won, refused, no_quorum, no_validity, error] = &self.attempts;
        let [w_won, w_timed_out, w_failed] = &self.waits;
        let [renewed, not_owner, unreachable, timed_out] = &self.extensions;
        let [released, not_held, r_failed] = &self.releases;
        let [l_not_owner, l_unreachable, l_elapsed, l_max_hold] = &self.losses;
        Stats {
            attempts: Attempts {
                won: n(won),
                refused: n(refused),
                no_quorum: n(no_quorum),
                no_validity: n(no_validity),
                error: n(error),
            },
            attempt_latency: self.attempt_latency.snapshot(),
            waits: Waits {
                won: n(w_won),
                timed_out: n(w_timed_out),
                failed: n(w_failed),
            },
            wait_time: self.wait_time.snapshot(),
            renewal_lateness: self.renewal_lateness.snapshot(),
            extensions: Extensions {
                renewed: n(renewed),
                not_owner: n(not_owner),
                unreachable: n(unreachable),
                timed_out: n(timed_out),
            },
            releases: Releases {
                released: n(released),
                not_held: n(not_held),
                failed: n(r_failed),
            },
            losses: Losses {
                not_owner: n(l_not_owner),
                quorum_unreachable: n(l_unreachable),
                validity_elapsed: n(l_elapsed),
                max_hold_reached: n(l_max_hold),
            },
            active_watchdogs: 0,
            background_tasks: 0,
            nodes: Vec::new(),
        }
    }
}

/// Every [`NodeErrorKind`], in the order [`NodeHealth`] counts them.
const KINDS: [NodeErrorKind; 13] = [
    NodeErrorKind::ConnectionRefused,
    NodeErrorKind::Timeout,
    NodeErrorKind::Io,
    NodeErrorKind::Auth,
    NodeErrorKind::NoPermission,
    NodeErrorKind::WrongType,
    NodeErrorKind::Loading,
    NodeErrorKind::Busy,
    NodeErrorKind::Tls,
    NodeErrorKind::BadReply,
    NodeErrorKind::InvalidConfig,
    NodeErrorKind::Server,
    NodeErrorKind::SameServer,
];

/// One node's calls, failures and reconnects.
#[derive(Default)]
pub(crate) struct NodeHealth {
    calls: AtomicU64,
    errors: [AtomicU64; KINDS.len()],
    reconnects: AtomicU64,
    /// The last call failed: the next success is worth telling.
    failing: AtomicBool,
}

impl NodeHealth {
    /// A call was sent or attempted.
    pub(crate) fn call(&self) {
        bump(&self.calls);
    }

    /// A call answered: if the node was failing, it is back.
    pub(crate) fn answered(&self, node: &str) {
        // A plain load on the hot path; the swap only when there is news.
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            event! {
                tracing::info!(target: "redfence", node, "node answers again");
            }
            let _ = node;
        }
    }

    /// A call failed.
    pub(crate) fn failed(&self, e: &NodeError) {
        let kind = e.kind();
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            bump(&self.errors[i]);
        }
        metric! {
            metrics::counter!(
                "redfence_node_errors_total",
                "node" => e.node().to_owned(),
                "step" => e.step().label(),
                "kind" => kind.label(),
            )
            .increment(1);
        }
        let first = !self.failing.swap(true, Ordering::Relaxed);
        event! {
            if first {
                tracing::warn!(
                    target: "redfence",
                    node = e.node(),
                    step = e.step().label(),
                    kind = kind.label(),
                    "node failing: {}",
                    with_causes(e)
                );
            } else {
                tracing::debug!(
                    target: "redfence",
                    node = e.node(),
                    step = e.step().label(),
                    kind = kind.label(),
                    "node call failed: {}",
                    with_causes(e)
                );
            }
        }
        let _ = first;
    }

    /// A connection was opened; `generation` counts them from 1.
    pub(crate) fn connected(&self, node: &str, generation: u64) {
        if generation > 1 {
            bump(&self.reconnects);
            metric! {
                metrics::counter!("redfence_node_reconnects_total", "node" => node.to_owned())
                    .increment(1);
            }
            event! {
                tracing::info!(target: "redfence", node, generation, "node reconnected");
            }
        }
        let _ = node;
    }

    pub(crate) fn snapshot(&self, name: &str) -> NodeStats {
        let errors_by_kind: Vec<(NodeErrorKind, u64)> = KINDS
            .iter()
            .zip(&self.errors)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        NodeStats {
            name: name.to_owned(),
            calls: self.calls.load(Ordering::Relaxed),
            errors: errors_by_kind.iter().map(|(_, c)| c).sum(),
            errors_by_kind,
            reconnects: self.reconnects.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
        }
    }
}

/// The error and its causes, as one line.
#[cfg(feature = "tracing")]
fn with_causes(e: &NodeError) -> String {
    use std::fmt::Write;

    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        // Layers of the `redis` crate often repeat their cause's words.
        let said = c.to_string();
        if !text.ends_with(&said) {
            let _ = write!(text, ": {said}");
        }
        cause = c.source();
    }
    text
}

/// A gauge moved: watchdogs running, background tasks running.
pub(crate) fn gauge(name: &'static str, delta: f64) {
    metric! {
        metrics::gauge!(name).increment(delta);
    }
    let _ = (name, delta);
}

/// `f`, in the current span (feature `tracing`): for work that outlives its operation.
pub(crate) fn in_current_span<F: Future>(f: F) -> impl Future<Output = F::Output> + use<F> {
    #[cfg(feature = "tracing")]
    {
        tracing::Instrument::in_current_span(f)
    }
    #[cfg(not(feature = "tracing"))]
    {
        f
    }
}

/// A node's settings call for a warning (`Client::check_nodes`).
pub(crate) fn node_warning(node: &str, warning: &dyn std::fmt::Display) {
    event! {
        tracing::warn!(target: "redfence", node, "node warning: {warning}");
    }
    let _ = (node, warning);
}

/// The span of one operation (feature `tracing`; empty otherwise). Fields left empty at
/// the start are recorded as the operation goes: the token once known, the round's tally
/// and each node's answer ([`round`]), the outcome.
#[derive(Debug, Clone)]
pub(crate) struct OpSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// A debug-level span with the fields every operation records.
#[cfg(feature = "tracing")]
macro_rules! op_span {
    ($name:literal, $resource:expr) => {
        tracing::debug_span!(
            target: "redfence",
            $name,
            resource = $resource,
            token = tracing::field::Empty,
            outcome = tracing::field::Empty,
            granted = tracing::field::Empty,
            refused = tracing::field::Empty,
            failed = tracing::field::Empty,
            answers = tracing::field::Empty,
            attempts = tracing::field::Empty,
        )
    };
}

macro_rules! span_kinds {
    ($($(#[$doc:meta])* $fn:ident => $name:literal,)*) => {
        impl OpSpan {
            $(
                $(#[$doc])*
                pub(crate) fn $fn(resource: &str) -> Self {
                    let _ = resource;
                    Self {
                        #[cfg(feature = "tracing")]
                        span: op_span!($name, resource),
                    }
                }
            )*
        }
    };
}

span_kinds! {
    /// One acquisition attempt: grant round, commit, validity check.
    acquire => "acquire",
    /// The token commit round of an attempt.
    commit => "commit",
    /// One extension round.
    extend => "extend",
    /// One release round.
    release => "release",
    /// One tick of a watchdog (an extension, or the loss).
    tick => "watchdog_tick",
    /// A wait: attempts until one wins.
    wait => "wait",
    /// An election's publication round.
    proclaim => "proclaim",
}

impl OpSpan {
    /// One round of the batched watchdog, renewing `leases` leases.
    pub(crate) fn renew(leases: usize) -> Self {
        let _ = leases;
        Self {
            #[cfg(feature = "tracing")]
            span: tracing::debug_span!(
                target: "redfence",
                "renew_batch",
                leases,
                renewed = tracing::field::Empty,
                unreachable = tracing::field::Empty,
                not_owner = tracing::field::Empty,
                granted = tracing::field::Empty,
                refused = tracing::field::Empty,
                failed = tracing::field::Empty,
                answers = tracing::field::Empty,
            ),
        }
    }

    /// A batched round's leases by outcome.
    pub(crate) fn batch_outcome(&self, renewed: usize, unreachable: usize, not_owner: usize) {
        #[cfg(feature = "tracing")]
        {
            self.span.record("renewed", renewed);
            self.span.record("unreachable", unreachable);
            self.span.record("not_owner", not_owner);
        }
        let _ = (renewed, unreachable, not_owner);
    }

    /// Runs `f` inside the span.
    pub(crate) fn run<F: Future>(&self, f: F) -> impl Future<Output = F::Output> + use<F> {
        #[cfg(feature = "tracing")]
        {
            tracing::Instrument::instrument(f, self.span.clone())
        }
        #[cfg(not(feature = "tracing"))]
        {
            f
        }
    }

    pub(crate) fn token(&self, token: u64) -> &Self {
        #[cfg(feature = "tracing")]
        self.span.record("token", token);
        let _ = token;
        self
    }

    pub(crate) fn outcome(&self, outcome: &str) -> &Self {
        #[cfg(feature = "tracing")]
        self.span.record("outcome", outcome);
        let _ = outcome;
        self
    }

    /// An attempt's outcome, as [`Counters::attempt`] names it.
    pub(crate) fn attempt_outcome<T>(&self, r: &Result<Option<T>, Error>) -> &Self {
        self.outcome(attempt_outcome(r).1)
    }

    pub(crate) fn attempts(&self, n: u32) -> &Self {
        #[cfg(feature = "tracing")]
        self.span.record("attempts", n);
        let _ = n;
        self
    }
}

#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
impl Step {
    /// A metric label: `connect`, `acquire`, `commit`, `extend`, `release`, `inspect`,
    /// `proclaim`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Acquire => "acquire",
            Self::Commit => "commit",
            Self::Extend => "extend",
            Self::Release => "release",
            Self::Inspect => "inspect",
            Self::Proclaim => "proclaim",
        }
    }
}

#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
impl NodeErrorKind {
    /// A metric label, the kind in `snake_case`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection_refused",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Auth => "auth",
            Self::NoPermission => "no_permission",
            Self::WrongType => "wrong_type",
            Self::Loading => "loading",
            Self::Busy => "busy",
            Self::Tls => "tls",
            Self::BadReply => "bad_reply",
            Self::InvalidConfig => "invalid_config",
            Self::Server => "server",
            Self::SameServer => "same_server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind is counted in its own slot.
    #[test]
    fn every_error_kind_has_a_slot_and_a_label() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(KINDS.iter().position(|x| x == k), Some(i));
            assert!(!k.label().is_empty());
        }
        let labels: std::collections::HashSet<_> = KINDS.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), KINDS.len());
    }
}
