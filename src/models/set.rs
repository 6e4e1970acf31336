//! Sets of locks held all or nothing (`src/set/mod.rs`), as a model: clients whose sets
//! overlap in a cycle (A takes r0 and r1, B r1 and r2, C r2 and r0: every pair shares a
//! resource, as two clients taking overlapping sets in opposite orders do), each
//! granted by `grant_all.lua` on every node, decided at a majority with the client's own
//! [`Tally::decision`], its tokens planned per resource with [`TokenPlan`] and committed
//! per resource under [`commit_decided`].
//!
//! - **Grant** (`grant_all.lua`, atomic on its node): refused, touching nothing, when any
//!   key of the set is another owner's; otherwise every key becomes the client's and every
//!   counter is incremented while its key is ours, the counters returned in order.
//! - **Commit** (commit.lua per resource, one delivery per node for all of them): each
//!   counter the plan must raise is raised to the token while its key is still ours.
//! - **Release** (release.lua over every key, owner-checked), run at once on every node
//!   when a client gives up or lets go: a later owner-checked release only deletes the
//!   releaser's own keys, so running it early is the adversary's best case.
//!
//! Deliveries are atomic and in any order. Within a fault budget, a delivery's reply is
//! lost (the script ran; the client counts a failure) or lost and sent again on a new
//! connection (the script runs twice, the repeat's answer counts: a repeated grant finds
//! the keys its own and increments their counters again). Expiry, late calls and crashes
//! are the mutex model's business: each resource of a set is held exactly as that
//! model's lock.
//!
//! Properties: no resource held by two clients at once; each resource's tokens strictly
//! increase across its holders. Mutations: a grant that checks only the set's first key,
//! and no commit round.

use std::fmt;

use stateright::{Model, Property};

use super::{Delivery, add_faults};
use crate::core::quorum::{Decision, Tally, TokenPlan, Vote, commit_decided};

/// Which safety step a mutated model leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mutation {
    None,
    /// The grant checks only the set's first key (a loop that returns too early).
    FirstKeyOnly,
    /// The token is the largest counter seen, never committed.
    NoCommit,
}

#[derive(Debug, Clone)]
pub(super) struct SetModel {
    pub(super) nodes: usize,
    /// Each client's set, as resource indices in name order.
    pub(super) sets: Vec<Vec<u8>>,
    pub(super) resources: usize,
    /// Acquisitions per client.
    pub(super) attempts: u8,
    /// Lost and repeated replies in one run, together.
    pub(super) faults: u8,
    pub(super) mutation: Mutation,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    Idle,
    /// Grant round: each node's answer (`Some(None)`: refused), by node.
    Granting(Vec<Option<Option<Vec<u8>>>>),
    /// Commit round: each resource's plan, and each node's answer (`None` while not
    /// delivered; nodes with nothing to raise are not asked).
    Committing(Vec<Plan>, Vec<Option<bool>>),
    Holding(Vec<u8>),
}

/// A resource's [`TokenPlan`], compact: its token, how many granting nodes are at it,
/// and the nodes to raise (a bit per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Plan {
    token: u8,
    at_token: u8,
    to_raise: u8,
}

impl From<&TokenPlan> for Plan {
    fn from(p: &TokenPlan) -> Self {
        Self {
            token: u8::try_from(p.token).unwrap_or(u8::MAX),
            at_token: u8::try_from(p.at_token).unwrap_or(u8::MAX),
            to_raise: p.to_raise.iter().fold(0, |m, &i| m | (1 << i)),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    /// Per node, per resource: the key's owner.
    owner: Vec<Vec<Option<u8>>>,
    /// Per node, per resource: the fence counter.
    counter: Vec<Vec<u8>>,
    clients: Vec<(Phase, u8)>,
    /// Per resource, the last holder's token (a ghost, for the token property).
    last_token: Vec<u8>,
    /// A holder got a token not above its resource's previous one (a ghost).
    token_went_back: bool,
    /// Faults spent.
    faults: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Start(u8),
    Grant(u8, u8, Delivery),
    Commit(u8, u8, Delivery),
    Release(u8),
}

fn name(c: u8) -> char {
    char::from(b'A' + c)
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Start(c) => write!(f, "{} asks every node for its set", name(c)),
            Action::Grant(c, i, how) => write!(f, "{}'s grant runs on n{i}{how}", name(c)),
            Action::Commit(c, i, how) => write!(f, "{}'s commit runs on n{i}{how}", name(c)),
            Action::Release(c) => write!(f, "{} releases its set", name(c)),
        }
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (keys, counters)) in self.owner.iter().zip(&self.counter).enumerate() {
            let held: String = keys.iter().map(|o| o.map_or('-', name)).collect();
            write!(f, "n{i}[{held} {counters:?}] ")?;
        }
        for (c, (phase, _)) in self.clients.iter().enumerate() {
            let c = name(u8::try_from(c).unwrap_or(0));
            match phase {
                Phase::Idle => write!(f, "| {c} idle ")?,
                Phase::Granting(_) => write!(f, "| {c} granting ")?,
                Phase::Committing(p, _) => {
                    let t: Vec<u8> = p.iter().map(|p| p.token).collect();
                    write!(f, "| {c} committing {t:?} ")?;
                }
                Phase::Holding(t) => write!(f, "| {c} HOLDS tokens {t:?} ")?,
            }
        }
        Ok(())
    }
}

