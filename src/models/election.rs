//! Leader election (`src/election/`), as a model: candidates win the election's lock as
//! the mutex does (a grant round decided with [`Tally::decision`], the term planned with
//! [`TokenPlan`] and committed under [`commit_decided`]), then publish their record and
//! log their term on a majority before the campaign returns.
//!
//! - **Grant**: `SET lock NX` + `INCR counter` on every request (refusals too, as the
//!   pipeline does).
//! - **Commit** (commit.lua): raise the counter to the term while the lock is ours.
//! - **Publish** (`elect_proclaim.lua`): while the lock is ours, the record becomes
//!   (owner, term) and the term joins the node's log; otherwise refused.
//! - **Resign** (`elect_release.lua`), at once on every node: where the lock is ours,
//!   delete it and our record. A campaign whose publication is refused resigns too.
//! - **Expiry**: a candidate's lease can run out at any point (a paused process): its
//!   lock and record go on every node at once (the record is written with the lock's
//!   remaining lease and renewed with it, so it never outlives it). A leader learns of it
//!   through its watchdog (here at once); a candidate still campaigning does not, and
//!   carries on with its next delivery.
//!
//! - **Follower** (optional, [`Election::follow`](crate::Election::follow)): reads the
//!   logs of a majority *node by node* (each node's log as it is when that node answers,
//!   other deliveries in between), then hands out what the library's own
//!   [`confirmed`](crate::election::follow::confirmed) returns for that read: a term only
//!   once a read started after the one that first showed it has come back.
//!
//! Deliveries are atomic and in any order. Within a fault budget, a delivery's reply is
//! lost (the script ran; the candidate counts a failure) or lost and sent again on a new
//! connection (the script runs twice; the repeat's answer counts: a repeated grant finds
//! its own owner and counts as granted, its `INCR` having run twice). Late calls,
//! crashes and time are the mutex model's business: leading is holding that lock, and a
//! grant landing after its campaign gave up holds a key no one owns in a live attempt,
//! which delays others until it expires but grants no one anything.
//!
//! Properties: one leader at a time; terms strictly increase across leaders; a node's
//! record always names the holder of its lock there (so a record a majority agree on,
//! which is what [`Election::leader`](crate::Election::leader) reports, names a
//! candidate holding the lock on that majority, with its own term); every leadership is
//! in the log of a majority before its campaign returns (so a follower's majority read
//! sees it); a follower is shown every leadership whose campaign returned, in term
//! order. Mutations: a release that leaves the record, a publication without the owner
//! check, a campaign that returns at the first publication, and a follower that hands
//! out whatever one read shows (no confirming read: the race the chaos run found).

use std::collections::BTreeMap;
use std::fmt;

use stateright::{Model, Property};

use super::{Delivery, add_faults};
use crate::core::quorum::{self, Decision, Tally, TokenPlan, Vote, commit_decided};
use crate::election::follow::confirmed;

/// Which safety step a mutated model leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mutation {
    None,
    /// The release deletes the lock but leaves the record.
    ReleaseKeepsRecord,
    /// The publication writes the record whoever holds the lock.
    PublishWithoutOwnerCheck,
    /// The campaign returns once one node has the publication.
    ReturnAtFirstPublication,
    /// The follower hands out every term a read shows, without a confirming read.
    FollowerTrustsOneRead,
}

#[derive(Debug, Clone)]
pub(super) struct ElectionModel {
    pub(super) nodes: usize,
    pub(super) candidates: usize,
    /// Campaigns per candidate.
    pub(super) attempts: u8,
    /// Reads the follower makes (0: no follower).
    pub(super) follower_reads: u8,
    /// Lost and repeated replies in one run, together.
    pub(super) faults: u8,
    pub(super) mutation: Mutation,
}

