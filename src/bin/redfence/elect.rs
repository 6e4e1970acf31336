//! `redfence elect NAME --value V -- CMD`: run a command while leading an election; and
//! `redfence leader NAME [--watch | --follow]`: who leads, or every leadership.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use redfence::{Client, Leader};

use crate::run::{CLEANUP, Forwarded, run_held};
use crate::{Chain, NodesArg, acquire_failure, acquire_options, exit, fail, parse_duration};

pub(crate) const ELECT_HELP: &str = "\
The command runs while this candidate leads, with REDFENCE_LOCK (the election),
REDFENCE_TOKEN and REDFENCE_TERM (the term: pass it to every write as a fencing token)
and REDFENCE_VALIDITY_MS in its environment, supervised as `run` supervises: stopped on
loss (status 77), the leadership resigned when it exits. With --again, a lost leadership
is campaigned for again and the command rerun.

Examples:
  redfence elect scheduler --value \"$(hostname):8080\" -- ./schedule.sh
  redfence elect scheduler --again --wait 1h -- ./schedule.sh";

#[derive(Args)]
pub(crate) struct ElectArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// The value published while leading (say, this host's address).
    #[arg(long, default_value = "")]
    value: String,
    /// Lease per node; the watchdog renews it every third.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long to campaign before giving up (0s: one attempt).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    wait: Duration,
    /// Time between SIGTERM and SIGKILL when the leadership is lost.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    grace: Duration,
    /// After losing the leadership, campaign again and rerun the command.
    #[arg(long)]
    again: bool,
    /// The election's name.
    name: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) async fn elect(args: ElectArgs) -> ExitCode {
    let Some(mut forwarded) = Forwarded::new() else {
        return fail(1, "cannot listen for signals");
    };
    let client = match Client::builder()
        .nodes(args.nodes.nodes.clone())
        .ttl(args.ttl)
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    let election = match client.election(&args.name) {
        Ok(e) => e,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    let wait = args.wait.max(Duration::from_millis(1));
    let code = loop {
        let leading = match election
            .campaign_with(&args.value, acquire_options(wait, None))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                let (status, msg) = acquire_failure(&args.name, &e);
                break fail(status, msg);
            }
        };
        let env = [("REDFENCE_TERM", leading.term().to_string())];
        let guard = leading.into_guard();
        let (code, lost) = run_held(guard, &env, &args.command, args.grace, &mut forwarded).await;
        if !(lost && args.again) {
            break code;
        }
        eprintln!("redfence: campaigning for {:?} again", args.name);
    };
    let _ = client.shutdown(CLEANUP).await;
    code
}

#[derive(Args)]
pub(crate) struct LeaderArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// Keep printing who leads whenever it changes (a new leader or value, or none), until
    /// interrupted; a leadership shorter than a look can pass unseen.
    #[arg(long, conflicts_with = "follow")]
    watch: bool,
    /// Keep printing every leadership, in term order, none skipped (from the election's
    /// log), until interrupted: `term T value V` per line.
    #[arg(long)]
    follow: bool,
    /// With --watch or --follow, how often to look when no change is announced.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    poll: Duration,
    /// The election's name.
    name: String,
}

fn line(leader: Option<&Leader>) -> String {
    match leader {
        Some(l) => format!(
            "term {} value {:?} valid for {:.1}s",
            l.term,
            l.value,
            l.validity.as_secs_f64()
        ),
        None => "no leader".to_owned(),
    }
}

pub(crate) async fn leader(args: LeaderArgs) -> ExitCode {
    let client = match Client::builder().nodes(args.nodes.nodes).build() {
        Ok(c) => c,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    let election = match client.election(&args.name) {
        Ok(e) => e,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    if args.follow {
        return follow(&election, args.poll).await;
    }
    if !args.watch {
        return match election.leader().await {
            Ok(l) => {
                println!("{}", line(l.as_ref()));
                ExitCode::SUCCESS
            }
            Err(e) => fail(exit::NO_QUORUM, Chain(&e)),
        };
    }
    let mut rx = match election.observe(args.poll).await {
        Ok(rx) => rx,
        Err(e) => return fail(exit::NO_QUORUM, Chain(&e)),
    };
    loop {
        let now = rx.borrow_and_update().clone();
        println!("{}", line(now.as_ref()));
        if rx.changed().await.is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

/// Prints every leadership from the election's log. A failed read is reported on
/// stderr and retried at the next announcement or poll.
async fn follow(election: &redfence::Election, poll: Duration) -> ExitCode {
    let mut follower = match election.follow(poll).await {
        Ok(f) => f,
        Err(e) => return fail(exit::NO_QUORUM, Chain(&e)),
    };
    loop {
        match follower.next().await {
            Ok(change) => {
                if change.gap_before {
                    println!("(leaderships missed: this follower fell behind)");
                }
                println!("term {} value {:?}", change.term, change.value);
            }
            Err(e) => eprintln!("redfence: {}", Chain(&e)),
        }
    }
}
