//! Pure quorum arithmetic: tallies, the early-decision rule, clock-drift and validity, and
//! the fencing-token choice. No I/O lives here, so all of it is property-tested.

use std::time::Duration;

/// Fixed part of the drift allowance, for the granularity of Redis' expiry clock.
pub(crate) const DRIFT_FLOOR: Duration = Duration::from_millis(2);

/// Majority of `n` nodes: `n / 2 + 1`.
pub(crate) const fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// One node's answer to a round (acquire, extend, release, commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vote {
    /// The node did what was asked (granted, extended, deleted, committed).
    Yes,
    /// The node answered and said no (held by another owner, key gone).
    No,
    /// No usable answer: error or timeout.
    Failed,
}

/// State of a round once some answers are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Neither outcome is certain yet: keep waiting.
    Pending,
    /// A quorum said yes.
    Won,
    /// A quorum can no longer say yes, and "no" answers alone made it impossible.
    Refused,
    /// A quorum can no longer say yes, and failed nodes made the difference.
    Failed,
}

/// Running count of one round's answers over `n` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) n: usize,
    pub(crate) yes: usize,
    pub(crate) no: usize,
    pub(crate) failed: usize,
}

impl Tally {
    pub(crate) const fn new(n: usize) -> Self {
        Self {
            n,
            yes: 0,
            no: 0,
            failed: 0,
        }
    }

    pub(crate) fn record(&mut self, vote: Vote) {
        match vote {
            Vote::Yes => self.yes += 1,
            Vote::No => self.no += 1,
            Vote::Failed => self.failed += 1,
        }
    }

    /// The early-decision rule: decide the moment the outcome (won, refused, or failed)
    /// can no longer change, whatever the nodes still silent would answer. Waiting any
    /// longer would let a slow or frozen node slow down a decided round.
    ///
    /// - won: `yes >= quorum`;
    /// - refused: `no > n - quorum`, refusals alone rule a quorum out (held elsewhere),
    ///   even if every failed node had said yes;
    /// - failed: a quorum is out of reach, and `yes + failed >= quorum`, so failures made
    ///   the difference (had the failed nodes said yes, there would be a quorum).
    ///
    /// A round that is lost but could still turn out either "refused" or "failed" stays
    /// pending: with one dead node and the resource held elsewhere, the dead node fails
    /// first, and deciding then would report a fault where the truthful answer is "held".
    /// Per-node timeouts bound the wait.
    pub(crate) fn decision(&self) -> Decision {
        let q = quorum(self.n);
        if self.yes >= q {
            Decision::Won
        } else if self.no > self.n - q {
            Decision::Refused
        } else if self.no + self.failed > self.n - q && self.yes + self.failed >= q {
            Decision::Failed
        } else {
            Decision::Pending
        }
    }
}

/// Clock-drift allowance for a lease of `ttl`: `ttl * factor + 2 ms`.
///
/// Nodes expire keys on their own clocks, which may run faster than ours; the allowance
/// keeps the validity we hand out inside the shortest lease any node may actually give.
pub(crate) fn drift(ttl: Duration, factor: f64) -> Duration {
    ttl.mul_f64(factor) + DRIFT_FLOOR
}

/// Validity left after a round that started `elapsed` ago: `ttl - elapsed - drift`, or
/// `None` when that is not above `min_validity` (the attempt must then fail).
pub(crate) fn validity(
    ttl: Duration,
    elapsed: Duration,
    drift: Duration,
    min_validity: Duration,
) -> Option<Duration> {
    ttl.checked_sub(elapsed)
        .and_then(|v| v.checked_sub(drift))
        .filter(|v| *v > min_validity)
}

/// The lease sent to the nodes (`PX`), in whole milliseconds rounded up, so that it is
/// never shorter than the TTL the validity is computed from.
pub(crate) fn lease_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// How the fencing token of a won acquisition gets committed on a majority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenPlan {
    /// The token: the largest counter value any granting node returned.
    pub(crate) token: u64,
    /// Granting nodes whose counter already equals the token.
    pub(crate) at_token: usize,
    /// Granting nodes (by index) whose counter is below the token and must be raised.
    pub(crate) to_raise: Vec<usize>,
}