/// A follower of the election's log, reading node by node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Follower {
    /// Reads started.
    reads: u8,
    /// The read under way: the nodes read so far (a bit each) and the terms above
    /// `after` their logs hold (a bit each).
    reading: Option<(u8, u32)>,
    /// The last term handed out.
    after: u8,
    /// Terms shown by the last read and not yet confirmed (a bit each).
    unconfirmed: u32,
    /// Terms handed out (a ghost, a bit each).
    shown: u32,
    /// A term was handed out while an earlier leadership was not (a ghost).
    missed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Node {
    lock: Option<u8>,
    counter: u8,
    /// (owner, term)
    record: Option<(u8, u8)>,
    /// The terms logged, a bit per term.
    log: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    Idle,
    /// Per node: `Some(Some(counter))` granted, `Some(None)` refused.
    Granting(Vec<Option<Option<u8>>>),
    /// The term, how many granting nodes are at it, the nodes to raise (a bit each),
    /// and their answers.
    Committing(u8, u8, u8, Vec<Option<bool>>),
    Publishing(u8, Vec<Option<bool>>),
    Leading(u8),
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    nodes: Vec<Node>,
    candidates: Vec<(Phase, u8)>,
    /// Terms whose campaign returned (a ghost, a bit per term).
    won: u32,
    /// The last leader's term, and whether a later leader's was not above it (ghosts).
    last_term: u8,
    term_went_back: bool,
    /// A campaign won the lock but could not publish, and stepped down (a ghost).
    abandoned: bool,
    follower: Follower,
    /// Faults spent.
    faults: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Campaign(u8),
    Grant(u8, u8, Delivery),
    Commit(u8, u8, Delivery),
    Publish(u8, u8, Delivery),
    Resign(u8),
    Expire(u8),
    FollowerReads,
    FollowerReadsNode(u8),
}

fn name(c: u8) -> char {
    char::from(b'A' + c)
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Campaign(c) => write!(f, "{} campaigns", name(c)),
            Action::Grant(c, i, how) => write!(f, "{}'s grant runs on n{i}{how}", name(c)),
            Action::Commit(c, i, how) => write!(f, "{}'s commit runs on n{i}{how}", name(c)),
            Action::Publish(c, i, how) => {
                write!(f, "{}'s publication runs on n{i}{how}", name(c))
            }
            Action::Resign(c) => write!(f, "{} resigns", name(c)),
            Action::Expire(c) => write!(f, "{}'s lease runs out (paused)", name(c)),
            Action::FollowerReads => write!(f, "the follower starts a read"),
            Action::FollowerReadsNode(i) => write!(f, "the follower's read of n{i} comes back"),
        }
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            let lock = n.lock.map_or('-', name);
            let record = n
                .record
                .map_or_else(|| "-".to_owned(), |(o, t)| format!("{}@{t}", name(o)));
            let log: Vec<u32> = (0..32).filter(|t| n.log & (1 << t) != 0).collect();
            write!(f, "n{i}[{lock} #{} rec {record} log {log:?}] ", n.counter)?;
        }
        for (c, (phase, _)) in self.candidates.iter().enumerate() {
            let c = name(u8::try_from(c).unwrap_or(0));
            match phase {
                Phase::Idle => write!(f, "| {c} idle ")?,
                Phase::Granting(_) => write!(f, "| {c} granting ")?,
                Phase::Committing(t, ..) => write!(f, "| {c} committing {t} ")?,
                Phase::Publishing(t, _) => write!(f, "| {c} publishing {t} ")?,
                Phase::Leading(t) => write!(f, "| {c} LEADS in term {t} ")?,
            }
        }
        let fw = &self.follower;
        if fw.reads > 0 {
            let terms =
                |bits: u32| -> Vec<u32> { (0..32).filter(|t| bits & (1 << t) != 0).collect() };
            write!(f, "| follower shown {:?}", terms(fw.shown))?;
            if fw.unconfirmed != 0 {
                write!(f, ", to confirm {:?}", terms(fw.unconfirmed))?;
            }
            if let Some((read, seen)) = fw.reading {
                write!(
                    f,
                    ", reading (has n{:?}: {:?})",
                    terms(u32::from(read)),
                    terms(seen)
                )?;
            }
        }
        Ok(())
    }
}

