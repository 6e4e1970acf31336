//! Exhaustive model checks of the quorum protocols, with the `stateright` model checker.
//!
//! The property tests beside the code sample random histories; these models visit every
//! interleaving of a small system up to a stated depth: every order in which requests
//! reach nodes, replies come back or are lost, calls time out and land later, nodes crash
//! and restart, keys expire and time passes. Each model drives the client's own pure
//! decision code ([`Tally::decision`](crate::core::quorum::Tally::decision),
//! [`TokenPlan`](crate::core::quorum::TokenPlan),
//! [`commit_decided`](crate::core::quorum::commit_decided) and the validity rule), so a
//! change to those is checked here too; only the nodes' scripts are restated, a few lines
//! each, next to the model that uses them.
//!
//! Every model has switches that remove one safety step (a *mutation*), and a test that
//! the checker then finds a counterexample, printed step by step: a model that cannot
//! fail proves nothing.
//!
//! Time is discrete: one tick is one second, a lease lasts a few ticks, and a key expires
//! on its node at the tick its `PX` runs out. A client counts validity with the library's
//! own rule (`ttl - elapsed - drift`, from the start of the round). The drift allowance
//! is far below one tick, so the models check that validity ends no later than the keys
//! (with no margin to spare), not the size of the allowance: a node clock running faster
//! than the allowance, or a node that loses acknowledged writes while the persistence
//! switch is on, is outside what they cover.
//!
//! Safety checks search breadth first, so a depth bound means "every schedule of that
//! many steps"; counterexample searches go depth first (faster, with readable traces).
//! All of them are `#[ignore]`d in debug runs and run in release by `scripts/models.sh`
//! (part of `scripts/test.sh`).

use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, Model, Path};

use crate::client::DEFAULT_DRIFT_FACTOR;
use crate::core::quorum;

mod election;
mod mutex;
mod semaphore;
mod set;

/// One tick of model time.
const TICK: Duration = Duration::from_secs(1);

/// Whether a lease of `ttl` ticks, counted from a round that started at tick `start`, is
/// still valid at tick `now`, by the client's own rule (drift allowance included).
fn valid(ttl: u8, start: u8, now: u8) -> bool {
    let ttl = TICK * u32::from(ttl);
    let drift = quorum::drift(ttl, DEFAULT_DRIFT_FACTOR);
    let elapsed = TICK * u32::from(now.saturating_sub(start));
    quorum::validity(ttl, elapsed, drift, Duration::ZERO).is_some()
}

/// How a request reaches its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Delivery {
    /// Runs, and its reply comes back.
    Answered,
    /// Runs, and its reply is lost with the connection: the client counts a failure.
    ReplyLost,
    /// Runs, its reply is lost, the client sends it again on a new connection (as it does
    /// for every call), and the repeat's reply is the one counted.
    Repeated,
}

/// How a trace tells a delivery: nothing when answered.
impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delivery::Answered => Ok(()),
            Delivery::ReplyLost => write!(f, ", reply lost"),
            Delivery::Repeated => write!(f, ", reply lost, sent again and runs again"),
        }
    }
}

/// Adds, for every delivery among `actions`, its faulty variants (reply lost; lost and
/// repeated): `faulty` rebuilds an action with another delivery, `None` for the rest.
fn add_faults<A: Copy>(actions: &mut Vec<A>, faulty: impl Fn(A, Delivery) -> Option<A>) {
    for k in 0..actions.len() {
        for how in [Delivery::ReplyLost, Delivery::Repeated] {
            if let Some(a) = faulty(actions[k], how) {
                actions.push(a);
            }
        }
    }
}

impl Delivery {
    const ALL: [Delivery; 3] = [Delivery::Answered, Delivery::ReplyLost, Delivery::Repeated];

    /// Whether this delivery spends one of the run's fault budget.
    fn is_fault(self) -> bool {
        self != Delivery::Answered
    }
}

/// What one exhaustive run found.
struct Report<M: Model> {
    model: M,
    states: usize,
    depth: usize,
    elapsed: Duration,
    discoveries: HashMap<&'static str, Path<M::State, M::Action>>,
}

impl<M: Model> Debug for Report<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} states to depth {} in {:.2?}",
            self.states, self.depth, self.elapsed
        )
    }
}

/// How to search.
enum Search<S> {
    /// Breadth first: every state reachable in fewer than `max_depth` steps is visited
    /// and checked, each at its shortest distance. For safety checks.
    Breadth,
    /// Depth first, one state per class the function maps to one representative. Finds
    /// counterexamples fast and keeps the trace's own states; but with a depth bound it
    /// can skip a state first met near the bound, so it only serves searches for a
    /// counterexample (a found one is real).
    Depth(fn(&S) -> S),
}

