//! A history of what clients did under faults, and a checker for redfence's promises.
//!
//! Record every acquisition, write, loss, release and fault into a [`History`] while a
//! chaos run goes on, then [`check`](History::check) it. All times are `Instant`s of one
//! process, so holders' validity windows can be compared directly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::FencingToken;
use crate::fence::Verdict;

/// One recorded event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A lock was acquired.
    Acquired {
        /// Who.
        worker: usize,
        /// The lock name.
        resource: String,
        /// Its token.
        token: FencingToken,
        /// When the acquire call started.
        started: Instant,
        /// When it returned.
        acquired: Instant,
    },
    /// An acquire call failed (or timed out waiting).
    AcquireFailed {
        /// Who.
        worker: usize,
        /// The lock name.
        resource: String,
        /// A short reason (e.g. `no quorum`, `held`, `timeout`).
        reason: String,
    },
    /// A fenced write completed.
    Write {
        /// Who.
        worker: usize,
        /// The lock name (also the store key).
        resource: String,
        /// The token it carried.
        token: FencingToken,
        /// What the store did.
        verdict: Verdict,
        /// True for a write made on purpose after the holder's validity ran out and a
        /// newer holder wrote (a simulated process pause): it must be rejected.
        stale_by_design: bool,
    },
    /// The holder's lock was reported lost.
    Lost {
        /// Who.
        worker: usize,
        /// The lock name.
        resource: String,
        /// Its token.
        token: FencingToken,
        /// When the loss was published.
        at: Instant,
        /// The last validity deadline the holder had been given.
        deadline: Instant,
        /// Why.
        reason: String,
    },
    /// The holder stopped holding (released, or gave up after a loss).
    Ended {
        /// Who.
        worker: usize,
        /// The lock name.
        resource: String,
        /// Its token.
        token: FencingToken,
        /// When the holder stopped assuming exclusivity.
        at: Instant,
        /// The last validity deadline it had been given.
        deadline: Instant,
    },
    /// `name` is a counting semaphore of `permits` permits: its holders record their
    /// acquisitions under `NAME#SLOT` (the permit's
    /// [`resource`](crate::LockGuard::resource)), each slot checked as a lock, and the
    /// checker also bounds the holders of all its slots together by `permits`.
    Semaphore {
        /// The semaphore's name.
        name: String,
        /// Its permit count.
        permits: usize,
    },
    /// A reader of a reader-writer lock held it and stopped; its writers record
    /// [`Acquired`](Self::Acquired) and [`Ended`](Self::Ended) under the same `resource`.
    Read {
        /// Who.
        worker: usize,
        /// The lock name.
        resource: String,
        /// The reader's token.
        token: FencingToken,
        /// When the read call started.
        started: Instant,
        /// When it returned.
        acquired: Instant,
        /// When the reader stopped assuming it held the lock.
        ended: Instant,
        /// The last validity deadline it had been given.
        deadline: Instant,
    },
    /// A fault was injected.
    Nemesis {
        /// When.
        at: Instant,
        /// What, for the log.
        what: String,
        /// Until when this fault breaks RedLock's assumptions (clock jumps, lost writes);
        /// `None` for faults within them (node crashes with AOF, pauses).
        breaks_assumptions_until: Option<Instant>,
    },
}

/// A thread-safe, append-only log of [`Event`]s.
#[derive(Debug)]
pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// Which promise a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Check {
    /// Tokens for a resource are unique and increase in real-time acquisition order.
    TokenOrder,
    /// The fenced store never accepted a token lower than one it had accepted.
    StoreOrder,
    /// No two holders' validity windows overlap while the assumptions hold.
    Exclusion,
    /// A write made after the holder's validity, once a newer holder wrote, is rejected.
    StaleWrite,
    /// A loss is published no later than the last validity deadline handed out.
    LossInTime,
    /// No more holders of a semaphore's permits are valid at once than it has permits,
    /// while the assumptions hold.
    PermitBound,
    /// No reader is valid while a writer of the same lock is, while the assumptions hold.
    ReadWrite,
    /// A reader's token is at least the token of every writer whose acquisition returned
    /// before the read started.
    ReaderToken,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokenOrder => "tokens unique and increasing",
            Self::StoreOrder => "store never accepted an older token",
            Self::Exclusion => "no overlapping validity (assumptions held)",
            Self::StaleWrite => "stale writes rejected",
            Self::LossInTime => "losses reported before the deadline",
            Self::PermitBound => "no more permit holders than permits",
            Self::ReadWrite => "no reader valid with a writer",
            Self::ReaderToken => "reader tokens cover earlier writers",
        })
    }
}

