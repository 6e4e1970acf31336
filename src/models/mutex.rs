//! The mutex with fencing tokens, and the reader-writer lock built the same way, as a
//! model: `nodes` nodes each holding the lock key and
//! the fence counter, `clients` clients each running acquisitions (the grant pipeline
//! `SET NX GET` + `INCR`, the commit round), extensions and releases, over a network that
//! delivers, loses replies, repeats calls and lets timed-out calls land later, with node
//! crashes (with and without persistence) and keys expiring as time passes.
//!
//! With `readers > 0`, the last clients are readers of a reader-writer lock (the
//! construction issue 13 builds): a reader is an entry with its own expiry in a per-node
//! reader set, granted where no writer key and no other writer's waiting marker is; a
//! writer is granted where no writer key and no live reader is (else it leaves its
//! waiting marker, which expires with its lease), and gets a committed token as the mutex
//! does. A reader's token is the largest fence counter its granting nodes returned, with
//! no commit round.
//!
//! Properties: at most one writer (mutex holder) holds a valid lease at any tick, and
//! never while a reader does; the tokens of successive writers strictly increase; a
//! reader's token is at least the token of every writer that acquired before the reader
//! started; no reader that starts while a waiting writer's markers are live on a majority
//! wins while they stay live (writer preference). Without persistence the first two
//! break, and the checker must find it; so must it for each mutation.

use std::fmt;

use stateright::{Model, Property};

use super::{Delivery, valid};
use crate::core::quorum::{Decision, Tally, TokenPlan, Vote, commit_decided, quorum};

/// Switches that each remove one safety step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Mutations {
    /// Hand out the largest counter a grant returned without the commit round.
    pub(super) skip_commit: bool,
    /// Extend with a plain `SET key owner PX ttl`: no check that the key is ours.
    pub(super) extend_without_owner_check: bool,
    /// Release deletes the key whoever holds it.
    pub(super) release_without_owner_check: bool,
    /// Count validity from the moment the round is decided, not from its start.
    pub(super) validity_from_decision: bool,
    /// A reader is granted even where a writer holds the key.
    pub(super) reader_ignores_writer: bool,
    /// A writer is granted even where live readers are.
    pub(super) writer_ignores_readers: bool,
    /// A reader is granted even where a waiting writer's marker is.
    pub(super) reader_ignores_marker: bool,
}

/// The system's size and the run's bounds.
#[derive(Debug, Clone)]
pub(super) struct MutexModel {
    pub(super) nodes: usize,
    pub(super) clients: usize,
    /// How many of the clients (the last ones) are readers of a reader-writer lock.
    pub(super) readers: usize,
    /// Lease length in ticks.
    pub(super) ttl: u8,
    /// Time stops here.
    pub(super) max_time: u8,
    /// Acquisition attempts per client.
    pub(super) attempts: u8,
    /// Extension rounds per client.
    pub(super) extends: u8,
    /// Lost replies, repeats, timeouts and crashes in one run, together.
    pub(super) faults: u8,
    /// Nodes keep acknowledged writes across a crash (AOF `appendfsync always`).
    pub(super) persistent: bool,
    pub(super) mutations: Mutations,
    /// Each next state is its node-symmetry representative ([`by_nodes`]), so a
    /// breadth-first search visits one state per class (traces then renumber nodes).
    pub(super) canonical: bool,
}

impl MutexModel {
    /// A small system: 2 clients, one acquisition and one extension each, one fault, a
    /// lease of 2 ticks, 4 ticks in all.
    pub(super) fn new(nodes: usize) -> Self {
        Self {
            nodes,
            clients: 2,
            readers: 0,
            ttl: 2,
            max_time: 4,
            attempts: 1,
            extends: 1,
            faults: 1,
            persistent: true,
            mutations: Mutations::default(),
            canonical: true,
        }
    }
}

/// One acquisition's owner id: client and attempt number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Owner {
    client: u8,
    attempt: u8,
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", letter(self.client.into()), self.attempt)
    }
}

