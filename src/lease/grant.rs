//! One acquisition of a lease, for every primitive (README, "How it works"): the grant
//! round on all nodes (each primitive says what a node is asked), the fencing-token
//! commit, the validity check, and the clean-up of a failed attempt. What a primitive adds
//! is its per-node claim; everything after a node's answer is shared.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::StreamExt;

use super::{Lease, LeaseParts, wait};
use crate::clock;
use crate::core::quorum::{self, Decision, Tally, TokenPlan, Vote};
use crate::core::{NodeCalls, Nodes, ReleaseLedger, no_quorum, run_round};
use crate::error::{Error, NodeError, Step};
use crate::fence::FencingToken;
use crate::node::{Announce, Node};
use crate::observe::OpSpan;
use crate::scripts::Keys;

/// The terms of one acquisition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    pub(crate) ttl: Duration,
    /// An attempt left with no more validity than this fails.
    pub(crate) min_validity: Duration,
    /// Per-call bound; the release ledger waits twice this for a release's outcome.
    pub(crate) node_timeout: Duration,
    /// Whether the token is committed on a majority (holders that exclude each other:
    /// the mutex, a semaphore's slots, a writer). A reader's token is the largest counter
    /// its grants saw, uncommitted: it only has to cover writers that acquired before it.
    pub(crate) commit: bool,
}

/// What one node is asked for in a grant round.
pub(crate) struct Claim {
    /// The node's index.
    pub(crate) i: usize,
    pub(crate) node: Arc<Node>,
    pub(crate) owner: Arc<str>,
    /// The lease to set, in whole milliseconds.
    pub(crate) ttl_ms: u64,
    /// Told when the call is repeated on a new connection (see `ReleaseLedger::deleted`).
    pub(crate) ledger: Arc<ReleaseLedger>,
}

impl Claim {
    /// For [`Node::acquire`]'s `on_repeat`: records that the call to this node repeated.
    pub(crate) fn on_repeat(&self) -> impl Fn() + use<> {
        let (ledger, i) = (Arc::clone(&self.ledger), self.i);
        move || ledger.repeated(i)
    }
}

/// A fresh owner id: a random (version 4) UUID as 32 hex digits.
///
/// The bytes come from the thread's `rand` generator (ChaCha, seeded from the OS and
/// reseeded by `rand`), not from `Uuid::new_v4`, which asks the kernel (`getrandom`) on
/// every call: `strace -c` of the 64-task bench counted one such system call per cycle.
pub(crate) fn owner_id() -> Arc<str> {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    Arc::from(&*id.simple().encode_lower(&mut uuid::Uuid::encode_buffer()))
}

/// One node's grant: which of the attempt's candidates it gave (an index into them; the
/// mutex has one candidate, a semaphore one per slot) and the candidate's fence counter,
/// incremented while the key was ours there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Granted {
    pub(crate) candidate: usize,
    pub(crate) counter: u64,
    /// A set's other resources' counters, in `Keys::rest` order (empty otherwise).
    pub(crate) more: Box<[u64]>,
}

impl Granted {
    /// The grant of a primitive with one candidate.
    pub(crate) fn only(counter: u64) -> Self {
        Self::of(0, counter)
    }

    /// Candidate `candidate` granted, with its counter.
    pub(crate) fn of(candidate: usize, counter: u64) -> Self {
        Self {
            candidate,
            counter,
            more: Box::default(),
        }
    }

    /// Resource `r`'s counter (0: the candidate's own key, then `Keys::rest`).
    fn counter_of(&self, r: usize) -> Option<u64> {
        match r {
            0 => Some(self.counter),
            r => self.more.get(r - 1).copied(),
        }
    }
}

/// A won attempt: which candidate, and its lease.
pub(crate) struct Won {
    pub(crate) candidate: usize,
    pub(crate) lease: Arc<Lease>,
}

type Answer = Result<Option<Granted>, NodeError>;