/// One broken promise.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which.
    pub check: Check,
    /// What happened, with times relative to the history's start.
    pub detail: String,
}

/// What [`History::check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Successful acquisitions.
    pub acquisitions: usize,
    /// Failed acquire calls, by reason.
    pub failures: BTreeMap<String, usize>,
    /// Writes accepted by the store.
    pub writes_accepted: usize,
    /// Writes rejected by the store (stale holders stopped by the fence).
    pub writes_rejected: usize,
    /// Stale-by-design writes (paused holders) that were rejected.
    pub stale_rejected: usize,
    /// Stale-by-design writes that were accepted (each is also a violation).
    pub stale_accepted: usize,
    /// Losses reported.
    pub losses: usize,
    /// Faults injected.
    pub nemesis_events: usize,
    /// Every broken promise.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Violations of one check.
    pub fn count(&self, check: Check) -> usize {
        self.violations.iter().filter(|v| v.check == check).count()
    }

    /// True when no promise was broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: &dyn fmt::Display| {
            writeln!(f, "  {k:<54} {v:>7}")
        };
        writeln!(f, "chaos run summary")?;
        row(f, "acquisitions", &self.acquisitions)?;
        for (reason, n) in &self.failures {
            row(f, &format!("acquire failures: {reason}"), n)?;
        }
        row(f, "writes accepted", &self.writes_accepted)?;
        row(f, "writes rejected by the fence", &self.writes_rejected)?;
        row(
            f,
            "  of which paused holders (stale by design)",
            &self.stale_rejected,
        )?;
        row(f, "stale writes accepted", &self.stale_accepted)?;
        row(f, "losses reported by watchdogs", &self.losses)?;
        row(f, "nemesis events", &self.nemesis_events)?;
        for check in [
            Check::TokenOrder,
            Check::StoreOrder,
            Check::Exclusion,
            Check::StaleWrite,
            Check::LossInTime,
            Check::PermitBound,
            Check::ReadWrite,
            Check::ReaderToken,
        ] {
            row(f, &format!("violations: {check}"), &self.count(check))?;
        }
        for v in self.violations.iter().take(20) {
            writeln!(f, "  ! {}: {}", v.check, v.detail)?;
        }
        Ok(())
    }
}

/// A holder's validity window.
struct Window {
    worker: usize,
    token: FencingToken,
    from: Instant,
    to: Instant,
}