fn letter(client: usize) -> char {
    char::from(b'A' + u8::try_from(client).unwrap_or(25))
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Node {
    up: bool,
    /// Owner and the tick the key expires at.
    lock: Option<(Owner, u8)>,
    fence: u8,
    /// Reader-writer lock: live readers with their expiry, sorted.
    readers: Vec<(Owner, u8)>,
    /// Reader-writer lock: the waiting writer's marker and its expiry.
    marker: Option<(Owner, u8)>,
}

/// A request as the node's scripts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    /// `SET lock owner NX GET PX ttl` + `INCR fence` (for a reader-writer lock's writer,
    /// the same in a script that first checks the readers).
    Grant,
    /// A reader's grant: join the reader set unless a writer holds or waits.
    Read,
    /// commit.lua: raise the counter to the token while the key is ours.
    Commit(u8),
    /// extend.lua: renew the key while it is ours.
    Extend,
    /// release.lua: delete the key while it is ours.
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Answer {
    /// Granted (or found ours), with the `INCR` reply.
    Granted(u8),
    /// Another owner's key.
    Held,
    /// Commit: the counter afterwards, `None` when the key is not ours.
    Counter(Option<u8>),
    /// Extend, release: done or not ours.
    Done(bool),
    /// No usable reply.
    Failed,
}

/// One client's call to one node in the current round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Wire {
    Idle,
    Sent(Op),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    Granting { start: u8, floor: u8 },
    Committing { start: u8, token: u8, at_token: u8 },
    Holding { start: u8, token: u8 },
    Extending { start: u8, token: u8, since: u8 },
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Client {
    phase: Phase,
    /// Attempts started (the current owner's number).
    attempt: u8,
    extends: u8,
    wires: Vec<Wire>,
    /// The current round's answers, by node.
    answers: Vec<Option<Answer>>,
    /// A reader's acquisition: the nodes on which a waiting writer's marker has been
    /// live from its start until now (a ghost, for writer preference).
    behind: Vec<bool>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    now: u8,
    faults: u8,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// Calls nobody waits for any more (timed out, or sent by a client that moved on),
    /// which may still land: (node, owner, request), sorted.
    late: Vec<(u8, Owner, Op)>,
    /// Writers' tokens handed out, in order.
    issued: Vec<u8>,
    /// A reader got a token below a writer's that acquired before the reader started.
    reader_below_floor: bool,
    /// A reader won although a waiting writer's markers had been live on a majority from
    /// its start to its win.
    reader_overtook_writer: bool,
    /// Acquisitions that won, readers' included.
    holds: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Tick,
    Start(u8),
    Deliver(u8, u8, Delivery),
    Timeout(u8, u8),
    Land(u8),
    Extend(u8),
    Release(u8),
    Crash(u8),
    Restart(u8),
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |i: &u8| letter((*i).into());
        match self {
            Action::Tick => write!(f, "one tick passes"),
            Action::Start(i) => write!(f, "{} starts an acquisition", c(i)),
            Action::Deliver(i, n, how) => {
                write!(f, "{}'s request runs on n{n} and is answered{how}", c(i))
            }
            Action::Timeout(i, n) => {
                write!(f, "{} times out on n{n} (the request may still land)", c(i))
            }
            Action::Land(k) => write!(f, "late request #{k} lands"),
            Action::Extend(i) => write!(f, "{} starts an extension", c(i)),
            Action::Release(i) => write!(f, "{} releases", c(i)),
            Action::Crash(n) => write!(f, "n{n} crashes"),
            Action::Restart(n) => write!(f, "n{n} restarts"),
        }
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{} |", self.now)?;
        for (i, n) in self.nodes.iter().enumerate() {
            let down = if n.up { "" } else { " DOWN" };
            match n.lock {
                Some((o, exp)) => write!(f, " n{i}{down}: {o:?} until t{exp}")?,
                None => write!(f, " n{i}{down}: free")?,
            }
            for (o, exp) in &n.readers {
                write!(f, ", reader {o:?} until t{exp}")?;
            }
            if let Some((o, exp)) = n.marker {
                write!(f, ", {o:?} waits until t{exp}")?;
            }
            write!(f, ", fence {};", n.fence)?;
        }
        for (i, c) in self.clients.iter().enumerate() {
            write!(f, " | {}: ", letter(i))?;
            match c.phase {
                Phase::Idle => write!(f, "idle")?,
                Phase::Granting { start, .. } => write!(f, "granting since t{start}")?,
                Phase::Committing { token, .. } => write!(f, "committing {token}")?,
                Phase::Holding { start, token } => write!(f, "holds {token} from t{start}")?,
                Phase::Extending { start, token, .. } => {
                    write!(f, "holds {token} from t{start}, extending")?;
                }
            }
            let answers: Vec<String> = (0..c.wires.len())
                .filter_map(|n| match (c.wires[n], c.answers[n]) {
                    (Wire::Sent(op), _) => Some(format!("n{n} {op:?} sent")),
                    (Wire::Idle, Some(a)) => Some(format!("n{n} {a:?}")),
                    (Wire::Idle, None) => None,
                })
                .collect();
            if !answers.is_empty() {
                write!(f, " [{}]", answers.join(", "))?;
            }
        }
        if !self.late.is_empty() {
            let late: Vec<String> = self
                .late
                .iter()
                .enumerate()
                .map(|(k, (n, o, op))| format!("#{k} {o:?} {op:?} to n{n}"))
                .collect();
            write!(f, " | late: {}", late.join(", "))?;
        }
        write!(f, " | tokens {:?}", self.issued)
    }
}