/// One attempt to lease one of `candidates` (each a set of keys; every node grants at
/// most one of them, per `claim`): `claim` on every node at once, decided at a quorum for
/// one candidate ([`quorum::split_decision`]), the token committed, the validity checked.
/// Everything taken is released on any way out without a lease (an error, `Ok(None)`, or
/// the caller dropping this future mid-round), and the candidates not won are released
/// when one is. `resource` names the attempt in errors; `lease_name` names the lease of
/// the candidate won.
pub(crate) async fn acquire<F, Fut>(
    nodes: &Nodes,
    resource: &str,
    candidates: &[Arc<Keys>],
    terms: Terms,
    lease_name: impl FnOnce(usize) -> String,
    claim: F,
) -> Result<Option<Won>, Error>
where
    F: Fn(Claim) -> Fut,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let span = OpSpan::acquire(resource);
    let start = clock::now();
    let attempt = grant(nodes, resource, candidates, terms, lease_name, claim);
    let won = span.run(attempt).await;
    nodes.counters().attempt(&won, clock::since(start));
    span.attempt_outcome(&won);
    if let Ok(Some(w)) = &won {
        span.token(w.lease.token.get());
    }
    won
}

/// The attempt of [`acquire`], outside its span.
async fn grant<F, Fut>(
    nodes: &Nodes,
    resource: &str,
    candidates: &[Arc<Keys>],
    terms: Terms,
    lease_name: impl FnOnce(usize) -> String,
    claim: F,
) -> Result<Option<Won>, Error>
where
    F: Fn(Claim) -> Fut,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let ttl = terms.ttl;
    let n = nodes.len();
    let owner = owner_id();
    let ttl_ms = quorum::lease_ms(ttl);
    // Whether this owner's keys must go, and what its release did per node, for the
    // stragglers' task. Twice the node timeout: the release's own bound, plus slack for a
    // busy runtime.
    let ledger = Arc::new(ReleaseLedger::new(n, terms.node_timeout * 2));
    let mut cleanup = Cleanup {
        nodes,
        candidates,
        owner: &owner,
        ledger: &ledger,
        may_hold: None,
        done: false,
    };
    let start = clock::now();

    let mut calls = NodeCalls::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        calls.push(
            i,
            claim(Claim {
                i,
                node: Arc::clone(node),
                owner: owner.clone(),
                ttl_ms,
                ledger: Arc::clone(&ledger),
            }),
        );
    }
    // Grants per candidate, counted as the answers come in.
    let granted: Box<[AtomicUsize]> = candidates.iter().map(|_| AtomicUsize::new(0)).collect();
    let vote = |r: &Answer| match r {
        Ok(Some(g)) => match granted.get(g.candidate) {
            Some(count) => {
                count.fetch_add(1, Ordering::Relaxed);
                Vote::Yes
            }
            // Not one of ours: the node misbehaves (never seen; `claim` checks its reply).
            None => Vote::Failed,
        },
        Ok(None) => Vote::No,
        Err(_) => Vote::Failed,
    };
    let split = |t: &Tally| {
        let counts = granted.iter().map(|c| c.load(Ordering::Relaxed));
        quorum::split_decision(n, counts, t.no, t.failed)
    };
    let (round, pending) =
        run_round(calls, n, vote, |t| split(t).0 != Decision::Pending, None).await;
    let (decision, won) = split(&round.tally);
    let won = won.filter(|_| decision == Decision::Won);
    finish_stragglers(nodes, pending, candidates, won, &owner, &ledger);
    // A failed attempt releases every node that did not plainly refuse: grants, errors
    // (a timed-out call may still run, and may grant any candidate), and calls still in
    // flight, which may have granted by now. Stragglers that grant later are released by
    // the task above.
    cleanup.may_hold = Some(
        (0..n)
            .filter_map(|i| match round.answers.iter().find(|(j, _)| *j == i) {
                Some((_, Ok(None))) => None,
                Some((_, Ok(Some(g)))) => Some((i, Some(g.candidate))),
                Some((_, Err(_))) | None => Some((i, None)),
            })
            .collect(),
    );

    if decision != Decision::Won {
        // For the wait after this attempt: the nodes that did not grant, whose releases
        // it must hear of (our own grants are released by the clean-up).
        let granted = |i: usize| {
            round
                .answers
                .iter()
                .any(|(j, a)| *j == i && matches!(a, Ok(Some(_))))
        };
        wait::record_blocked(n, (0..n).filter(|&i| !granted(i)));
    }
    let won = match (decision, won) {
        (Decision::Won, Some(c)) => c,
        (Decision::Refused, _) => return Ok(None),
        _ => return Err(no_quorum(resource, Step::Acquire, &round, n)),
    };
    // One token per resource of the lease (a set has several), each planned and committed
    // as the mutex's: the commit rounds of a set run together.
    let keys = &candidates[won];
    let mut plans = Vec::with_capacity(keys.resources());
    for r in 0..keys.resources() {
        let grants: Vec<(usize, u64)> = round
            .answers
            .iter()
            .filter_map(|(i, a)| match a {
                Ok(Some(g)) if g.candidate == won => g.counter_of(r).map(|c| (*i, c)),
                _ => None,
            })
            .collect();
        let Some(plan) = TokenPlan::new(&grants) else {
            return Err(no_quorum(resource, Step::Acquire, &round, n));
        };
        plans.push(plan);
    }
    if terms.commit {
        if keys.resources() == 1 {
            commit(nodes, resource, keys, &owner, &plans[0]).await?;
        } else {
            let each: Vec<Arc<Keys>> = keys
                .locks()
                .map(|k| {
                    Arc::new(Keys {
                        rest: Vec::new(),
                        ..k.clone()
                    })
                })
                .collect();
            let rounds = each
                .iter()
                .zip(&plans)
                .map(|(k, plan)| commit(nodes, resource, k, &owner, plan));
            futures::future::try_join_all(rounds).await?;
        }
    }

    // Validity counts from before the first command was sent, and is recomputed after
    // the commit round, which also ate into the lease.
    let drift = nodes.drift(ttl);
    if quorum::validity(ttl, clock::since(start), drift, terms.min_validity).is_none() {
        return Err(Error::NoValidity {
            resource: resource.to_owned(),
            elapsed: clock::since(start),
            ttl,
            drift,
        });
    }
    cleanup.done = true;
    cleanup.release_losers(won);
    Ok(Some(Won {
        candidate: won,
        lease: Arc::new(Lease::new(LeaseParts {
            nodes: nodes.clone(),
            resource: lease_name(won),
            keys: Arc::clone(keys),
            owner: owner.clone(),
            token: FencingToken::new(plans[0].token),
            rest_tokens: plans[1..]
                .iter()
                .map(|p| FencingToken::new(p.token))
                .collect(),
            ttl,
            acquired_at: start,
            deadline: start + (ttl - drift),
            ledger: Arc::clone(&ledger),
        })),
    }))
}

