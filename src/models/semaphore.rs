//! Counting semaphores (K permits) over a majority quorum, as a model: the naive
//! construction that some libraries ship, and the slot construction redfence builds on.
//!
//! - **Per-node count.** Each node admits a client while it has fewer than K holders; a
//!   client holds a permit once a majority admitted it. This is unsafe for K ≥ 2: a
//!   majority rules out a conflict between two holders, not among K + 1. With N = 5 and
//!   K = 2, holders admitted on {1,2,3}, {1,4,5} and {2,3,4} leave every node at two
//!   holders while three hold a permit. The checker must find such a schedule.
//! - **Slots.** A permit is a mutex on one of K slots. In one round each node grants the
//!   client the first free slot in the client's own order; the client holds slot `s` once a
//!   majority granted `s`, and releases the rest. Each slot is then a mutex, decided at a
//!   majority like the lock (whose model covers expiry, lost replies and crashes), so no
//!   two holders share a slot and there are at most K holders.
//!
//! Deliveries are atomic and in any order; releases run at once on every node (a later
//! owner-checked release only deletes the releaser's own key, so running it early is the
//! adversary's best case). Time and faults are the mutex model's business.

use std::fmt;

use stateright::{Model, Property};

use crate::core::quorum::{Decision, Tally, Vote, split_decision};

/// How permits are counted on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Construction {
    /// Each node admits up to K holders (unsafe).
    PerNodeCount,
    /// K slot-mutexes (redfence).
    Slots,
}

#[derive(Debug, Clone)]
pub(super) struct SemaphoreModel {
    pub(super) nodes: usize,
    pub(super) clients: usize,
    pub(super) permits: usize,
    /// Acquisitions per client.
    pub(super) attempts: u8,
    pub(super) construction: Construction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Answer {
    /// Per-node count: admitted, or full.
    Admitted,
    Full,
    /// Slots: the slot granted, or none free.
    Slot(u8),
    NoSlot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    Idle,
    Trying,
    /// Holding a permit (for slots, which one).
    Holding(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Client {
    phase: Phase,
    attempt: u8,
    /// This round's answers, by node (`None`: not delivered yet).
    answers: Vec<Option<Answer>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    /// Per node, per slot (or per admitted place), the client holding it.
    nodes: Vec<Vec<Option<u8>>>,
    clients: Vec<Client>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Start(u8),
    Deliver(u8, u8),
    Release(u8),
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |c: &u8| char::from(b'A' + c);
        match self {
            Action::Start(c) => write!(f, "{} asks every node for a permit", name(c)),
            Action::Deliver(c, i) => write!(f, "{}'s request runs on n{i}", name(c)),
            Action::Release(c) => write!(f, "{} releases", name(c)),
        }
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |c: u8| char::from(b'A' + c);
        for (i, n) in self.nodes.iter().enumerate() {
            let held: String = n.iter().map(|h| h.map_or('-', name)).collect();
            write!(f, "n{i}[{held}] ")?;
        }
        for (c, cl) in self.clients.iter().enumerate() {
            let c = name(u8::try_from(c).unwrap_or(0));
            match cl.phase {
                Phase::Idle => write!(f, "| {c} idle ")?,
                Phase::Trying => write!(f, "| {c} trying ")?,
                Phase::Holding(s) => write!(f, "| {c} HOLDS permit {s} ")?,
            }
        }
        Ok(())
    }
}

impl SemaphoreModel {
    /// Slot order of client `c`: starting at its own offset, so that uncontended clients
    /// spread over the slots.
    fn order(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.permits).map(move |j| (c + j) % self.permits)
    }

    /// What node `i` does with client `c`'s request.
    fn run(&self, s: &mut State, c: usize, i: usize) -> Answer {
        let me = Some(u8::try_from(c).unwrap_or(u8::MAX));
        let node = &mut s.nodes[i];
        let free = |node: &[Option<u8>], k: usize| node[k].is_none();
        match self.construction {
            Construction::PerNodeCount => match (0..self.permits).find(|&k| free(node, k)) {
                Some(k) => {
                    node[k] = me;
                    Answer::Admitted
                }
                None => Answer::Full,
            },
            Construction::Slots => match self.order(c).find(|&k| free(node, k)) {
                Some(k) => {
                    node[k] = me;
                    Answer::Slot(u8::try_from(k).unwrap_or(u8::MAX))
                }
                None => Answer::NoSlot,
            },
        }
    }

    fn release(s: &mut State, c: usize) {
        let me = Some(u8::try_from(c).unwrap_or(u8::MAX));
        for node in &mut s.nodes {
            for place in node.iter_mut() {
                if *place == me {
                    *place = None;
                }
            }
        }
    }

    /// The client's decision once the answers so far settle it: the permit it holds,
    /// `Some(None)` when it must give up, `None` while undecided.
    fn decide(&self, cl: &Client) -> Option<Option<u8>> {
        let n = self.nodes;
        match self.construction {
            Construction::PerNodeCount => {
                let mut tally = Tally::new(n);
                for a in cl.answers.iter().flatten() {
                    tally.record(if *a == Answer::Admitted {
                        Vote::Yes
                    } else {
                        Vote::No
                    });
                }
                match tally.decision() {
                    Decision::Won => Some(Some(0)),
                    Decision::Pending => None,
                    Decision::Refused | Decision::Failed => Some(None),
                }
            }
            Construction::Slots => {
                // The client's own rule: one tally per slot.
                let mut granted = vec![0; self.permits];
                let mut refused = 0;
                for a in cl.answers.iter().flatten() {
                    match a {
                        Answer::Slot(k) => granted[usize::from(*k)] += 1,
                        _ => refused += 1,
                    }
                }
                match split_decision(n, granted.iter().copied(), refused, 0) {
                    (Decision::Won, Some(k)) => Some(Some(u8::try_from(k).unwrap_or(u8::MAX))),
                    (Decision::Pending, _) => None,
                    _ => Some(None),
                }
            }
        }
    }
}

impl Model for SemaphoreModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            nodes: vec![vec![None; self.permits]; self.nodes],
            clients: vec![
                Client {
                    phase: Phase::Idle,
                    attempt: 0,
                    answers: vec![None; self.nodes],
                };
                self.clients
            ],
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for (c, cl) in s.clients.iter().enumerate() {
            let c8 = u8::try_from(c).unwrap_or(u8::MAX);
            match cl.phase {
                Phase::Idle if cl.attempt < self.attempts => actions.push(Action::Start(c8)),
                Phase::Trying => {
                    for (i, a) in cl.answers.iter().enumerate() {
                        if a.is_none() {
                            actions.push(Action::Deliver(c8, u8::try_from(i).unwrap_or(0)));
                        }
                    }
                }
                Phase::Holding(_) => actions.push(Action::Release(c8)),
                Phase::Idle => {}
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Start(c) => {
                let cl = &mut s.clients[usize::from(c)];
                cl.attempt += 1;
                cl.phase = Phase::Trying;
                cl.answers = vec![None; self.nodes];
            }
            Action::Deliver(c, i) => {
                let (c, i) = (usize::from(c), usize::from(i));
                let a = self.run(&mut s, c, i);
                s.clients[c].answers[i] = Some(a);
                match self.decide(&s.clients[c]) {
                    None => {}
                    Some(Some(k)) => {
                        // Keep the won slot on its nodes, release the others' grants.
                        let me = Some(u8::try_from(c).unwrap_or(u8::MAX));
                        for node in &mut s.nodes {
                            for (j, place) in node.iter_mut().enumerate() {
                                let keep = self.construction == Construction::PerNodeCount
                                    || j == usize::from(k);
                                if *place == me && !keep {
                                    *place = None;
                                }
                            }
                        }
                        s.clients[c].phase = Phase::Holding(k);
                    }
                    Some(None) => {
                        Self::release(&mut s, c);
                        s.clients[c].phase = Phase::Idle;
                    }
                }
            }
            Action::Release(c) => {
                Self::release(&mut s, usize::from(c));
                s.clients[usize::from(c)].phase = Phase::Idle;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most K holders", |m: &Self, s: &State| {
                let holders = s
                    .clients
                    .iter()
                    .filter(|c| matches!(c.phase, Phase::Holding(_)))
                    .count();
                holders <= m.permits
            }),
            Property::always("no slot held twice", |m: &Self, s: &State| {
                m.construction == Construction::PerNodeCount
                    || (0..m.permits).all(|k| {
                        let k = u8::try_from(k).unwrap_or(u8::MAX);
                        s.clients
                            .iter()
                            .filter(|c| c.phase == Phase::Holding(k))
                            .count()
                            <= 1
                    })
            }),
            Property::sometimes("K holders at once", |m: &Self, s: &State| {
                s.clients
                    .iter()
                    .filter(|c| matches!(c.phase, Phase::Holding(_)))
                    .count()
                    == m.permits
            }),
        ]
    }
}