/// What a node's script does with `op` from `owner` at tick `now`.
fn run(model: &MutexModel, node: &mut Node, owner: Owner, op: Op, now: u8) -> Answer {
    let ours = matches!(node.lock, Some((o, _)) if o == owner);
    let m = &model.mutations;
    let reader = model.is_reader(owner);
    let in_set = node.readers.iter().position(|&(o, _)| o == owner);
    match op {
        Op::Grant if model.readers > 0 => {
            // The writer's script: refused where another writer holds; where live readers
            // are, refused and leaves its waiting marker (unless another writer's is
            // there); else granted, its marker cleared. INCR only on a grant.
            let other_readers = node.readers.iter().any(|&(o, _)| o != owner);
            if node.lock.is_some() && !ours {
                return Answer::Held;
            }
            if !ours && other_readers && !m.writer_ignores_readers {
                if node.marker.is_none_or(|(o, _)| o == owner) {
                    node.marker = Some((owner, now + model.ttl));
                }
                return Answer::Held;
            }
            if node.lock.is_none() {
                node.lock = Some((owner, now + model.ttl));
            }
            if matches!(node.marker, Some((o, _)) if o == owner) {
                node.marker = None;
            }
            node.fence += 1;
            Answer::Granted(node.fence)
        }
        Op::Read => {
            let writer = node.lock.is_some() && !m.reader_ignores_writer;
            let waiting = node.marker.is_some() && !m.reader_ignores_marker;
            if writer || waiting {
                return Answer::Held;
            }
            if in_set.is_none() {
                node.readers.push((owner, now + model.ttl));
                node.readers.sort_unstable();
            }
            Answer::Granted(node.fence)
        }
        Op::Extend if reader => match in_set {
            Some(k) => {
                node.readers[k].1 = now + model.ttl;
                Answer::Done(true)
            }
            None => Answer::Done(false),
        },
        Op::Release if reader => match in_set {
            Some(k) => {
                node.readers.remove(k);
                Answer::Done(true)
            }
            None => Answer::Done(false),
        },
        Op::Grant => {
            // SET NX keeps an existing key (and its expiry); GET tells ours from another's.
            let granted = match node.lock {
                None => {
                    node.lock = Some((owner, now + model.ttl));
                    true
                }
                Some(_) => ours,
            };
            // INCR runs whatever SET did.
            node.fence += 1;
            if granted {
                Answer::Granted(node.fence)
            } else {
                Answer::Held
            }
        }
        Op::Commit(token) if ours => {
            node.fence = node.fence.max(token);
            Answer::Counter(Some(node.fence))
        }
        Op::Commit(_) => Answer::Counter(None),
        Op::Extend if ours => {
            // PEXPIRE ... GT: never shortens the key.
            let exp = node.lock.map_or(0, |(_, e)| e).max(now + model.ttl);
            node.lock = Some((owner, exp));
            Answer::Done(true)
        }
        Op::Extend if m.extend_without_owner_check => {
            node.lock = Some((owner, now + model.ttl));
            Answer::Done(true)
        }
        Op::Release if ours || (m.release_without_owner_check && node.lock.is_some()) => {
            node.lock = None;
            Answer::Done(true)
        }
        // A writer that gives up takes its waiting marker with it.
        Op::Release if matches!(node.marker, Some((o, _)) if o == owner) => {
            node.marker = None;
            Answer::Done(false)
        }
        Op::Extend | Op::Release => Answer::Done(false),
    }
}