impl History {
    /// An empty history; times print relative to now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Appends an event.
    pub fn record(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Seconds since the history started, for logs.
    pub fn since_start(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Checks every promise. `store_logs` holds, per resource, the tokens the fenced
    /// store accepted in its own order (see
    /// [`RedisFencedStore::accepted_log`](crate::fence::RedisFencedStore::accepted_log)).
    pub fn check(&self, store_logs: &HashMap<String, Vec<FencingToken>>) -> Report {
        let events = self.events();
        let mut report = Report::default();
        let at = |t: Instant| format!("{:.3}s", self.since_start(t));
        let mut acquired: HashMap<&str, Vec<(Instant, Instant, FencingToken, usize)>> =
            HashMap::new();
        let mut ended: HashMap<(&str, FencingToken), (Instant, Instant)> = HashMap::new();
        let mut unsafe_spans = Vec::new();
        let mut semaphores: HashMap<&str, usize> = HashMap::new();
        let mut reads: Vec<&Event> = Vec::new();
        for e in &events {
            match e {
                Event::Acquired {
                    worker,
                    resource,
                    token,
                    started,
                    acquired: done,
                } => {
                    report.acquisitions += 1;
                    acquired
                        .entry(resource)
                        .or_default()
                        .push((*started, *done, *token, *worker));
                }
                Event::AcquireFailed { reason, .. } => {
                    *report.failures.entry(reason.clone()).or_default() += 1;
                }
                Event::Write {
                    worker,
                    resource,
                    token,
                    verdict,
                    stale_by_design,
                } => match (verdict.is_accepted(), stale_by_design) {
                    (true, false) => report.writes_accepted += 1,
                    (false, false) => report.writes_rejected += 1,
                    (false, true) => {
                        report.writes_rejected += 1;
                        report.stale_rejected += 1;
                    }
                    (true, true) => {
                        report.writes_accepted += 1;
                        report.stale_accepted += 1;
                        report.violations.push(Violation {
                            check: Check::StaleWrite,
                            detail: format!(
                                "worker {worker}'s write to {resource} with token {token}, made \
                                     after a newer holder wrote, was accepted"
                            ),
                        });
                    }
                },
                Event::Lost {
                    worker,
                    resource,
                    token,
                    at: when,
                    deadline,
                    ..
                } => {
                    report.losses += 1;
                    if when > deadline {
                        report.violations.push(Violation {
                            check: Check::LossInTime,
                            detail: format!(
                                "worker {worker} learned of losing {resource} (token {token}) at {}, \
                                 {:?} after its deadline {}",
                                at(*when),
                                *when - *deadline,
                                at(*deadline)
                            ),
                        });
                    }
                }
                Event::Ended {
                    resource,
                    token,
                    at: when,
                    deadline,
                    ..
                } => {
                    ended.insert((resource, *token), (*when, *deadline));
                }
                Event::Semaphore { name, permits } => {
                    semaphores.insert(name, *permits);
                }
                read @ Event::Read { .. } => {
                    report.acquisitions += 1;
                    reads.push(read);
                }
                Event::Nemesis {
                    at: when,
                    breaks_assumptions_until,
                    ..
                } => {
                    report.nemesis_events += 1;
                    if let Some(until) = breaks_assumptions_until {
                        unsafe_spans.push((*when, *until));
                    }
                }
            }
        }

        // Per semaphore, every slot's windows: (from, to, worker).
        let mut permit_windows: HashMap<&str, Vec<(Instant, Instant, usize)>> = HashMap::new();
        // Per reader-writer lock, its writers' windows.
        let mut writer_windows: HashMap<&str, Vec<(Instant, Instant, usize, FencingToken)>> =
            HashMap::new();
        for (resource, list) in &mut acquired {
            token_order(resource, list, &at, &mut report);
            let windows: Vec<Window> = list
                .iter()
                .map(|&(_, from, token, worker)| {
                    // Without an end record (the run stopped mid-hold) the window runs to
                    // the validity the holder could have assumed: conservative.
                    let to = ended
                        .get(&(*resource, token))
                        .map_or(from + Duration::from_secs(3600), |&(end, deadline)| {
                            end.min(deadline)
                        });
                    Window {
                        worker,
                        token,
                        from,
                        to,
                    }
                })
                .filter(|w| !unsafe_spans.iter().any(|&(a, b)| w.from <= b && a <= w.to))
                .collect();
            writer_windows
                .entry(resource)
                .or_default()
                .extend(windows.iter().map(|w| (w.from, w.to, w.worker, w.token)));
            if let Some(name) = semaphore_of(resource, &semaphores) {
                permit_windows
                    .entry(name)
                    .or_default()
                    .extend(windows.iter().map(|w| (w.from, w.to, w.worker)));
            }
            exclusion(resource, windows, &at, &mut report);
        }
        for (name, windows) in permit_windows {
            permit_bound(name, semaphores[name], windows, &at, &mut report);
        }
        for read in reads {
            let Event::Read {
                worker,
                resource,
                token,
                started,
                acquired: from,
                ended,
                deadline,
            } = read
            else {
                continue;
            };
            let to = (*ended).min(*deadline);
            // Writers whose acquisition returned before this read started.
            let floor = acquired
                .get(resource.as_str())
                .into_iter()
                .flatten()
                .filter(|&&(_, done, _, _)| done < *started)
                .map(|&(_, _, t, w)| (t, w))
                .max();
            if let Some((t, w)) = floor.filter(|(t, _)| token < t) {
                report.violations.push(Violation {
                    check: Check::ReaderToken,
                    detail: format!(
                        "{resource}: worker {worker} read from {} with token {token}, below \
                         writer {w}'s earlier {t}",
                        at(*started)
                    ),
                });
            }
            let unsafe_read = unsafe_spans.iter().any(|&(a, b)| *from <= b && a <= to);
            let overlapping = writer_windows
                .get(resource.as_str())
                .into_iter()
                .flatten()
                .find(|&&(wf, wt, _, _)| *from < wt && wf < to);
            if let (false, Some(&(wf, wt, w, t))) = (unsafe_read, overlapping) {
                report.violations.push(Violation {
                    check: Check::ReadWrite,
                    detail: format!(
                        "{resource}: worker {worker} read ({} to {}) while writer {w} (token {t}) \
                         held it ({} to {})",
                        at(*from),
                        at(to),
                        at(wf),
                        at(wt)
                    ),
                });
            }
        }

        for (resource, log) in store_logs {
            if let Some(w) = log.windows(2).find(|w| w[1] < w[0]) {
                report.violations.push(Violation {
                    check: Check::StoreOrder,
                    detail: format!(
                        "store accepted token {} for {resource} after {}",
                        w[1], w[0]
                    ),
                });
            }
        }
        report
    }
}

/// Tokens are unique per resource, and an acquisition that returned before another one
/// started has the smaller token. Sweep in O(n log n): acquisitions sorted by return
/// time, calls sorted by start, a running maximum of returned tokens.
fn token_order(
    resource: &str,
    list: &mut [(Instant, Instant, FencingToken, usize)],
    at: &dyn Fn(Instant) -> String,
    report: &mut Report,
) {
    let mut seen = HashSet::new();
    for &(_, done, token, worker) in list.iter() {
        if !seen.insert(token) {
            report.violations.push(Violation {
                check: Check::TokenOrder,
                detail: format!(
                    "token {token} for {resource} handed out twice (worker {worker} at {})",
                    at(done)
                ),
            });
        }
    }
    let mut by_return: Vec<_> = list
        .iter()
        .map(|&(_, done, token, w)| (done, token, w))
        .collect();
    by_return.sort_by_key(|x| x.0);
    list.sort_by_key(|x| x.0);
    let mut i = 0;
    let mut max: Option<(FencingToken, usize, Instant)> = None;
    for &(started, _, token, worker) in list.iter() {
        while i < by_return.len() && by_return[i].0 < started {
            let (done, t, w) = by_return[i];
            if max.is_none_or(|(m, _, _)| t > m) {
                max = Some((t, w, done));
            }
            i += 1;
        }
        if let Some((m, w, done)) = max
            && token <= m
        {
            report.violations.push(Violation {
                check: Check::TokenOrder,
                detail: format!(
                    "worker {worker} started acquiring {resource} at {} and got token {token}, \
                         but worker {w} had already got {m} at {}",
                    at(started),
                    at(done)
                ),
            });
        }
    }
}

/// The declared semaphore `resource` is a slot of (`NAME#SLOT`), if any.
fn semaphore_of<'a>(resource: &str, semaphores: &HashMap<&'a str, usize>) -> Option<&'a str> {
    let (name, slot) = resource.rsplit_once('#')?;
    let (&name, _) = semaphores.get_key_value(name)?;
    slot.parse::<usize>().is_ok().then_some(name)
}