impl SetModel {
    /// grant_all.lua on node `i` for client `c`.
    fn grant(&self, s: &mut State, c: u8, i: usize) -> Option<Vec<u8>> {
        let set = &self.sets[usize::from(c)];
        let checked = match self.mutation {
            Mutation::FirstKeyOnly => &set[..1],
            _ => &set[..],
        };
        let node = &mut s.owner[i];
        if checked
            .iter()
            .any(|&r| node[usize::from(r)].is_some_and(|o| o != c))
        {
            return None;
        }
        let mut counters = Vec::with_capacity(set.len());
        for &r in set {
            let r = usize::from(r);
            if node[r].is_none() {
                node[r] = Some(c);
            }
            if node[r] == Some(c) {
                s.counter[i][r] = s.counter[i][r].saturating_add(1);
            }
            counters.push(s.counter[i][r]);
        }
        Some(counters)
    }

    /// Deletes `c`'s keys on every node.
    fn release(s: &mut State, c: u8) {
        for node in &mut s.owner {
            for key in node.iter_mut() {
                if *key == Some(c) {
                    *key = None;
                }
            }
        }
    }

    /// Each resource's commit plan from the grants so far (by set position).
    fn plans(&self, c: u8, answers: &[Option<Option<Vec<u8>>>]) -> Vec<Plan> {
        (0..self.sets[usize::from(c)].len())
            .filter_map(|k| {
                let grants: Vec<(usize, u64)> = answers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| a.as_ref()?.as_ref().map(|v| (i, u64::from(v[k]))))
                    .collect();
                TokenPlan::new(&grants).map(|p| Plan::from(&p))
            })
            .collect()
    }

    /// The commit's outcome so far: every resource's [`commit_decided`] over the nodes
    /// it must raise.
    fn commit_outcome(&self, plans: &[Plan], answers: &[Option<bool>]) -> Option<bool> {
        let mut all = true;
        for plan in plans {
            let raised = (0..self.nodes).filter(|i| plan.to_raise & (1 << i) != 0);
            let mut round = Tally::new(raised.clone().count());
            for i in raised {
                match answers[i] {
                    Some(true) => round.record(Vote::Yes),
                    Some(false) => round.record(Vote::No),
                    None => {}
                }
            }
            match commit_decided(self.nodes, usize::from(plan.at_token), &round) {
                Some(true) => {}
                Some(false) => return Some(false),
                None => all = false,
            }
        }
        all.then_some(true)
    }

    fn hold(&self, s: &mut State, c: u8, plans: &[Plan]) {
        let tokens: Vec<u8> = plans.iter().map(|p| p.token).collect();
        for (&r, &t) in self.sets[usize::from(c)].iter().zip(&tokens) {
            let r = usize::from(r);
            if t <= s.last_token[r] {
                s.token_went_back = true;
            }
            s.last_token[r] = t;
        }
        s.clients[usize::from(c)].0 = Phase::Holding(tokens);
    }

    fn give_up(s: &mut State, c: u8) {
        Self::release(s, c);
        s.clients[usize::from(c)].0 = Phase::Idle;
    }
}