impl ElectionModel {
    /// Deletes `c`'s lock and record on every node (a resignation, or the lease running
    /// out: the record goes with the lock).
    fn release(&self, s: &mut State, c: u8, expiry: bool) {
        for n in &mut s.nodes {
            if n.lock == Some(c) {
                n.lock = None;
                let keep = !expiry && self.mutation == Mutation::ReleaseKeepsRecord;
                if n.record.is_some_and(|(o, _)| o == c) && !keep {
                    n.record = None;
                }
            }
        }
    }

    fn step_down(&self, s: &mut State, c: u8) {
        self.release(s, c, false);
        s.candidates[usize::from(c)].0 = Phase::Idle;
    }

    fn publishing(&self, s: &mut State, c: u8, term: u8) {
        s.candidates[usize::from(c)].0 = Phase::Publishing(term, vec![None; self.nodes]);
    }

    fn lead(s: &mut State, c: u8, term: u8) {
        if term <= s.last_term {
            s.term_went_back = true;
        }
        s.last_term = term;
        s.won |= 1 << term;
        s.candidates[usize::from(c)].0 = Phase::Leading(term);
    }

    fn commit_outcome(&self, at_token: u8, raise: u8, answers: &[Option<bool>]) -> Option<bool> {
        let raised = (0..self.nodes).filter(|i| raise & (1 << i) != 0);
        let mut round = Tally::new(raised.clone().count());
        for i in raised {
            match answers[i] {
                Some(true) => round.record(Vote::Yes),
                Some(false) => round.record(Vote::No),
                None => {}
            }
        }
        commit_decided(self.nodes, usize::from(at_token), &round)
    }
}

impl ElectionModel {
    /// The follower's read of node `i` comes back; at a majority, the read is done and
    /// what it confirms is handed out.
    fn follower_reads(&self, s: &mut State, i: u8) {
        let Some((read, seen)) = s.follower.reading else {
            return;
        };
        let above = !(2u32 << s.follower.after).wrapping_sub(1);
        let (read, seen) = (
            read | (1 << i),
            seen | (s.nodes[usize::from(i)].log & above),
        );
        if (read.count_ones() as usize) < quorum::quorum(self.nodes) {
            s.follower.reading = Some((read, seen));
            return;
        }
        let fw = &mut s.follower;
        fw.reading = None;
        let map = |bits: u32| -> BTreeMap<u64, ()> {
            (0..32u32)
                .filter(|t| bits & (1 << t) != 0)
                .map(|t| (u64::from(t), ()))
                .collect()
        };
        let mut unconfirmed = map(fw.unconfirmed);
        let handed = if self.mutation == Mutation::FollowerTrustsOneRead {
            let mut all = std::mem::take(&mut unconfirmed);
            all.extend(map(seen));
            all
        } else {
            confirmed(&mut unconfirmed, map(seen))
        };
        fw.unconfirmed = unconfirmed.keys().fold(0, |m, &t| m | (1 << t));
        for &term in handed.keys() {
            let term = u8::try_from(term).unwrap_or(u8::MAX);
            // Every returned campaign's term between the last one handed out and this
            // one should have been handed out first.
            let upto = (2u32 << term.saturating_sub(1)).wrapping_sub(1);
            let between = upto & !(2u32 << fw.after).wrapping_sub(1);
            if term <= fw.after || s.won & between != 0 {
                fw.missed = true;
            }
            fw.shown |= 1 << term;
            fw.after = term;
        }
    }
}

/// How many times a delivery runs its script on the node.
fn runs(how: Delivery) -> usize {
    if how == Delivery::Repeated { 2 } else { 1 }
}

fn tally<T>(answers: &[Option<T>], yes: impl Fn(&T) -> bool, n: usize) -> Tally {
    let mut t = Tally::new(n);
    for a in answers.iter().flatten() {
        t.record(if yes(a) { Vote::Yes } else { Vote::No });
    }
    t
}

