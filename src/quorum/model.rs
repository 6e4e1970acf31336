//! Model-based test of the fencing-token protocol: simulated in-memory nodes that never
//! lose data, random reachability for each round, random down nodes, lingering keys.
//! The protocol steps use the same [`Tally`] and [`TokenPlan`] as the real client.

use super::{Decision, Tally, TokenPlan, Vote, quorum};
use proptest::prelude::*;

#[derive(Debug, Clone, Default)]
struct SimNode {
    up: bool,
    lock: Option<u64>,
    fence: u64,
}

#[derive(Debug)]
struct Sim {
    nodes: Vec<SimNode>,
    next_owner: u64,
    /// Tokens handed out, in order.
    issued: Vec<u64>,
    /// Whether the commit round runs (off only to show the trap it closes).
    commit_round: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// One acquisition attempt; each mask says which nodes a round reaches.
    Acquire {
        acquire: Vec<bool>,
        commit: Vec<bool>,
    },
    /// Release the most recent owner's keys on the nodes reached.
    Release(Vec<bool>),
    /// Every lease runs out.
    Expire,
    Down(usize),
    Up(usize),
}

impl Sim {
    fn new(fences: &[u64], commit_round: bool) -> Self {
        let nodes = fences
            .iter()
            .map(|&fence| SimNode {
                up: true,
                lock: None,
                fence,
            })
            .collect();
        Self {
            nodes,
            next_owner: 0,
            issued: Vec::new(),
            commit_round,
        }
    }

    fn reach(&self, mask: &[bool], i: usize) -> bool {
        self.nodes[i].up && mask.get(i).copied().unwrap_or(false)
    }

    /// The protocol of DESIGN.md section 2, steps 1, 2, 4 and 5, over the simulated nodes.
    fn acquire(&mut self, acquire: &[bool], commit: &[bool]) -> Option<u64> {
        self.next_owner += 1;
        let owner = self.next_owner;
        let n = self.nodes.len();
        let mut tally = Tally::new(n);
        let mut grants = Vec::new();
        for i in 0..n {
            if !self.reach(acquire, i) {
                tally.record(Vote::Failed);
                continue;
            }
            // `SET NX` then `INCR`, which runs whatever the `SET` did.
            let node = &mut self.nodes[i];
            node.fence += 1;
            if node.lock.is_none() {
                node.lock = Some(owner);
                grants.push((i, node.fence));
                tally.record(Vote::Yes);
            } else {
                tally.record(Vote::No);
            }
        }
        let won = tally.decision() == Decision::Won;
        let token = won.then(|| self.commit(owner, &grants, commit)).flatten();
        match token {
            Some(t) => {
                self.issued.push(t);
                Some(t)
            }
            None => {
                // A failed attempt releases where it can; the rest lingers until expiry.
                for i in 0..n {
                    if self.reach(acquire, i) && self.nodes[i].lock == Some(owner) {
                        self.nodes[i].lock = None;
                    }
                }
                None
            }
        }
    }

    fn commit(&mut self, owner: u64, grants: &[(usize, u64)], mask: &[bool]) -> Option<u64> {
        let plan = TokenPlan::new(grants)?;
        let n = self.nodes.len();
        if !self.commit_round || plan.committed_without_round(n) {
            return Some(plan.token);
        }
        let mut committed = plan.at_token;
        for &i in &plan.to_raise {
            if !self.reach(mask, i) {
                continue;
            }
            let node = &mut self.nodes[i];
            if node.lock == Some(owner) {
                node.fence = node.fence.max(plan.token);
                if node.fence >= plan.token {
                    committed += 1;
                }
            }
        }
        (committed >= quorum(n)).then_some(plan.token)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Acquire { acquire, commit } => {
                self.acquire(acquire, commit);
            }
            Op::Release(mask) => {
                let owner = self.next_owner;
                for i in 0..self.nodes.len() {
                    if self.reach(mask, i) && self.nodes[i].lock == Some(owner) {
                        self.nodes[i].lock = None;
                    }
                }
            }
            Op::Expire => self.nodes.iter_mut().for_each(|n| n.lock = None),
            Op::Down(i) | Op::Up(i) => {
                let n = self.nodes.len();
                self.nodes[*i % n].up = matches!(op, Op::Up(_));
            }
        }
    }

    fn strictly_increasing(&self) -> Result<(), String> {
        match self.issued.windows(2).find(|w| w[1] <= w[0]) {
            Some(w) => Err(format!("token {} handed out after {}", w[1], w[0])),
            None => Ok(()),
        }
    }
}