/// The client's vote for one answer, as its rounds count it.
fn vote(answer: Answer, phase: Phase) -> Vote {
    match (answer, phase) {
        (Answer::Failed, _) => Vote::Failed,
        (Answer::Granted(_) | Answer::Done(true), _) => Vote::Yes,
        (Answer::Counter(Some(v)), Phase::Committing { token, .. }) if v >= token => Vote::Yes,
        _ => Vote::No,
    }
}

impl MutexModel {
    /// For counterexample searches: states keep their node numbers (the depth-first
    /// search applies the symmetry reduction on the side), so traces read straight.
    fn readable(mut self) -> Self {
        self.canonical = false;
        self
    }

    fn is_reader(&self, owner: Owner) -> bool {
        usize::from(owner.client) >= self.clients - self.readers
    }

    fn owner(&self, s: &State, c: usize) -> Owner {
        Owner {
            client: u8::try_from(c).unwrap_or(u8::MAX),
            attempt: s.clients[c].attempt,
        }
    }

    /// The nodes taking part in client `c`'s current round (sent to, or answered).
    fn tally(&self, s: &State, c: usize) -> Tally {
        let cl = &s.clients[c];
        let members = (0..self.nodes)
            .filter(|&i| cl.wires[i] != Wire::Idle || cl.answers[i].is_some())
            .count();
        let mut tally = Tally::new(members);
        for a in cl.answers.iter().flatten() {
            tally.record(vote(*a, cl.phase));
        }
        tally
    }

    /// Ends client `c`'s round: calls still out land late (or never), replies unread are
    /// dropped, answers are forgotten.
    fn end_round(&self, s: &mut State, c: usize) {
        let owner = self.owner(s, c);
        for i in 0..self.nodes {
            if let Wire::Sent(op) = s.clients[c].wires[i] {
                s.late.push((idx(i), owner, op));
            }
            s.clients[c].wires[i] = Wire::Idle;
            s.clients[c].answers[i] = None;
        }
    }

    /// Sends `op` from client `c` to each node in `to`.
    fn send(&self, s: &mut State, c: usize, op: Op, to: impl IntoIterator<Item = usize>) {
        for i in to {
            s.clients[c].wires[i] = Wire::Sent(op);
        }
    }

    /// The attempt failed: its keys are released on every node (in the background: the
    /// releases may land late or never).
    fn give_up(&self, s: &mut State, c: usize) {
        self.end_round(s, c);
        self.release_everywhere(s, c);
    }

    /// Client `c` lets go: a release to every node, fire and forget (each may land late
    /// or never).
    fn release_everywhere(&self, s: &mut State, c: usize) {
        let owner = self.owner(s, c);
        for i in 0..self.nodes {
            s.late.push((idx(i), owner, Op::Release));
        }
        s.clients[c].phase = Phase::Idle;
    }

    /// The token is stored on a majority: the attempt wins if validity is left.
    fn finish(&self, s: &mut State, c: usize, start: u8, token: u8) {
        let start = if self.mutations.validity_from_decision {
            s.now
        } else {
            start
        };
        if valid(self.ttl, start, s.now) {
            self.end_round(s, c);
            s.clients[c].phase = Phase::Holding { start, token };
            s.holds += 1;
            if !self.is_reader(self.owner(s, c)) {
                s.issued.push(token);
            }
        } else {
            self.give_up(s, c);
        }
    }