impl Model for ElectionModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let node = Node {
            lock: None,
            counter: 0,
            record: None,
            log: 0,
        };
        vec![State {
            nodes: vec![node; self.nodes],
            candidates: vec![(Phase::Idle, 0); self.candidates],
            won: 0,
            last_term: 0,
            term_went_back: false,
            abandoned: false,
            follower: Follower::default(),
            faults: 0,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for (c, (phase, attempts)) in s.candidates.iter().enumerate() {
            let c = u8::try_from(c).unwrap_or(u8::MAX);
            let open = |answers: Vec<bool>, make: fn(u8, u8) -> Action| {
                answers
                    .into_iter()
                    .enumerate()
                    .filter(|&(_, open)| open)
                    .map(move |(i, _)| make(c, u8::try_from(i).unwrap_or(0)))
            };
            let holds = s.nodes.iter().any(|n| n.lock == Some(c));
            match phase {
                Phase::Idle if *attempts < self.attempts => actions.push(Action::Campaign(c)),
                Phase::Idle => {}
                Phase::Granting(a) => {
                    actions.extend(open(a.iter().map(Option::is_none).collect(), |c, i| {
                        Action::Grant(c, i, Delivery::Answered)
                    }));
                }
                Phase::Committing(.., a) => {
                    actions.extend(open(a.iter().map(Option::is_none).collect(), |c, i| {
                        Action::Commit(c, i, Delivery::Answered)
                    }));
                }
                Phase::Publishing(_, a) => {
                    actions.extend(open(a.iter().map(Option::is_none).collect(), |c, i| {
                        Action::Publish(c, i, Delivery::Answered)
                    }));
                }
                Phase::Leading(_) => actions.push(Action::Resign(c)),
            }
            if holds && !matches!(phase, Phase::Idle | Phase::Granting(_)) {
                actions.push(Action::Expire(c));
            }
        }
        if s.faults < self.faults {
            add_faults(actions, |a, how| match a {
                Action::Grant(c, i, _) => Some(Action::Grant(c, i, how)),
                Action::Commit(c, i, _) => Some(Action::Commit(c, i, how)),
                Action::Publish(c, i, _) => Some(Action::Publish(c, i, how)),
                _ => None,
            });
        }
        match s.follower.reading {
            None if s.follower.reads < self.follower_reads => actions.push(Action::FollowerReads),
            None => {}
            Some((read, _)) => actions.extend(
                (0..self.nodes)
                    .filter(|i| read & (1 << i) == 0)
                    .map(|i| Action::FollowerReadsNode(u8::try_from(i).unwrap_or(0))),
            ),
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let n = self.nodes;
        match action {
            Action::Campaign(c) => {
                let cand = &mut s.candidates[usize::from(c)];
                cand.1 += 1;
                cand.0 = Phase::Granting(vec![None; n]);
            }
            Action::Grant(c, i, how) => {
                let Phase::Granting(mut answers) = s.candidates[usize::from(c)].0.clone() else {
                    return None;
                };
                s.faults += u8::from(how.is_fault());
                let node = &mut s.nodes[usize::from(i)];
                let mut answer = None;
                for _ in 0..runs(how) {
                    // `SET lock NX GET` + `INCR`: granted where free, or already ours (a
                    // repeat finds its own owner id).
                    let granted = node.lock.is_none_or(|o| o == c);
                    node.lock = Some(node.lock.unwrap_or(c));
                    node.counter = node.counter.saturating_add(1);
                    answer = granted.then_some(node.counter);
                }
                // A lost reply counts as a failure: like a refusal, no grant to plan with.
                answers[usize::from(i)] = Some(answer.filter(|_| how != Delivery::ReplyLost));
                match tally(&answers, Option::is_some, n).decision() {
                    Decision::Pending => s.candidates[usize::from(c)].0 = Phase::Granting(answers),
                    Decision::Won => {
                        let grants: Vec<(usize, u64)> = answers
                            .iter()
                            .enumerate()
                            .filter_map(|(i, a)| a.flatten().map(|v| (i, u64::from(v))))
                            .collect();
                        let plan = TokenPlan::new(&grants)?;
                        let term = u8::try_from(plan.token).unwrap_or(u8::MAX);
                        let at = u8::try_from(plan.at_token).unwrap_or(u8::MAX);
                        let raise = plan.to_raise.iter().fold(0u8, |m, &i| m | (1 << i));
                        let asked: Vec<Option<bool>> = (0..n)
                            .map(|i| (raise & (1 << i) == 0).then_some(false))
                            .collect();
                        if self.commit_outcome(at, raise, &asked) == Some(true) {
                            self.publishing(&mut s, c, term);
                        } else {
                            s.candidates[usize::from(c)].0 =
                                Phase::Committing(term, at, raise, asked);
                        }
                    }
                    Decision::Refused | Decision::Failed => self.step_down(&mut s, c),
                }
            }
            Action::Commit(c, i, how) => {
                let Phase::Committing(term, at, raise, mut answers) =
                    s.candidates[usize::from(c)].0.clone()
                else {
                    return None;
                };
                s.faults += u8::from(how.is_fault());
                let node = &mut s.nodes[usize::from(i)];
                let ours = node.lock == Some(c);
                if ours {
                    node.counter = node.counter.max(term);
                }
                // Run twice or once, the same: the counter is raised to the term.
                answers[usize::from(i)] = Some(ours && how != Delivery::ReplyLost);
                match self.commit_outcome(at, raise, &answers) {
                    Some(true) => self.publishing(&mut s, c, term),
                    Some(false) => self.step_down(&mut s, c),
                    None => {
                        s.candidates[usize::from(c)].0 =
                            Phase::Committing(term, at, raise, answers);
                    }
                }
            }
            Action::Publish(c, i, how) => {
                let Phase::Publishing(term, mut answers) = s.candidates[usize::from(c)].0.clone()
                else {
                    return None;
                };
                s.faults += u8::from(how.is_fault());
                let node = &mut s.nodes[usize::from(i)];
                let ours =
                    node.lock == Some(c) || self.mutation == Mutation::PublishWithoutOwnerCheck;
                if ours {
                    node.record = Some((c, term));
                    node.log |= 1 << term;
                }
                answers[usize::from(i)] = Some(ours && how != Delivery::ReplyLost);
                let t = tally(&answers, |&ok| ok, n);
                let won = t.decision() == Decision::Won
                    || (self.mutation == Mutation::ReturnAtFirstPublication && t.yes >= 1);
                match t.decision() {
                    _ if won => Self::lead(&mut s, c, term),
                    Decision::Pending => {
                        s.candidates[usize::from(c)].0 = Phase::Publishing(term, answers);
                    }
                    _ => {
                        s.abandoned = true;
                        self.step_down(&mut s, c);
                    }
                }
            }
            Action::Resign(c) => self.step_down(&mut s, c),
            Action::Expire(c) => {
                self.release(&mut s, c, true);
                // A leader's watchdog reports the loss before the deadline; a candidate
                // still campaigning finds out at its next delivery.
                if matches!(s.candidates[usize::from(c)].0, Phase::Leading(_)) {
                    s.candidates[usize::from(c)].0 = Phase::Idle;
                }
            }
            Action::FollowerReads => {
                s.follower.reads += 1;
                s.follower.reading = Some((0, 0));
            }
            Action::FollowerReadsNode(i) => self.follower_reads(&mut s, i),
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("one leader at a time", |_: &Self, s: &State| {
                s.candidates
                    .iter()
                    .filter(|(p, _)| matches!(p, Phase::Leading(_)))
                    .count()
                    <= 1
            }),
            Property::always("terms increase", |_: &Self, s: &State| !s.term_went_back),
            Property::always("a record names its lock's holder", |_: &Self, s: &State| {
                s.nodes
                    .iter()
                    .all(|n| n.record.is_none_or(|(o, _)| n.lock == Some(o)))
            }),
            Property::always(
                "a majority's record is a campaigning or leading candidate's",
                |m: &Self, s: &State| {
                    let q = quorum::quorum(m.nodes);
                    s.nodes.iter().filter_map(|n| n.record).all(|(o, t)| {
                        let agree = s.nodes.iter().filter(|n| n.record == Some((o, t))).count();
                        agree < q
                            || matches!(
                                s.candidates[usize::from(o)].0,
                                Phase::Publishing(term, _) | Phase::Leading(term) if term == t
                            )
                    })
                },
            ),
            Property::always(
                "every leadership logged on a majority",
                |m: &Self, s: &State| {
                    let q = quorum::quorum(m.nodes);
                    (0..32)
                        .filter(|t| s.won & (1 << t) != 0)
                        .all(|t| s.nodes.iter().filter(|n| n.log & (1 << t) != 0).count() >= q)
                },
            ),
            Property::sometimes("two leaderships in turn", |_: &Self, s: &State| {
                s.won.count_ones() >= 2
            }),
            Property::sometimes("a campaign abandoned", |_: &Self, s: &State| s.abandoned),
        ];
        if self.follower_reads > 0 {
            properties.push(Property::always(
                "a follower is shown every leadership, in term order",
                |_: &Self, s: &State| !s.follower.missed,
            ));
            properties.push(Property::sometimes(
                "a follower shown two leaderships",
                |_: &Self, s: &State| s.follower.shown.count_ones() >= 2,
            ));
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_caught, assert_safe};
    use super::*;

    fn model(nodes: usize, candidates: usize, mutation: Mutation) -> ElectionModel {
        ElectionModel {
            nodes,
            candidates,
            attempts: 2,
            follower_reads: 0,
            faults: 0,
            mutation,
        }
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn the_election_is_safe_on_three_nodes() {
        assert_safe(model(3, 2, Mutation::None), usize::MAX);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn the_election_is_safe_on_five_nodes() {
        let mut m = model(5, 2, Mutation::None);
        m.attempts = 1;
        assert_safe(m, usize::MAX);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn the_election_is_safe_with_a_lost_or_repeated_reply() {
        let mut m = model(3, 2, Mutation::None);
        m.faults = 1;
        assert_safe(m, usize::MAX);
    }

    /// Two leaderships (one campaign each) and a follower making three reads, each read
    /// node by node among every other delivery.
    fn followed(mutation: Mutation) -> ElectionModel {
        let mut m = model(3, 2, mutation);
        m.attempts = 1;
        m.follower_reads = 3;
        m
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_follower_reading_node_by_node_is_shown_every_leadership() {
        assert_safe(followed(Mutation::None), usize::MAX);
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_follower_that_trusts_one_read_is_caught() {
        assert_caught(
            followed(Mutation::FollowerTrustsOneRead),
            usize::MAX,
            Clone::clone,
            "a follower is shown every leadership, in term order",
        );
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_release_that_leaves_the_record_is_caught() {
        assert_caught(
            model(3, 2, Mutation::ReleaseKeepsRecord),
            usize::MAX,
            Clone::clone,
            "a record names its lock's holder",
        );
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_publication_without_the_owner_check_is_caught() {
        assert_caught(
            model(3, 2, Mutation::PublishWithoutOwnerCheck),
            usize::MAX,
            Clone::clone,
            "a record names its lock's holder",
        );
    }

    #[test]
    #[ignore = "model check: scripts/models.sh runs it in release"]
    fn a_campaign_returning_at_the_first_publication_is_caught() {
        assert_caught(
            model(3, 2, Mutation::ReturnAtFirstPublication),
            usize::MAX,
            Clone::clone,
            "every leadership logged on a majority",
        );
    }
}