impl TokenPlan {
    /// Plans the commit from the granting nodes' INCR replies `(node index, value)`.
    /// Returns `None` for an empty slice (there is no token without a grant).
    pub(crate) fn new(grants: &[(usize, u64)]) -> Option<Self> {
        let token = grants.iter().map(|&(_, v)| v).max()?;
        let at_token = grants.iter().filter(|&&(_, v)| v == token).count();
        let to_raise = grants
            .iter()
            .filter(|&&(_, v)| v < token)
            .map(|&(i, _)| i)
            .collect();
        Some(Self {
            token,
            at_token,
            to_raise,
        })
    }

    /// Fast path: a quorum already returned exactly the token, so it is stored on a
    /// majority and no commit round is needed.
    pub(crate) fn committed_without_round(&self, n: usize) -> bool {
        self.at_token >= quorum(n)
    }
}

/// Outcome of a commit round over the granting nodes whose counters were below the token,
/// given `at_token` granting nodes already at it: `Some(true)` once the token is stored
/// on a quorum of all `n` nodes, `Some(false)` once too few nodes are left for that, and
/// `None` while it could still go either way.
pub(crate) fn commit_decided(n: usize, at_token: usize, round: &Tally) -> Option<bool> {
    let q = quorum(n);
    let silent = round.n - round.yes - round.no - round.failed;
    if at_token + round.yes >= q {
        Some(true)
    } else if at_token + round.yes + silent < q {
        Some(false)
    } else {
        None
    }
}