    /// Client `c` has a new answer: decide its round if the answers so far settle it.
    fn decide(&self, s: &mut State, c: usize) {
        let tally = self.tally(s, c);
        match s.clients[c].phase {
            Phase::Granting { start, floor } => match tally.decision() {
                Decision::Pending => {}
                Decision::Refused | Decision::Failed => self.give_up(s, c),
                Decision::Won => {
                    let grants: Vec<(usize, u64)> = (0..self.nodes)
                        .filter_map(|i| match s.clients[c].answers[i] {
                            Some(Answer::Granted(v)) => Some((i, u64::from(v))),
                            _ => None,
                        })
                        .collect();
                    let Some(plan) = TokenPlan::new(&grants) else {
                        return self.give_up(s, c);
                    };
                    let token = u8::try_from(plan.token).unwrap_or(u8::MAX);
                    if self.is_reader(self.owner(s, c)) {
                        // A reader's token: the largest counter seen, no commit round.
                        if token < floor {
                            s.reader_below_floor = true;
                        }
                        // Every granting node granted after the start; the nodes whose
                        // marker stayed live all along refused, so they are a minority.
                        let behind = (0..self.nodes)
                            .filter(|&i| s.clients[c].behind[i] && s.nodes[i].marker.is_some())
                            .count();
                        if behind >= quorum(self.nodes) {
                            s.reader_overtook_writer = true;
                        }
                        return self.finish(s, c, start, token);
                    }
                    if self.mutations.skip_commit || plan.committed_without_round(self.nodes) {
                        return self.finish(s, c, start, token);
                    }
                    self.end_round(s, c);
                    self.send(s, c, Op::Commit(token), plan.to_raise.iter().copied());
                    s.clients[c].phase = Phase::Committing {
                        start,
                        token,
                        at_token: u8::try_from(plan.at_token).unwrap_or(u8::MAX),
                    };
                }
            },
            Phase::Committing {
                start,
                token,
                at_token,
            } => match commit_decided(self.nodes, at_token.into(), &tally) {
                None => {}
                Some(true) => self.finish(s, c, start, token),
                Some(false) => self.give_up(s, c),
            },
            Phase::Extending {
                start,
                token,
                since,
            } => match tally.decision() {
                Decision::Pending => {}
                Decision::Won => {
                    // The new validity counts from the round's start (the lease's
                    // deadline never moves back: the later of the two is kept).
                    let renewed = if self.mutations.validity_from_decision {
                        s.now
                    } else {
                        since
                    };
                    self.end_round(s, c);
                    s.clients[c].phase = Phase::Holding {
                        start: start.max(renewed),
                        token,
                    };
                }
                // A majority said not ours: lost, reported, the keys expire.
                Decision::Refused => {
                    self.end_round(s, c);
                    s.clients[c].phase = Phase::Idle;
                }
                // Unreachable: the lease stays held until its deadline, and the
                // watchdog may try again.
                Decision::Failed => {
                    self.end_round(s, c);
                    s.clients[c].phase = Phase::Holding { start, token };
                }
            },
            Phase::Idle | Phase::Holding { .. } => {}
        }
    }

    /// Drops late calls that can no longer change anything: an owner-checked script
    /// (commit, extend, release) for a node that holds no key of its owner, when no grant
    /// of that owner to that node is still on its way. Removing them keeps one state per
    /// situation instead of one per set of inert calls.
    fn prune_late(&self, s: &mut State) {
        let m = &self.mutations;
        let grant_on_way = |s: &State, node: u8, owner: Owner| {
            let grant = [Op::Grant, Op::Read];
            grant.iter().any(|&op| {
                s.late.contains(&(node, owner, op))
                    || (s.clients[usize::from(owner.client)].attempt == owner.attempt
                        && s.clients[usize::from(owner.client)].wires[usize::from(node)]
                            == Wire::Sent(op))
            })
        };
        let inert: Vec<bool> = s
            .late
            .iter()
            .map(|&(node, owner, op)| {
                let checked = match op {
                    Op::Grant | Op::Read => false,
                    Op::Commit(_) => true,
                    Op::Extend => !m.extend_without_owner_check,
                    Op::Release => !m.release_without_owner_check,
                };
                let n = &s.nodes[usize::from(node)];
                let ours = matches!(n.lock, Some((o, _)) if o == owner)
                    || matches!(n.marker, Some((o, _)) if o == owner)
                    || n.readers.iter().any(|&(o, _)| o == owner);
                checked && !ours && !grant_on_way(s, node, owner)
            })
            .collect();
        let mut k = 0;
        s.late.retain(|_| {
            k += 1;
            !inert[k - 1]
        });
    }

    /// Clients holding a valid lease, readers or writers.
    fn valid_holders(&self, s: &State, readers: bool) -> usize {
        (0..self.clients)
            .filter(|&c| self.is_reader(self.owner(s, c)) == readers && self.holds_valid(s, c))
            .count()
    }

    fn holds_valid(&self, s: &State, c: usize) -> bool {
        match s.clients[c].phase {
            Phase::Holding { start, .. } | Phase::Extending { start, .. } => {
                valid(self.ttl, start, s.now)
            }
            _ => false,
        }
    }
}

fn idx(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(u8::MAX)
}