fn ops(n: usize) -> impl Strategy<Value = Vec<Op>> {
    // Reachability is usually good, so that acquisitions often succeed on varied quorums.
    let mask = move || proptest::collection::vec(proptest::bool::weighted(0.75), n);
    let op = prop_oneof![
        6 => (mask(), mask()).prop_map(|(acquire, commit)| Op::Acquire { acquire, commit }),
        3 => mask().prop_map(Op::Release),
        3 => Just(Op::Expire),
        1 => (0..n).prop_map(Op::Down),
        2 => (0..n).prop_map(Op::Up),
    ];
    proptest::collection::vec(op, 1..80)
}

fn scenario() -> impl Strategy<Value = (Vec<u64>, Vec<Op>)> {
    (1usize..=7).prop_flat_map(|n| (proptest::collection::vec(0u64..12, n), ops(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// With the commit round, tokens handed out to successive holders strictly increase,
    /// whatever the starting counters, quorums, down nodes and lingering keys.
    #[test]
    fn tokens_strictly_increase((fences, ops) in scenario()) {
        let mut sim = Sim::new(&fences, true);
        for op in &ops {
            sim.apply(op);
        }
        sim.strictly_increasing().map_err(TestCaseError::fail)?;
    }
}

fn all(n: usize) -> Vec<bool> {
    vec![true; n]
}

fn only(n: usize, nodes: &[usize]) -> Vec<bool> {
    (0..n).map(|i| nodes.contains(&i)).collect()
}

/// The counter trap (counters 10/5/5/5/5; A gets nodes {1,2,3}, then B gets {3,4,5}):
/// with the commit round B's token is above A's.
#[test]
fn counter_trap_is_closed_by_the_commit_round() {
    let mut sim = Sim::new(&[10, 5, 5, 5, 5], true);
    let a = sim.acquire(&only(5, &[0, 1, 2]), &all(5)).unwrap();
    sim.apply(&Op::Expire);
    let b = sim.acquire(&only(5, &[2, 3, 4]), &all(5)).unwrap();
    assert_eq!(a, 11);
    assert!(b > a, "B got {b} after A's {a}");
}

/// The same trap without the commit round hands out a smaller token: the property above
/// is able to fail, and it is the commit round that makes it hold.
#[test]
fn without_the_commit_round_the_trap_goes_backwards() {
    let mut sim = Sim::new(&[10, 5, 5, 5, 5], false);
    sim.acquire(&only(5, &[0, 1, 2]), &all(5)).unwrap();
    sim.apply(&Op::Expire);
    sim.acquire(&only(5, &[2, 3, 4]), &all(5)).unwrap();
    assert!(sim.strictly_increasing().is_err(), "{:?}", sim.issued);
}

/// A commit round that reaches too few nodes fails the attempt instead of handing out an
/// uncommitted token.
#[test]
fn commit_below_quorum_fails_the_attempt() {
    let mut sim = Sim::new(&[10, 5, 5, 5, 5], true);
    // Granted on {0, 1, 2}: token 11 is only on node 0; the commit round reaches nobody.
    let got = sim.acquire(&only(5, &[0, 1, 2]), &only(5, &[]));
    assert_eq!(got, None);
    assert!(sim.nodes.iter().all(|n| n.lock.is_none()));
}