/// A round in which each node grants at most one of several candidates (a semaphore's
/// slots: each node picks the first free one), decided per candidate with the
/// [`Tally::decision`] rule: a node that granted another candidate, or none, said no to
/// this one.
///
/// `granted` yields, per candidate in order, the nodes that granted it (an iterator, so a
/// round can pass its live counters without collecting them at each answer); `refused`
/// those that granted none; `failed` those without a usable answer. Returns the candidate won at a quorum,
/// if any, with the round's decision: won as soon as one candidate has a quorum (at most
/// one can: each node grants one, and two quorums would need more than `n` nodes);
/// pending while any candidate could still get one; otherwise failed when failed nodes
/// kept some candidate from a quorum, refused when answers alone ruled every one out.
pub(crate) fn split_decision<I>(
    n: usize,
    granted: I,
    refused: usize,
    failed: usize,
) -> (Decision, Option<usize>)
where
    I: IntoIterator<Item = usize>,
    I::IntoIter: Clone,
{
    let granted = granted.into_iter();
    let answered: usize = granted.clone().sum::<usize>() + refused;
    let mut overall = Decision::Refused;
    let mut candidates = 0;
    for (c, yes) in granted.enumerate() {
        candidates += 1;
        let tally = Tally {
            n,
            yes,
            no: answered - yes,
            failed,
        };
        match tally.decision() {
            Decision::Won => return (Decision::Won, Some(c)),
            Decision::Pending => overall = Decision::Pending,
            Decision::Failed if overall == Decision::Refused => overall = Decision::Failed,
            Decision::Failed | Decision::Refused => {}
        }
    }
    if candidates == 0 {
        // No candidates at all: the same rule with nobody able to say yes.
        overall = Tally {
            n,
            yes: 0,
            no: answered,
            failed,
        }
        .decision();
    }
    (overall, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn votes() -> impl Strategy<Value = Vec<Vote>> {
        (1usize..=9).prop_flat_map(|n| {
            proptest::collection::vec(
                prop_oneof![Just(Vote::Yes), Just(Vote::No), Just(Vote::Failed)],
                n,
            )
        })
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        for n in 1..=9usize {
            let q = quorum(n);
            assert!(2 * q > n, "quorum {q} of {n} is not a majority");
            assert!(2 * (q - 1) <= n, "quorum {q} of {n} is larger than needed");
        }
    }

    proptest! {
        /// Two quorums of the same node set always share a node: the basis of both
        /// mutual exclusion and token monotonicity.
        #[test]
        fn two_quorums_intersect(n in 1usize..=9, a in any::<u16>(), b in any::<u16>()) {
            let q = quorum(n);
            let pick = |seed: u16| -> Vec<usize> {
                let mut idx: Vec<usize> = (0..n).collect();
                idx.rotate_left(seed as usize % n);
                idx.truncate(q);
                idx
            };
            let (x, y) = (pick(a), pick(b));
            prop_assert!(x.iter().any(|i| y.contains(i)));
        }

        /// Random arrival orders for N = 1..=9 (the exhaustive test below covers every one;
        /// this one keeps the rule honest if the exhaustive bound is ever lowered).
        #[test]
        fn decision_matches_oracle_on_random_orders(all in votes()) {
            check_sequence(&all).map_err(TestCaseError::fail)?;
        }

        /// With one candidate the split rule is the plain rule.
        #[test]
        fn split_decision_with_one_candidate_is_the_tally_rule(all in votes()) {
            let n = all.len();
            let mut t = Tally::new(n);
            for v in &all {
                t.record(*v);
                let (d, c) = split_decision(n, [t.yes], t.no, t.failed);
                prop_assert_eq!(d, t.decision());
                prop_assert_eq!(c.is_some(), d == Decision::Won);
            }
        }

        /// Answers arriving one by one (each node grants one of `k` candidates, none, or
        /// fails): a won candidate has a quorum, at most one can, and once decided the
        /// outcome never changes (the round may stop listening).
        #[test]
        fn split_decision_is_sound_and_stable(
            answers in (1usize..=9).prop_flat_map(|n| proptest::collection::vec(0usize..6, n)),
            k in 1usize..4,
        ) {
            let n = answers.len();
            let mut granted = vec![0usize; k];
            let (mut refused, mut failed) = (0, 0);
            let mut first: Option<(Decision, Option<usize>)> = None;
            for a in answers {
                match a {
                    a if a < k => granted[a] += 1,
                    4 => refused += 1,
                    _ => failed += 1,
                }
                let (d, c) = split_decision(n, granted.iter().copied(), refused, failed);
                if let Some(c) = c {
                    prop_assert!(granted[c] >= quorum(n));
                }
                prop_assert!(granted.iter().filter(|&&g| g >= quorum(n)).count() <= 1);
                match first {
                    Some(f) => prop_assert_eq!((d, c), f, "a decided round changed its outcome"),
                    None if d != Decision::Pending => first = Some((d, c)),
                    None => {}
                }
            }
        }

        #[test]
        fn validity_never_exceeds_ttl_minus_drift(
            ttl_ms in 1u64..100_000, elapsed_ms in 0u64..100_000, factor in 0.0f64..0.5,
        ) {
            let ttl = Duration::from_millis(ttl_ms);
            let elapsed = Duration::from_millis(elapsed_ms);
            let d = drift(ttl, factor);
            prop_assert!(d >= DRIFT_FLOOR);
            match validity(ttl, elapsed, d, Duration::ZERO) {
                Some(v) => {
                    prop_assert!(v > Duration::ZERO);
                    prop_assert_eq!(v + elapsed + d, ttl);
                }
                None => prop_assert!(elapsed + d >= ttl),
            }
        }

        #[test]
        fn token_plan_takes_the_max_and_splits_the_rest(
            grants in proptest::collection::vec(any::<u64>(), 1..9),
        ) {
            let g: Vec<(usize, u64)> = grants.iter().copied().enumerate().collect();
            let plan = TokenPlan::new(&g).unwrap();
            prop_assert_eq!(plan.token, *grants.iter().max().unwrap());
            prop_assert_eq!(plan.at_token + plan.to_raise.len(), grants.len());
            for i in &plan.to_raise {
                prop_assert!(grants[*i] < plan.token);
            }
        }
    }

    /// Final outcome once every node has answered.
    fn classify(n: usize, yes: usize, no: usize) -> Decision {
        let q = quorum(n);
        if yes >= q {
            Decision::Won
        } else if no > n - q {
            Decision::Refused
        } else {
            Decision::Failed
        }
    }

    /// Every outcome still reachable from a partial tally, by trying every split of the
    /// silent nodes into yes/no/failed.
    fn reachable(t: &Tally) -> Vec<Decision> {
        let rest = t.n - t.yes - t.no - t.failed;
        let mut out = Vec::new();
        for y in 0..=rest {
            for no in 0..=rest - y {
                let d = classify(t.n, t.yes + y, t.no + no);
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// The rule decides exactly when the outcome becomes certain, decides it right, and
    /// never changes its mind.
    fn check_sequence(all: &[Vote]) -> Result<(), String> {
        let mut t = Tally::new(all.len());
        let mut decided = None;
        for v in all {
            t.record(*v);
            let d = t.decision();
            let possible = reachable(&t);
            match (d, decided) {
                (_, Some(prev)) if d != prev => {
                    return Err(format!("{all:?}: changed from {prev:?} to {d:?}"));
                }
                (Decision::Pending, _) if possible.len() == 1 => {
                    return Err(format!(
                        "{all:?}: still pending at {t:?}, but only {possible:?} is possible"
                    ));
                }
                (Decision::Pending, _) => {}
                (d, _) if possible != [d] => {
                    return Err(format!(
                        "{all:?}: decided {d:?} at {t:?}, but {possible:?} are possible"
                    ));
                }
                (d, _) => decided = Some(d),
            }
        }
        if decided.is_none() {
            return Err(format!("{all:?}: never decided"));
        }
        Ok(())
    }

    /// Every sequence of grant/refuse/error answers, in every order, for N = 1..=9
    /// (29,523 sequences).
    #[test]
    fn decision_matches_oracle_exhaustively() {
        const VOTES: [Vote; 3] = [Vote::Yes, Vote::No, Vote::Failed];
        for n in 1..=9u32 {
            for code in 0..3usize.pow(n) {
                let seq: Vec<Vote> = (0..n).map(|i| VOTES[code / 3usize.pow(i) % 3]).collect();
                if let Err(e) = check_sequence(&seq) {
                    panic!("{e}");
                }
            }
        }
    }

    #[test]
    fn one_dead_node_and_a_held_lock_is_refused_not_failed() {
        // The dead node answers first (connection refused is instant); two refusals then
        // rule out a quorum, but only the third refusal says why.
        let mut t = Tally::new(5);
        for v in [Vote::Failed, Vote::No, Vote::No] {
            t.record(v);
            assert_eq!(t.decision(), Decision::Pending);
        }
        t.record(Vote::No);
        assert_eq!(t.decision(), Decision::Refused);
    }

    proptest! {
        /// The commit round decides exactly when the final count is certain.
        #[test]
        fn commit_decision_is_early_and_right(
            n in 1usize..=9, at in 0usize..=9, raise in proptest::collection::vec(0u8..3, 0..9),
        ) {
            prop_assume!(at + raise.len() <= n);
            let votes: Vec<Vote> = raise
                .iter()
                .map(|v| [Vote::Yes, Vote::No, Vote::Failed][*v as usize])
                .collect();
            let mut t = Tally::new(votes.len());
            let final_yes = votes.iter().filter(|v| **v == Vote::Yes).count();
            let expected = at + final_yes >= quorum(n);
            let mut decided = commit_decided(n, at, &t);
            for v in &votes {
                if let Some(d) = decided {
                    prop_assert_eq!(d, expected);
                }
                t.record(*v);
                decided = decided.or(commit_decided(n, at, &t));
            }
            prop_assert_eq!(decided, Some(expected));
        }
    }

    proptest! {
        #[test]
        fn the_lease_is_never_shorter_than_the_ttl(us in 1u64..100_000_000_000) {
            let ttl = Duration::from_micros(us);
            let ms = lease_ms(ttl);
            prop_assert!(Duration::from_millis(ms) >= ttl);
            prop_assert!(Duration::from_millis(ms) < ttl + Duration::from_millis(1));
        }
    }

    #[test]
    fn empty_grants_have_no_token() {
        assert_eq!(TokenPlan::new(&[]), None);
    }
}

#[cfg(test)]
mod model;