/// The representative of `s` under renaming nodes: nodes sorted by what they hold and
/// what each client has in flight with them. Nodes are interchangeable (no node is
/// special to the protocol), so checking one state per class covers them all.
pub(super) fn by_nodes(s: &State) -> State {
    let mut order: Vec<usize> = (0..s.nodes.len()).collect();
    let key = |i: usize| {
        let node = &s.nodes[i];
        let calls: Vec<(Wire, Option<Answer>, bool)> = s
            .clients
            .iter()
            .map(|c| (c.wires[i], c.answers[i], c.behind[i]))
            .collect();
        let late: Vec<(Owner, Op)> = s
            .late
            .iter()
            .filter(|l| usize::from(l.0) == i)
            .map(|l| (l.1, l.2))
            .collect();
        (node.clone(), calls, late)
    };
    order.sort_by_cached_key(|&i| key(i));
    let mut r = s.clone();
    for (new, &old) in order.iter().enumerate() {
        r.nodes[new] = s.nodes[old].clone();
        for (rc, sc) in r.clients.iter_mut().zip(&s.clients) {
            rc.wires[new] = sc.wires[old];
            rc.answers[new] = sc.answers[old];
            rc.behind[new] = sc.behind[old];
        }
    }
    for l in &mut r.late {
        let old = usize::from(l.0);
        l.0 = idx(order.iter().position(|&o| o == old).unwrap_or(old));
    }
    r.late.sort_unstable();
    r
}

