//! One acquisition attempt (README, "How it works"): the grant round on all nodes, the
//! fencing-token commit, the validity check, and the clean-up of a failed attempt.

use std::sync::Arc;

use futures::stream::StreamExt;

use super::{AcquirePlan, LockGuard};
use crate::client::Client;
use crate::clock;
use crate::core::quorum::{self, Decision, TokenPlan, Vote};
use crate::core::{NodeCalls, ReleaseLedger, decided, no_quorum, run_round};
use crate::error::{Error, NodeError, Step};
use crate::fence::FencingToken;
use crate::lease::watchdog::WatchdogTask;
use crate::lease::{Lease, LeaseHandle, LeaseParts};
use crate::node::Announce;
use crate::scripts::Keys;

impl Client {
    /// One attempt: grant on every node, decide at a quorum, commit the token, check the
    /// validity; release what was taken on any way out without a guard.
    pub(crate) async fn attempt(
        &self,
        resource: &str,
        keys: &Arc<Keys>,
        plan: &AcquirePlan,
    ) -> Result<Option<LockGuard>, Error> {
        let s = &self.settings();
        let ttl = plan.ttl;
        let nodes = &self.nodes();
        let n = nodes.len();
        let owner: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let ttl_ms = quorum::lease_ms(ttl);
        // Whether this owner's keys must go, and what its release did per node, for the
        // stragglers' task. Twice the node timeout: the release's own bound, plus slack
        // for a busy runtime.
        let ledger = Arc::new(ReleaseLedger::new(n, s.node_timeout * 2));
        // Until the guard exists, any way out of this function (an error, `Ok(None)`, or
        // the caller dropping this future mid-round) releases the owner's keys.
        let mut cleanup = Cleanup {
            client: self,
            keys,
            owner: &owner,
            ledger: &ledger,
            nodes: (0..n).collect(),
            done: false,
        };
        let start = clock::now();

        let mut calls = NodeCalls::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let (node, keys, owner, ledger) = (
                Arc::clone(node),
                Arc::clone(keys),
                owner.clone(),
                Arc::clone(&ledger),
            );
            calls.push(i, async move {
                let repeated = || ledger.repeated(i);
                node.acquire(&keys, &owner, ttl_ms, repeated).await
            });
        }
        let (round, pending) = run_round(calls, n, acquire_vote, decided, None).await;
        self.finish_stragglers(pending, keys, &owner, &ledger);
        // A failed attempt releases every node that did not plainly refuse: grants, errors
        // (a timed-out SET may still run), and calls still in flight, which may have
        // granted by now. Stragglers that grant later are released by the task above.
        cleanup.nodes.retain(|i| {
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
        let Some(token_plan) = TokenPlan::new(&grants) else {
            return Err(no_quorum(resource, Step::Acquire, &round, n));
        };
        self.commit(resource, keys, &owner, &token_plan).await?;

        // Validity counts from before the first command was sent, and is recomputed after
        // the commit round, which also ate into the lease.
        let drift = quorum::drift(ttl, s.drift_factor);
        if quorum::validity(ttl, clock::since(start), drift, s.min_validity).is_none() {
            return Err(Error::NoValidity {
                resource: resource.to_owned(),
                elapsed: clock::since(start),
                ttl,
                drift,
            });
        }
        cleanup.done = true;
        let lease = Arc::new(Lease::new(LeaseParts {
            nodes: self.nodes().clone(),
            resource: resource.to_owned(),
            keys: Arc::clone(keys),
            owner: owner.clone(),
            token: FencingToken::new(token_plan.token),
            ttl,
            acquired_at: start,
            deadline: start + (ttl - drift),
            ledger: Arc::clone(&ledger),
        }));
        let watchdog = plan
            .watchdog
            .map(|w| WatchdogTask::start(&lease, w, self.watchdog_count()));
        Ok(Some(LockGuard::new(LeaseHandle::new(lease, watchdog))))
    }

    /// Makes the token durable on a majority before anyone sees it.
    ///
    /// Why this keeps tokens strictly increasing: once token T is stored (the counter at
    /// least T) on a majority M while we hold the lock there, any later acquisition needs
    /// a majority Q, and Q meets M in at least one node. On that node the later `SET NX`
    /// could only succeed after our key was gone, so its `INCR` runs on a counter of at
    /// least T and returns more than T. Without this round, a later holder whose majority
    /// missed the node that gave us T could get a smaller token (counters 10/5/5/5/5: we
    /// get 11 from {1,2,3}; the next holder of {3,4,5} would get 7). It assumes nodes keep
    /// acknowledged writes (AOF `appendfsync always`).
    async fn commit(
        &self,
        resource: &str,
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        plan: &TokenPlan,
    ) -> Result<(), Error> {
        let n = self.nodes().len();
        if plan.committed_without_round(n) {
            return Ok(());
        }
        let token = plan.token;
        let m = plan.to_raise.len();
        let mut calls = NodeCalls::with_capacity(m);
        for &i in &plan.to_raise {
            let (node, keys, owner) = (
                Arc::clone(&self.nodes()[i]),
                Arc::clone(keys),
                owner.clone(),
            );
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
        self.nodes().background().finish(pending);
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

    /// Acquire calls still in flight when the attempt was decided finish in the
    /// background. One that granted (or may have: a timed-out call can still run when a
    /// paused node resumes) after the owner ended is released again on its node,
    /// unless the owner's release there deleted the key, which proves the grant came
    /// first. A release sent now follows the grant on the same connection.
    fn finish_stragglers(
        &self,
        pending: NodeCalls<Option<u64>>,
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        ledger: &Arc<ReleaseLedger>,
    ) {
        if pending.is_empty() {
            return;
        }
        let (client, keys, owner, ledger) = (
            self.clone(),
            Arc::clone(keys),
            owner.clone(),
            Arc::clone(ledger),
        );
        self.nodes()
            .background()
            .spawn(pending.for_each_concurrent(None, move |(i, r)| {
                let (client, keys, owner, ledger) = (
                    client.clone(),
                    Arc::clone(&keys),
                    owner.clone(),
                    Arc::clone(&ledger),
                );
                async move {
                    if matches!(r, Ok(None)) || !ledger.has_ended() || ledger.deleted(i).await {
                        return;
                    }
                    let _ = client.nodes()[i]
                        .release(&keys, &owner, Announce::Quietly)
                        .await;
                }
            }));
    }
}

/// Releases an attempt's keys when the attempt ends without handing out a guard: on
/// failure, and when the caller drops the attempt's future mid-round (commands already
/// sent may still grant; the release follows them on the same connections).
struct Cleanup<'a> {
    client: &'a Client,
    keys: &'a Arc<Keys>,
    owner: &'a Arc<str>,
    ledger: &'a Arc<ReleaseLedger>,
    /// Nodes that may hold the key.
    nodes: Vec<usize>,
    /// A guard took over.
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
            self.client.nodes().release_in_background(
                &self.nodes,
                self.keys,
                self.owner,
                Announce::Quietly,
                Arc::clone(self.ledger),
            );
        }
    }
}

fn acquire_vote(r: &Result<Option<u64>, NodeError>) -> Vote {
    match r {
        Ok(Some(_)) => Vote::Yes,
        Ok(None) => Vote::No,
        Err(_) => Vote::Failed,
    }
}
