//! The quorum machinery every primitive shares: the pure arithmetic ([`quorum`]), one
//! round of calls decided early ([`round`]), the end of an owner's keys ([`ReleaseLedger`]),
//! the background work left behind ([`Background`]), release announcements
//! ([`wakeup`]), and [`Nodes`], the handle a lease holds.
//!
//! Below it is `node` (one connection, typed calls); above it `lease` and the primitives.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

mod background;
mod ledger;
pub(crate) mod quorum;
mod round;
pub(crate) mod wakeup;

pub(crate) use background::Background;
pub(crate) use ledger::ReleaseLedger;
pub(crate) use round::{NodeCalls, decided, no_quorum, run_round};

use crate::lease::renewer::Renewer;
use crate::node::{Announce, Node, Release};
use crate::observe::Counters;
use crate::scripts::Keys;

/// A client's nodes, the drift their clocks are allowed, and the background work on
/// them: everything a held lease needs of its client. Cheap to clone. Derefs to the
/// nodes, in the client's order.
#[derive(Clone)]
pub(crate) struct Nodes(Arc<NodesInner>);

struct NodesInner {
    nodes: Vec<Arc<Node>>,
    drift_factor: f64,
    background: Arc<Background>,
    counters: Counters,
    renewer: Arc<Renewer>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(|n| n.name()).collect();
        f.debug_struct("Nodes")
            .field("nodes", &names)
            .field("drift_factor", &self.0.drift_factor)
            .field("background", &self.0.background.running())
            .finish()
    }
}

impl Deref for Nodes {
    type Target = [Arc<Node>];

    fn deref(&self) -> &[Arc<Node>] {
        &self.0.nodes
    }
}

impl Nodes {
    pub(crate) fn new(nodes: Vec<Arc<Node>>, drift_factor: f64) -> Self {
        Self(Arc::new(NodesInner {
            nodes,
            drift_factor,
            background: Arc::default(),
            counters: Counters::default(),
            renewer: Arc::default(),
        }))
    }

    /// Nodes that must agree: `N / 2 + 1`.
    pub(crate) fn quorum(&self) -> usize {
        quorum::quorum(self.len())
    }

    /// The clock-drift allowance for a lease of `ttl`.
    pub(crate) fn drift(&self, ttl: Duration) -> Duration {
        quorum::drift(ttl, self.0.drift_factor)
    }

    pub(crate) fn background(&self) -> &Arc<Background> {
        &self.0.background
    }

    /// The batched watchdog of the client's leases.
    pub(crate) fn renewer(&self) -> &Arc<Renewer> {
        &self.0.renewer
    }

    /// What the client counts ([`Stats`](crate::Stats)).
    pub(crate) fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// Releases `owner` on the given nodes without waiting for the answers.
    pub(crate) fn release_in_background(
        &self,
        nodes: &[usize],
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        announce: Announce,
        ledger: Arc<ReleaseLedger>,
    ) {
        let calls = self.release_calls(nodes.iter().copied(), keys, owner, announce, &ledger);
        self.0.background.finish(calls);
    }

    /// Releases `owner` on the given nodes in the background, recorded nowhere: for keys
    /// that were never a lease's (a semaphore's slots not won, a writer's marker).
    pub(crate) fn release_untracked(
        &self,
        nodes: &[usize],
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        announce: Announce,
    ) {
        if nodes.is_empty() {
            return;
        }
        let mut calls = NodeCalls::with_capacity(nodes.len());
        for &i in nodes {
            let (node, keys, owner) = (
                Arc::clone(&self.0.nodes[i]),
                Arc::clone(keys),
                owner.clone(),
            );
            calls.push(
                i,
                async move { node.release(&keys, &owner, announce).await },
            );
        }
        self.0.background.finish(calls);
    }

    /// One release of `owner` per given node, each recorded in `ledger`.
    pub(crate) fn release_calls(
        &self,
        nodes: impl ExactSizeIterator<Item = usize>,
        keys: &Arc<Keys>,
        owner: &Arc<str>,
        announce: Announce,
        ledger: &Arc<ReleaseLedger>,
    ) -> NodeCalls<Release> {
        let mut calls = NodeCalls::with_capacity(nodes.len());
        for i in nodes {
            let (node, keys, owner, ledger) = (
                Arc::clone(&self.0.nodes[i]),
                Arc::clone(keys),
                owner.clone(),
                Arc::clone(ledger),
            );
            calls.push(i, async move {
                ledger.release(&node, i, &keys, &owner, announce).await
            });
        }
        calls
    }
}
