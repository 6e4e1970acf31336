//! One acquisition of a lease, for every primitive (README, "How it works"): the grant
//! round on all nodes (each primitive says what a node is asked), the fencing-token
//! commit, the validity check, and the clean-up of a failed attempt. What a primitive adds
//! is its per-node claim; everything after a node's answer is shared.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;

use super::{Lease, LeaseParts};
use crate::clock;
use crate::core::quorum::{self, Decision, TokenPlan, Vote};
use crate::core::{NodeCalls, Nodes, ReleaseLedger, decided, no_quorum, run_round};
use crate::error::{Error, NodeError, Step};
use crate::fence::FencingToken;
use crate::node::{Announce, Node};
use crate::scripts::Keys;

/// The terms of one acquisition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    pub(crate) ttl: Duration,
    /// An attempt left with no more validity than this fails.
    pub(crate) min_validity: Duration,
    /// Per-call bound; the release ledger waits twice this for a release's outcome.
    pub(crate) node_timeout: Duration,
}

/// What one node is asked for in a grant round.
pub(crate) struct Claim {
    /// The node's index.
    pub(crate) i: usize,
    pub(crate) node: Arc<Node>,
    pub(crate) keys: Arc<Keys>,
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

/// One attempt to lease `keys`: `claim` on every node at once, decided at a quorum (a
/// node answers `Some(counter)` for a grant, `None` for a refusal), the token committed,
/// the validity checked; everything taken is released on any way out without a lease
/// (an error, `Ok(None)`, or the caller dropping this future mid-round).
pub(crate) async fn acquire<F, Fut>(
    nodes: &Nodes,
    resource: &str,
    keys: &Arc<Keys>,
    terms: Terms,
    claim: F,
) -> Result<Option<Arc<Lease>>, Error>
where
    F: Fn(Claim) -> Fut,
    Fut: Future<Output = Result<Option<u64>, NodeError>> + Send + 'static,
{
    let ttl = terms.ttl;
    let n = nodes.len();
    let owner: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let ttl_ms = quorum::lease_ms(ttl);
    // Whether this owner's keys must go, and what its release did per node, for the
    // stragglers' task. Twice the node timeout: the release's own bound, plus slack for a
    // busy runtime.
    let ledger = Arc::new(ReleaseLedger::new(n, terms.node_timeout * 2));
    let mut cleanup = Cleanup {
        nodes,
        keys,
        owner: &owner,
        ledger: &ledger,
        may_hold: (0..n).collect(),
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
                keys: Arc::clone(keys),
                owner: owner.clone(),
                ttl_ms,
                ledger: Arc::clone(&ledger),
            }),
        );
    }
    let (round, pending) = run_round(calls, n, grant_vote, decided, None).await;
    finish_stragglers(nodes, pending, keys, &owner, &ledger);
    // A failed attempt releases every node that did not plainly refuse: grants, errors
    // (a timed-out call may still run), and calls still in flight, which may have
    // granted by now. Stragglers that grant later are released by the task above.
    cleanup.may_hold.retain(|i| {
        !round
            .answers
            .iter()
            .any(|(j, r)| j == i && matches!(r, Ok(None)))
    });

    match round.tally.decision() {
        Decision::Won => {}
        Decision::Refused => return Ok(None),
        Decision::Failed | Decision::Pending => {
            return Err(no_quorum(resource, Step::Acquire, &round, n));
        }
    }
    let grants: Vec<(usize, u64)> = round
        .answers
        .iter()
        .filter_map(|(i, r)| match r {
            Ok(Some(v)) => Some((*i, *v)),
            _ => None,
        })
        .collect();
    let Some(plan) = TokenPlan::new(&grants) else {
        return Err(no_quorum(resource, Step::Acquire, &round, n));
    };
    commit(nodes, resource, keys, &owner, &plan).await?;

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
    Ok(Some(Arc::new(Lease::new(LeaseParts {
        nodes: nodes.clone(),
        resource: resource.to_owned(),
        keys: Arc::clone(keys),
        owner: owner.clone(),
        token: FencingToken::new(plan.token),
        ttl,
        acquired_at: start,
        deadline: start + (ttl - drift),
        ledger: Arc::clone(&ledger),
    }))))
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
/// release there deleted the key, which proves the grant came first. A release sent now
/// follows the grant on the same connection.
fn finish_stragglers(
    nodes: &Nodes,
    pending: NodeCalls<Option<u64>>,
    keys: &Arc<Keys>,
    owner: &Arc<str>,
    ledger: &Arc<ReleaseLedger>,
) {
    if pending.is_empty() {
        return;
    }
    let (all, keys, owner, ledger) = (
        nodes.clone(),
        Arc::clone(keys),
        owner.clone(),
        Arc::clone(ledger),
    );
    nodes
        .background()
        .spawn(pending.for_each_concurrent(None, move |(i, r)| {
            let (node, keys, owner, ledger) = (
                Arc::clone(&all[i]),
                Arc::clone(&keys),
                owner.clone(),
                Arc::clone(&ledger),
            );
            async move {
                if matches!(r, Ok(None)) || !ledger.has_ended() || ledger.deleted(i).await {
                    return;
                }
                let _ = node.release(&keys, &owner, Announce::Quietly).await;
            }
        }));
}

/// Releases an attempt's keys when the attempt ends without a lease: on failure, and
/// when the caller drops the attempt's future mid-round (commands already sent may still
/// grant; the release follows them on the same connections).
struct Cleanup<'a> {
    nodes: &'a Nodes,
    keys: &'a Arc<Keys>,
    owner: &'a Arc<str>,
    ledger: &'a Arc<ReleaseLedger>,
    /// Nodes that may hold the key.
    may_hold: Vec<usize>,
    /// A lease took over.
    done: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.ledger.end();
        // Without a runtime (it is shutting down) the keys expire with their TTL.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.nodes.release_in_background(
                &self.may_hold,
                self.keys,
                self.owner,
                Announce::Quietly,
                Arc::clone(self.ledger),
            );
        }
    }
}

fn grant_vote(r: &Result<Option<u64>, NodeError>) -> Vote {
    match r {
        Ok(Some(_)) => Vote::Yes,
        Ok(None) => Vote::No,
        Err(_) => Vote::Failed,
    }
}