impl Model for MutexModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let client = Client {
            phase: Phase::Idle,
            attempt: 0,
            extends: 0,
            wires: vec![Wire::Idle; self.nodes],
            answers: vec![None; self.nodes],
            behind: vec![false; self.nodes],
        };
        vec![State {
            now: 0,
            faults: 0,
            nodes: vec![
                Node {
                    up: true,
                    lock: None,
                    fence: 0,
                    readers: Vec::new(),
                    marker: None,
                };
                self.nodes
            ],
            clients: vec![client; self.clients],
            late: Vec::new(),
            issued: Vec::new(),
            reader_below_floor: false,
            reader_overtook_writer: false,
            holds: 0,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.now < self.max_time {
            actions.push(Action::Tick);
        }
        let fault_left = s.faults < self.faults;
        for (c, cl) in s.clients.iter().enumerate() {
            let c8 = idx(c);
            match cl.phase {
                Phase::Idle if cl.attempt < self.attempts => actions.push(Action::Start(c8)),
                Phase::Holding { .. } => {
                    actions.push(Action::Release(c8));
                    if cl.extends < self.extends {
                        actions.push(Action::Extend(c8));
                    }
                }
                _ => {}
            }
            for (i, w) in cl.wires.iter().enumerate() {
                match w {
                    Wire::Sent(op) => {
                        for how in Delivery::ALL {
                            // Repeats matter for grants (INCR runs twice); the other
                            // scripts do the same thing the second time.
                            let repeat_matters = how != Delivery::Repeated || *op == Op::Grant;
                            if (fault_left || !how.is_fault()) && repeat_matters {
                                actions.push(Action::Deliver(c8, idx(i), how));
                            }
                        }
                        if fault_left {
                            actions.push(Action::Timeout(c8, idx(i)));
                        }
                    }
                    Wire::Idle => {}
                }
            }
        }
        for k in 0..s.late.len() {
            actions.push(Action::Land(idx(k)));
        }
        for (i, n) in s.nodes.iter().enumerate() {
            if !n.up {
                actions.push(Action::Restart(idx(i)));
            } else if fault_left {
                actions.push(Action::Crash(idx(i)));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Tick => {
                s.now += 1;
                for n in &mut s.nodes {
                    if matches!(n.lock, Some((_, exp)) if exp <= s.now) {
                        n.lock = None;
                    }
                    if matches!(n.marker, Some((_, exp)) if exp <= s.now) {
                        n.marker = None;
                    }
                    n.readers.retain(|&(_, exp)| exp > s.now);
                }
            }
            Action::Start(c) => {
                let c = usize::from(c);
                s.clients[c].attempt += 1;
                let floor = s.issued.iter().copied().max().unwrap_or(0);
                s.clients[c].phase = Phase::Granting {
                    start: s.now,
                    floor,
                };
                let reader = self.is_reader(self.owner(&s, c));
                for (b, n) in s.clients[c].behind.iter_mut().zip(&s.nodes) {
                    *b = reader && n.marker.is_some();
                }
                let op = if reader { Op::Read } else { Op::Grant };
                self.send(&mut s, c, op, 0..self.nodes);
            }
            Action::Deliver(c, i, how) => {
                let (c, i) = (usize::from(c), usize::from(i));
                let Wire::Sent(op) = s.clients[c].wires[i] else {
                    return None;
                };
                if how.is_fault() {
                    s.faults += 1;
                }
                let owner = self.owner(&s, c);
                let answer = if s.nodes[i].up {
                    let first = run(self, &mut s.nodes[i], owner, op, s.now);
                    match how {
                        Delivery::Answered => first,
                        Delivery::ReplyLost => Answer::Failed,
                        Delivery::Repeated => run(self, &mut s.nodes[i], owner, op, s.now),
                    }
                } else {
                    Answer::Failed
                };
                s.clients[c].wires[i] = Wire::Idle;
                s.clients[c].answers[i] = Some(answer);
                self.decide(&mut s, c);
            }
            Action::Timeout(c, i) => {
                let owner = self.owner(&s, usize::from(c));
                let (c, node) = (usize::from(c), i);
                let i = usize::from(node);
                let Wire::Sent(op) = s.clients[c].wires[i] else {
                    return None;
                };
                s.faults += 1;
                s.late.push((node, owner, op));
                s.clients[c].wires[i] = Wire::Idle;
                s.clients[c].answers[i] = Some(Answer::Failed);
                self.decide(&mut s, c);
            }
            Action::Land(k) => {
                let (i, owner, op) = s.late.remove(usize::from(k));
                let now = s.now;
                let node = &mut s.nodes[usize::from(i)];
                if node.up {
                    run(self, node, owner, op, now);
                }
            }
            Action::Extend(c) => {
                let c = usize::from(c);
                let Phase::Holding { start, token } = s.clients[c].phase else {
                    return None;
                };
                s.clients[c].extends += 1;
                s.clients[c].phase = Phase::Extending {
                    start,
                    token,
                    since: s.now,
                };
                self.send(&mut s, c, Op::Extend, 0..self.nodes);
            }
            Action::Release(c) => self.release_everywhere(&mut s, usize::from(c)),
            Action::Crash(i) => {
                s.faults += 1;
                let node = &mut s.nodes[usize::from(i)];
                node.up = false;
                if !self.persistent {
                    node.lock = None;
                    node.fence = 0;
                    node.readers.clear();
                    node.marker = None;
                }
            }
            Action::Restart(i) => s.nodes[usize::from(i)].up = true,
        }
        // A marker that lapsed leaves the readers' ghost; acquisitions that ended drop it.
        for cl in &mut s.clients {
            let granting = matches!(cl.phase, Phase::Granting { .. });
            for (b, n) in cl.behind.iter_mut().zip(&s.nodes) {
                *b = *b && granting && n.marker.is_some();
            }
        }
        // One order for the late calls, whatever order they were added in.
        s.late.sort_unstable();
        self.prune_late(&mut s);
        Some(if self.canonical { by_nodes(&s) } else { s })
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("at most one valid holder", |m: &Self, s: &State| {
                m.valid_holders(s, false) <= 1
            }),
            Property::always("no reader valid with a writer", |m: &Self, s: &State| {
                m.valid_holders(s, false) == 0 || m.valid_holders(s, true) == 0
            }),
            Property::always("tokens strictly increase", |_, s: &State| {
                s.issued.windows(2).all(|w| w[0] < w[1])
            }),
            Property::always("reader tokens cover earlier writers", |_, s: &State| {
                !s.reader_below_floor
            }),
            Property::always("no reader overtakes a waiting writer", |_, s: &State| {
                !s.reader_overtook_writer
            }),
            Property::sometimes("two holders in turn", |_, s: &State| s.holds >= 2),
        ];
        if self.extends > 0 {
            p.push(Property::sometimes(
                "a lease is extended",
                |_, s: &State| {
                    s.clients.iter().any(|c| {
                        c.extends > 0
                            && matches!(c.phase, Phase::Holding { start, .. } if start > 0)
                    })
                },
            ));
        }
        if self.readers >= 2 {
            p.push(Property::sometimes(
                "readers share",
                |m: &Self, s: &State| m.valid_holders(s, true) >= 2,
            ));
        }
        if self.readers >= 1 && self.readers < self.clients {
            p.push(Property::sometimes(
                "a reader after a writer",
                |_, s: &State| {
                    s.clients
                        .iter()
                        .any(|c| matches!(c.phase, Phase::Holding { token, .. } if token > 0))
                        && !s.issued.is_empty()
                        && s.holds >= 2
                },
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_caught, assert_safe};
    use super::*;

    /// Depth bound of the shorter runs (stateright counts the initial state as depth 1:
    /// every schedule of 13 steps), enough for two holders in turn and an extension.
    const SHALLOW: usize = 14;

    /// Depth of the five-node run.
    const FIVE_NODES_DEPTH: usize = 14;

    /// Fails unless the checker finds a counterexample to `property` in `m`.
    fn caught(m: MutexModel, property: &'static str) {
        assert_caught(m.readable(), SHALLOW, by_nodes, property);
    }

    /// A mutated model, without extensions unless the mutation is about them: the
    /// search for its counterexample then stays small.
    fn mutated(f: impl FnOnce(&mut Mutations)) -> MutexModel {
        let mut m = MutexModel::new(3);
        f(&mut m.mutations);
        if !m.mutations.extend_without_owner_check {
            m.extends = 0;
        }
        m
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn mutex_is_safe_on_three_nodes_shallow() {
        assert_safe(MutexModel::new(3), SHALLOW);
    }

    /// `cargo test --release --lib models -- --ignored` (scripts/models.sh).
    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn mutex_is_safe_on_three_nodes_exhaustive() {
        assert_safe(MutexModel::new(3), usize::MAX);
    }

    /// Five nodes: every schedule of up to `FIVE_NODES_DEPTH` steps (the whole space is
    /// too large to finish; this depth covers two holders in turn with faults between).
    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn mutex_is_safe_on_five_nodes_to_depth() {
        assert_safe(MutexModel::new(5), FIVE_NODES_DEPTH);
    }

    /// The reader-writer lock on five nodes: every schedule of 12 steps (6 M states,
    /// about a minute, 5 GiB). One step more outgrew 15 GiB; so did the mutex on five
    /// nodes one step deeper than the run above.
    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn rwlock_is_safe_on_five_nodes_to_depth() {
        let mut m = rwlock();
        m.nodes = 5;
        assert_safe(m, FIVE_NODES_DEPTH - 1);
    }

    /// One writer and one reader (the first client writes, the second reads).
    fn rwlock() -> MutexModel {
        let mut m = MutexModel::new(3);
        m.readers = 1;
        m.attempts = 2;
        m
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn rwlock_is_safe_on_three_nodes_shallow() {
        assert_safe(rwlock(), SHALLOW);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn two_readers_share() {
        let mut m = MutexModel::new(3);
        m.readers = 2;
        m.extends = 0;
        assert_safe(m, 10);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_reader_that_ignores_the_writer_breaks_exclusion() {
        let mut m = rwlock();
        m.extends = 0;
        m.mutations.reader_ignores_writer = true;
        caught(m, "no reader valid with a writer");
    }

    /// Without the waiting marker's check, a reader that starts while a refused writer
    /// waits (its markers on a majority) gets in ahead of it.
    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_reader_that_ignores_the_marker_overtakes_the_writer() {
        let mut m = rwlock();
        m.extends = 0;
        m.mutations.reader_ignores_marker = true;
        caught(m, "no reader overtakes a waiting writer");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_writer_that_ignores_readers_breaks_exclusion() {
        let mut m = rwlock();
        m.extends = 0;
        m.mutations.writer_ignores_readers = true;
        caught(m, "no reader valid with a writer");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn without_persistence_a_restarted_node_breaks_both_promises() {
        let mut m = MutexModel::new(3);
        m.persistent = false;
        caught(m.clone(), "tokens strictly increase");
        caught(m, "at most one valid holder");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn without_the_commit_round_tokens_go_backwards() {
        let m = mutated(|m| m.skip_commit = true);
        caught(m, "tokens strictly increase");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn an_extension_without_owner_check_makes_two_holders() {
        let m = mutated(|m| m.extend_without_owner_check = true);
        caught(m, "at most one valid holder");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_release_without_owner_check_makes_two_holders() {
        // A failed attempt's clean-up deletes the holder's key; the same client's next
        // attempt then takes a majority while the holder is valid.
        let mut m = mutated(|m| m.release_without_owner_check = true);
        m.attempts = 2;
        caught(m, "at most one valid holder");
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn validity_counted_from_the_decision_makes_two_holders() {
        let m = mutated(|m| m.validity_from_decision = true);
        caught(m, "at most one valid holder");
    }
}