/// Makes the token durable on a majority before anyone sees it.
///
/// Why this keeps tokens strictly increasing: once token T is stored (the counter at
/// least T) on a majority M while we hold the lock there, any later acquisition needs a
/// majority Q, and Q meets M in at least one node. On that node the later `SET NX` could
/// only succeed after our key was gone, so its `INCR` runs on a counter of at least T and
/// returns more than T. Without this round, a later holder whose majority missed the node
/// that gave us T could get a smaller token (counters 10/5/5/5/5: we get 11 from {1,2,3};
/// the next holder of {3,4,5} would get 7). It assumes nodes keep acknowledged writes (AOF
/// `appendfsync always`). The model in `src/models/mutex.rs` checks every schedule of a
/// small system, and finds the smaller token when this round is skipped.
async fn commit(
    nodes: &Nodes,
    resource: &str,
    keys: &Arc<Keys>,
    owner: &Arc<str>,
    plan: &TokenPlan,
) -> Result<(), Error> {
    let n = nodes.len();
    if plan.committed_without_round(n) {
        return Ok(());
    }
    let span = OpSpan::commit(resource);
    span.token(plan.token);
    let committed = span
        .run(commit_round(nodes, resource, keys, owner, plan))
        .await;
    span.outcome(if committed.is_ok() {
        "committed"
    } else {
        "no_quorum"
    });
    committed
}

/// The round of [`commit`], outside its span.
async fn commit_round(
    nodes: &Nodes,
    resource: &str,
    keys: &Arc<Keys>,
    owner: &Arc<str>,
    plan: &TokenPlan,
) -> Result<(), Error> {
    let n = nodes.len();
    let token = plan.token;
    let m = plan.to_raise.len();
    let mut calls = NodeCalls::with_capacity(m);
    for &i in &plan.to_raise {
        let (node, keys, owner) = (Arc::clone(&nodes[i]), Arc::clone(keys), owner.clone());
        calls.push(i, async move { node.commit(&keys, &owner, token).await });
    }
    let (round, pending) = run_round(
        calls,
        m,
        |r| match r {
            Ok(Some(v)) if *v >= token => Vote::Yes,
            Ok(_) => Vote::No,
            Err(_) => Vote::Failed,
        },
        |t| quorum::commit_decided(n, plan.at_token, t).is_some(),
        None,
    )
    .await;
    nodes.background().finish(pending);
    // A late commit that lands after we gave up only raises a counter, which is safe.
    if quorum::commit_decided(n, plan.at_token, &round.tally) == Some(true) {
        return Ok(());
    }
    let mut tally = round.tally;
    tally.yes += plan.at_token;
    Err(Error::NoQuorum {
        resource: resource.to_owned(),
        step: Step::Commit,
        granted: tally.yes,
        refused: tally.no,
        failed: tally.failed,
        quorum: quorum::quorum(n),
        nodes: n,
        errors: round.errors(),
    })
}