/// The per-node count does not tell its places apart: one state per set of holders.
fn places_unordered(s: &State) -> State {
    let mut r = s.clone();
    for node in &mut r.nodes {
        node.sort_unstable();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::super::{assert_caught, assert_safe, random_walks};
    use super::*;

    fn model(construction: Construction) -> SemaphoreModel {
        SemaphoreModel {
            nodes: 5,
            clients: 3,
            permits: 2,
            attempts: 1,
            construction,
        }
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_per_node_count_admits_more_than_k() {
        let trace = assert_caught(
            model(Construction::PerNodeCount),
            usize::MAX,
            places_unordered,
            "at most K holders",
        );
        let last = trace.lines().last().unwrap_or_default();
        assert_eq!(last.matches("HOLDS").count(), 3, "{trace}");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn slots_never_admit_more_than_k() {
        assert_safe(model(Construction::Slots), usize::MAX);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn slots_on_three_nodes_and_three_permits() {
        let mut m = model(Construction::Slots);
        m.nodes = 3;
        m.permits = 3;
        m.clients = 4;
        m.attempts = 1;
        assert_safe(m, usize::MAX);
    }

    /// A system too large to search whole (5 nodes, 3 permits, 5 clients taking 3 permits
    /// each): 10,000 random schedules of the slot construction, none over-admitting; the
    /// same walks find the per-node count's over-admission, so they can fail.
    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn random_schedules_of_a_larger_system() {
        let larger = |construction| SemaphoreModel {
            nodes: 5,
            clients: 5,
            permits: 3,
            attempts: 3,
            construction,
        };
        let started = std::time::Instant::now();
        let walks = random_walks(&larger(Construction::Slots), 10_000, 200, 13)
            .unwrap_or_else(|trace| panic!("{trace}"));
        println!(
            "{} random schedules ({} steps) of the slot construction in {:.1?}",
            walks.walks,
            walks.steps,
            started.elapsed()
        );
        let naive = random_walks(&larger(Construction::PerNodeCount), 10_000, 200, 13);
        let Err(trace) = naive else {
            panic!("10,000 random schedules missed the per-node count's over-admission");
        };
        assert!(trace.contains("at most K holders"), "{trace}");
        println!("{}", trace.lines().next().unwrap_or_default());
    }
}