/// At no instant are more than `permits` of a semaphore's windows open. Sweep: opening
/// and closing instants in order (a window closing at the instant another opens has
/// ended first), with a running count.
fn permit_bound(
    name: &str,
    permits: usize,
    windows: Vec<(Instant, Instant, usize)>,
    at: &dyn Fn(Instant) -> String,
    report: &mut Report,
) {
    let mut edges: Vec<(Instant, bool, usize)> = (0..windows.len())
        .flat_map(|i| [(windows[i].0, true, i), (windows[i].1, false, i)])
        .collect();
    // At equal instants closings (false) sort before openings (true).
    edges.sort_by_key(|&(t, opens, _)| (t, opens));
    let mut open: Vec<usize> = Vec::new();
    for (t, opens, i) in edges {
        if !opens {
            open.retain(|&j| j != i);
            continue;
        }
        open.push(i);
        if open.len() > permits {
            let workers: Vec<usize> = open.iter().map(|&j| windows[j].2).collect();
            report.violations.push(Violation {
                check: Check::PermitBound,
                detail: format!(
                    "{name}: {} holders valid at {} with {permits} permits (workers {workers:?})",
                    open.len(),
                    at(t)
                ),
            });
        }
    }
}

/// No two validity windows of one resource overlap.
fn exclusion(
    resource: &str,
    mut windows: Vec<Window>,
    at: &dyn Fn(Instant) -> String,
    report: &mut Report,
) {
    windows.sort_by_key(|w| w.from);
    let mut latest: Option<&Window> = None;
    for w in &windows {
        if let Some(prev) = latest
            && w.from < prev.to
        {
            report.violations.push(Violation {
                check: Check::Exclusion,
                detail: format!(
                    "{resource}: worker {} (token {}) held it from {} while worker {} (token {}) \
                         was valid until {}",
                    w.worker,
                    w.token,
                    at(w.from),
                    prev.worker,
                    prev.token,
                    at(prev.to)
                ),
            });
        }
        if latest.is_none_or(|p| w.to > p.to) {
            latest = Some(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    /// One holder of `r`: acquire call over [start, got], ended at `end`, deadline `dl`.
    fn hold(h: &History, base: Instant, worker: usize, token: u64, times: [u64; 4]) {
        let [start, got, end, dl] = times.map(|t| ms(base, t));
        let (resource, token) = ("r".to_owned(), FencingToken::new(token));
        h.record(Event::Acquired {
            worker,
            resource: resource.clone(),
            token,
            started: start,
            acquired: got,
        });
        h.record(Event::Ended {
            worker,
            resource,
            token,
            at: end,
            deadline: dl,
        });
    }

    #[test]
    fn a_clean_history_is_clean() {
        let (h, b) = (History::new(), Instant::now());
        hold(&h, b, 1, 1, [0, 5, 50, 900]);
        hold(&h, b, 2, 2, [10, 60, 100, 960]);
        hold(&h, b, 3, 3, [70, 110, 150, 1010]);
        let logs = HashMap::from([(
            "r".to_owned(),
            vec![FencingToken::new(1), FencingToken::new(3)],
        )]);
        let r = h.check(&logs);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.acquisitions, 3);
    }

    #[test]
    fn each_broken_promise_is_flagged() {
        let (h, b) = (History::new(), Instant::now());
        hold(&h, b, 1, 5, [0, 5, 500, 900]);
        // Overlaps worker 1 (valid until 500) and has a smaller token though it started
        // after worker 1's acquisition returned.
        hold(&h, b, 2, 4, [10, 20, 600, 950]);
        // Duplicate token.
        hold(&h, b, 3, 5, [700, 710, 720, 1700]);
        let (resource, token) = ("r".to_owned(), FencingToken::new(5));
        h.record(Event::Lost {
            worker: 1,
            resource: resource.clone(),
            token,
            at: ms(b, 901),
            deadline: ms(b, 900),
            reason: "x".into(),
        });
        h.record(Event::Write {
            worker: 2,
            resource,
            token: FencingToken::new(4),
            verdict: Verdict::Accepted,
            stale_by_design: true,
        });
        let logs = HashMap::from([(
            "r".to_owned(),
            vec![FencingToken::new(5), FencingToken::new(4)],
        )]);
        let r = h.check(&logs);
        for check in [
            Check::TokenOrder,
            Check::StoreOrder,
            Check::Exclusion,
            Check::StaleWrite,
            Check::LossInTime,
        ] {
            assert!(r.count(check) >= 1, "{check} not flagged\n{r}");
        }
        assert_eq!(r.stale_accepted, 1);
    }

    #[test]
    fn overlap_inside_a_declared_fault_is_not_an_exclusion_violation() {
        let (h, b) = (History::new(), Instant::now());
        hold(&h, b, 1, 1, [0, 5, 500, 900]);
        hold(&h, b, 2, 2, [10, 20, 600, 950]);
        h.record(Event::Nemesis {
            at: ms(b, 0),
            what: "clock x3".into(),
            breaks_assumptions_until: Some(ms(b, 1000)),
        });
        let r = h.check(&HashMap::new());
        assert_eq!(r.count(Check::Exclusion), 0, "{r}");
        // Token order is still checked: the fence does not depend on the assumptions.
        assert_eq!(r.count(Check::TokenOrder), 0, "{r}");
    }

    /// A declared semaphore: its slots are checked one by one as locks, and together
    /// against the permit count; a same-named resource without `#SLOT` is not its slot.
    #[test]
    fn permit_holders_are_bounded_by_the_permits() {
        let (h, b) = (History::new(), Instant::now());
        h.record(Event::Semaphore {
            name: "pool".into(),
            permits: 2,
        });
        let held = |worker, resource: &str, token, from, to| {
            let token = FencingToken::new(token);
            h.record(Event::Acquired {
                worker,
                resource: resource.into(),
                token,
                started: ms(b, from),
                acquired: ms(b, from),
            });
            h.record(Event::Ended {
                worker,
                resource: resource.into(),
                token,
                at: ms(b, to),
                deadline: ms(b, to + 500),
            });
        };
        held(1, "pool#0", 1, 0, 100);
        held(2, "pool#1", 1, 50, 150);
        // Back to back with worker 1 on slot 0: fine.
        held(3, "pool#0", 2, 100, 200);
        held(4, "pool", 1, 60, 90);
        let r = h.check(&HashMap::new());
        assert!(r.is_clean(), "{r}");

        // A third holder while two are valid, on a slot of its own (a naive count).
        held(5, "pool#2", 1, 120, 130);
        let r = h.check(&HashMap::new());
        assert_eq!(r.count(Check::PermitBound), 1, "{r}");
        assert_eq!(r.count(Check::Exclusion), 0, "{r}");
    }

    /// Readers overlapping each other are fine; one overlapping a writer, or with a token
    /// below an earlier writer's, is flagged.
    #[test]
    fn readers_are_checked_against_writers() {
        let (h, b) = (History::new(), Instant::now());
        hold(&h, b, 1, 5, [0, 5, 100, 900]);
        let read = |worker, token, times: [u64; 4]| {
            let [started, acquired, ended, deadline] = times.map(|t| ms(b, t));
            h.record(Event::Read {
                worker,
                resource: "r".into(),
                token: FencingToken::new(token),
                started,
                acquired,
                ended,
                deadline,
            });
        };
        read(2, 5, [110, 120, 300, 1100]);
        read(3, 6, [130, 140, 250, 1100]);
        let r = h.check(&HashMap::new());
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.acquisitions, 3);

        read(4, 5, [50, 60, 80, 1000]);
        read(5, 4, [200, 210, 220, 1000]);
        let r = h.check(&HashMap::new());
        assert_eq!(r.count(Check::ReadWrite), 1, "{r}");
        assert_eq!(r.count(Check::ReaderToken), 1, "{r}");
    }

    /// Brute force: every pair where one acquisition returned before the other started.
    fn oracle(acqs: &[(u64, u64, u64)]) -> bool {
        acqs.iter()
            .any(|a| acqs.iter().any(|b| a.1 < b.0 && a.2 >= b.2))
    }

    proptest! {
        /// The O(n log n) sweep flags a real-time order violation exactly when the
        /// brute-force pairwise check does.
        #[test]
        fn token_order_matches_brute_force(
            raw in proptest::collection::vec((0u64..100, 0u64..20, 0u64..40), 1..30),
        ) {
            // Distinct tokens, so only ordering is at stake.
            let acqs: Vec<(u64, u64, u64)> = raw
                .iter()
                .enumerate()
                .map(|(i, &(start, dur, t))| (start, start + dur, t * 100 + i as u64))
                .collect();
            let (h, b) = (History::new(), Instant::now());
            for (i, &(start, got, token)) in acqs.iter().enumerate() {
                h.record(Event::Acquired {
                    worker: i,
                    resource: "r".into(),
                    token: FencingToken::new(token),
                    started: ms(b, start),
                    acquired: ms(b, got),
                });
            }
            let r = h.check(&HashMap::new());
            prop_assert_eq!(r.count(Check::TokenOrder) > 0, oracle(&acqs));
        }
    }
}