/// Grant calls still in flight when the attempt was decided finish in the background.
/// One that granted (or may have: a timed-out call can still run when a paused node
/// resumes) after the owner ended is released again on its node, unless the owner's
/// release there deleted the key, which proves the grant came first. A grant of a
/// candidate other than the one won is released at once: it was never the lease's. A
/// release sent now follows the grant on the same connection.
fn finish_stragglers(
    nodes: &Nodes,
    pending: NodeCalls<Option<Granted>>,
    candidates: &[Arc<Keys>],
    won: Option<usize>,
    owner: &Arc<str>,
    ledger: &Arc<ReleaseLedger>,
) {
    if pending.is_empty() {
        return;
    }
    let (all, candidates, owner, ledger) = (
        nodes.clone(),
        Arc::<[Arc<Keys>]>::from(candidates),
        owner.clone(),
        Arc::clone(ledger),
    );
    nodes
        .background()
        .spawn(pending.for_each_concurrent(None, move |(i, r)| {
            let (node, candidates, owner, ledger) = (
                Arc::clone(&all[i]),
                Arc::clone(&candidates),
                owner.clone(),
                Arc::clone(&ledger),
            );
            async move {
                let may_hold: Vec<usize> = match r {
                    Ok(None) => return,
                    Ok(Some(g)) => vec![g.candidate],
                    Err(_) => (0..candidates.len()).collect(),
                };
                for c in may_hold {
                    let Some(keys) = candidates.get(c) else {
                        continue;
                    };
                    let not_won = won.is_some_and(|w| w != c);
                    if not_won || (ledger.has_ended() && !ledger.deleted(i).await) {
                        let _ = node.release(keys, &owner, Announce::Quietly).await;
                    }
                }
            }
        }));
}

/// Releases an attempt's keys when the attempt ends without a lease: on failure, and
/// when the caller drops the attempt's future mid-round (commands already sent may still
/// grant; the release follows them on the same connections).
struct Cleanup<'a> {
    nodes: &'a Nodes,
    candidates: &'a [Arc<Keys>],
    owner: &'a Arc<str>,
    ledger: &'a Arc<ReleaseLedger>,
    /// Nodes that may hold a key, and which candidate's (`None`: any); `None` until the
    /// round is decided (every node may hold any).
    may_hold: Option<Vec<(usize, Option<usize>)>>,
    /// A lease took over.
    done: bool,
}

impl Cleanup<'_> {
    /// The nodes that may hold candidate `c`.
    fn holding(&self, c: usize, except: Option<usize>) -> Vec<usize> {
        if Some(c) == except {
            return Vec::new();
        }
        match &self.may_hold {
            None => (0..self.nodes.len()).collect(),
            Some(may_hold) => may_hold
                .iter()
                .filter(|(_, held)| held.is_none_or(|h| h == c))
                .map(|(i, _)| *i)
                .collect(),
        }
    }

    /// After candidate `won` became the lease: the other candidates' keys go, outside the
    /// lease's ledger (it accounts for the won keys only).
    fn release_losers(&self, won: usize) {
        for (c, keys) in self.candidates.iter().enumerate() {
            let holding = self.holding(c, Some(won));
            self.nodes
                .release_untracked(&holding, keys, self.owner, Announce::Quietly);
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.ledger.end();
        // Without a runtime (it is shutting down) the keys expire with their TTL.
        if tokio::runtime::Handle::try_current().is_ok() {
            for (c, keys) in self.candidates.iter().enumerate() {
                self.nodes.release_in_background(
                    &self.holding(c, None),
                    keys,
                    self.owner,
                    Announce::Quietly,
                    Arc::clone(self.ledger),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::owner_id;

    /// Owner ids are 32 lowercase hex digits (a version 4 UUID) and do not repeat.
    #[test]
    fn owner_ids_are_uuid_hex_and_distinct() {
        let ids: HashSet<_> = (0..10_000).map(|_| owner_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert_eq!(&id[12..13], "4", "version 4: {id}");
        }
    }
}