impl Model for SetModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            owner: vec![vec![None; self.resources]; self.nodes],
            counter: vec![vec![0; self.resources]; self.nodes],
            clients: vec![(Phase::Idle, 0); self.sets.len()],
            last_token: vec![0; self.resources],
            token_went_back: false,
            faults: 0,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for (c, (phase, attempts)) in s.clients.iter().enumerate() {
            let c = u8::try_from(c).unwrap_or(u8::MAX);
            let undelivered = |open: Vec<bool>, make: fn(u8, u8) -> Action| {
                open.into_iter()
                    .enumerate()
                    .filter(|&(_, open)| open)
                    .map(move |(i, _)| make(c, u8::try_from(i).unwrap_or(0)))
            };
            match phase {
                Phase::Idle if *attempts < self.attempts => actions.push(Action::Start(c)),
                Phase::Idle => {}
                Phase::Granting(answers) => actions.extend(undelivered(
                    answers.iter().map(Option::is_none).collect(),
                    |c, i| Action::Grant(c, i, Delivery::Answered),
                )),
                Phase::Committing(_, answers) => actions.extend(undelivered(
                    answers.iter().map(Option::is_none).collect(),
                    |c, i| Action::Commit(c, i, Delivery::Answered),
                )),
                Phase::Holding(_) => actions.push(Action::Release(c)),
            }
        }
        if s.faults < self.faults {
            add_faults(actions, |a, how| match a {
                Action::Grant(c, i, _) => Some(Action::Grant(c, i, how)),
                Action::Commit(c, i, _) => Some(Action::Commit(c, i, how)),
                _ => None,
            });
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Start(c) => {
                let cl = &mut s.clients[usize::from(c)];
                cl.1 += 1;
                cl.0 = Phase::Granting(vec![None; self.nodes]);
            }
            Action::Grant(c, i, how) => {
                s.faults += u8::from(how.is_fault());
                let mut granted = self.grant(&mut s, c, usize::from(i));
                if how == Delivery::Repeated {
                    granted = self.grant(&mut s, c, usize::from(i));
                }
                let Phase::Granting(mut answers) = s.clients[usize::from(c)].0.clone() else {
                    return None;
                };
                // A lost reply counts as a failure: like a refusal, no grant to plan with.
                answers[usize::from(i)] = Some(granted.filter(|_| how != Delivery::ReplyLost));
                let mut tally = Tally::new(self.nodes);
                for a in answers.iter().flatten() {
                    tally.record(if a.is_some() { Vote::Yes } else { Vote::No });
                }
                match tally.decision() {
                    Decision::Pending => s.clients[usize::from(c)].0 = Phase::Granting(answers),
                    Decision::Won => {
                        let plans = self.plans(c, &answers);
                        // Only nodes with a counter to raise are asked.
                        let raise = plans.iter().fold(0, |m, p| m | p.to_raise);
                        let asked: Vec<Option<bool>> = (0..self.nodes)
                            .map(|i| (raise & (1 << i) == 0).then_some(false))
                            .collect();
                        if self.mutation == Mutation::NoCommit
                            || self.commit_outcome(&plans, &asked) == Some(true)
                        {
                            self.hold(&mut s, c, &plans);
                        } else {
                            s.clients[usize::from(c)].0 = Phase::Committing(plans, asked);
                        }
                    }
                    Decision::Refused | Decision::Failed => Self::give_up(&mut s, c),
                }
            }
            Action::Commit(c, i, how) => {
                let i = usize::from(i);
                let Phase::Committing(plans, mut answers) = s.clients[usize::from(c)].0.clone()
                else {
                    return None;
                };
                s.faults += u8::from(how.is_fault());
                // commit.lua for each resource this node must raise: while the key is ours.
                let mut ours = true;
                for (&r, p) in self.sets[usize::from(c)].iter().zip(&plans) {
                    let r = usize::from(r);
                    if p.to_raise & (1 << i) == 0 {
                        continue;
                    }
                    if s.owner[i][r] == Some(c) {
                        s.counter[i][r] = s.counter[i][r].max(p.token);
                    } else {
                        ours = false;
                    }
                }
                // Run twice or once, the same: each counter is raised to its token.
                answers[i] = Some(ours && how != Delivery::ReplyLost);
                match self.commit_outcome(&plans, &answers) {
                    Some(true) => self.hold(&mut s, c, &plans),
                    Some(false) => Self::give_up(&mut s, c),
                    None => s.clients[usize::from(c)].0 = Phase::Committing(plans, answers),
                }
            }
            Action::Release(c) => Self::give_up(&mut s, c),
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no resource held twice", |m: &Self, s: &State| {
                (0..m.resources).all(|r| {
                    let r = u8::try_from(r).unwrap_or(u8::MAX);
                    s.clients
                        .iter()
                        .enumerate()
                        .filter(|(c, (p, _))| {
                            matches!(p, Phase::Holding(_)) && m.sets[*c].contains(&r)
                        })
                        .count()
                        <= 1
                })
            }),
            Property::always("tokens increase per resource", |_: &Self, s: &State| {
                !s.token_went_back
            }),
            Property::sometimes("a shared resource held in turn", |_: &Self, s: &State| {
                s.last_token.iter().any(|&t| t >= 2)
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_caught, assert_safe};
    use super::*;

    /// Three clients whose sets overlap in a cycle, on `nodes` nodes.
    fn model(nodes: usize, mutation: Mutation) -> SetModel {
        SetModel {
            nodes,
            sets: vec![vec![0, 1], vec![1, 2], vec![0, 2]],
            resources: 3,
            attempts: 2,
            faults: 0,
            mutation,
        }
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn sets_are_safe_on_three_nodes() {
        assert_safe(model(3, Mutation::None), usize::MAX);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn sets_are_safe_on_three_nodes_with_a_lost_or_repeated_reply() {
        let mut m = model(3, Mutation::None);
        m.sets.truncate(2);
        m.faults = 1;
        assert_safe(m, usize::MAX);
    }

    /// Two of the clients (A: r0 and r1, B: r1 and r2), once each, on five nodes.
    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn sets_are_safe_on_five_nodes() {
        let mut m = model(5, Mutation::None);
        m.sets.truncate(2);
        assert_safe(m, usize::MAX);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_grant_that_checks_one_key_lets_two_hold_a_resource() {
        let trace = assert_caught(
            model(3, Mutation::FirstKeyOnly),
            usize::MAX,
            Clone::clone,
            "no resource held twice",
        );
        let last = trace
            .lines()
            .rev()
            .find(|l| l.contains("HOLDS"))
            .unwrap_or_default();
        assert!(last.matches("HOLDS").count() >= 2, "{trace}");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn without_the_commit_a_resource_token_goes_back() {
        assert_caught(
            model(3, Mutation::NoCommit),
            usize::MAX,
            Clone::clone,
            "tokens increase per resource",
        );
    }
}