/// Visits the states reachable in fewer than `max_depth` steps (stateright counts the
/// initial state as depth 1).
fn explore<M>(model: M, max_depth: usize, search: Search<M::State>) -> Report<M>
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync,
    M::Action: Clone + Debug + PartialEq,
{
    let started = Instant::now();
    let builder = model.clone().checker().target_max_depth(max_depth);
    let (states, depth, discoveries) = match search {
        Search::Breadth => {
            let c = builder.spawn_bfs().join();
            (c.unique_state_count(), c.max_depth(), c.discoveries())
        }
        Search::Depth(symmetry) => {
            let c = builder.symmetry_fn(symmetry).spawn_dfs().join();
            (c.unique_state_count(), c.max_depth(), c.discoveries())
        }
    };
    Report {
        model,
        states,
        depth,
        elapsed: started.elapsed(),
        discoveries,
    }
}

/// A counterexample (or example) as numbered steps, each with the state it led to.
fn render<S: Clone + Debug, A: Clone + Debug>(path: &Path<S, A>) -> String {
    let mut out = String::new();
    for (k, (state, action)) in path.clone().into_vec().into_iter().enumerate() {
        out.push_str(&format!("       {state:?}\n"));
        if let Some(a) = action {
            out.push_str(&format!("  {:>3}. {a:?}\n", k + 1));
        }
    }
    out
}

/// Checks `model` to `max_depth` and fails with the counterexample's trace when any
/// "always" property breaks; also fails when a "sometimes" property (the model's proof
/// that it reaches the interesting states at all) has no example.
fn assert_safe<M>(model: M, max_depth: usize) -> Report<M>
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync,
    M::Action: Clone + Debug + PartialEq,
{
    let report = explore(model, max_depth, Search::Breadth);
    for p in report.model.properties() {
        let found = report.discoveries.get(p.name);
        match (p.expectation, found) {
            (Expectation::Always, Some(path)) => {
                panic!("`{}` broken ({report:?}):\n{}", p.name, render(path))
            }
            (Expectation::Sometimes, None) => panic!(
                "`{}` never happens ({report:?}): the model does not reach what it checks",
                p.name
            ),
            _ => {}
        }
    }
    eprintln!("{report:?}");
    report
}

/// Checks a mutated `model` and fails unless the checker finds a counterexample to
/// `property`; returns the trace (printed too, so `--nocapture` shows it).
fn assert_caught<M>(
    model: M,
    max_depth: usize,
    symmetry: fn(&M::State) -> M::State,
    property: &'static str,
) -> String
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync,
    M::Action: Clone + Debug + PartialEq,
{
    let report = explore(model, max_depth, Search::Depth(symmetry));
    let Some(path) = report.discoveries.get(property) else {
        panic!("no counterexample to `{property}` ({report:?}): the mutation went unnoticed");
    };
    let trace = render(path);
    eprintln!("`{property}` broken ({report:?}):\n{trace}");
    trace
}

/// What [`random_walks`] found.
struct Walks {
    walks: usize,
    steps: usize,
}

/// Random schedules, as a complement to the exhaustive search for systems too large for
/// it: `walks` runs from an initial state, each taking a random enabled action until none
/// is left or `max_depth` steps have passed, with every `always` property checked at
/// every state. Seeded, so a failure reproduces. Returns the trace of the first
/// violation.
fn random_walks<M>(model: &M, walks: usize, max_depth: usize, seed: u64) -> Result<Walks, String>
where
    M: Model,
    M::State: Debug + Clone,
    M::Action: Debug + Clone,
{
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    let mut rng = StdRng::seed_from_u64(seed);
    let always: Vec<_> = model
        .properties()
        .into_iter()
        .filter(|p| p.expectation == Expectation::Always)
        .collect();
    let inits = model.init_states();
    let mut steps = 0;
    let mut actions = Vec::new();
    for walk in 0..walks {
        let Some(first) = inits.get(rng.random_range(0..inits.len().max(1))) else {
            return Err("the model has no initial state".into());
        };
        let mut state = first.clone();
        let mut trace: Vec<(Option<M::Action>, M::State)> = vec![(None, state.clone())];
        for _ in 0..=max_depth {
            if let Some(p) = always.iter().find(|p| !(p.condition)(model, &state)) {
                let mut out = format!("walk {walk} (seed {seed}) broke \"{}\":\n", p.name);
                for (action, s) in &trace {
                    if let Some(a) = action {
                        out.push_str(&format!("  -> {a:?}\n"));
                    }
                    out.push_str(&format!("     {s:?}\n"));
                }
                return Err(out);
            }
            actions.clear();
            model.actions(&state, &mut actions);
            if actions.is_empty() || trace.len() > max_depth {
                break;
            }
            let action = actions[rng.random_range(0..actions.len())].clone();
            if let Some(next) = model.next_state(&state, action.clone()) {
                state = next;
                trace.push((Some(action), state.clone()));
                steps += 1;
            }
        }
    }
    Ok(Walks { walks, steps })
}
