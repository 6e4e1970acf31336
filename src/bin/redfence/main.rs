//! `redfence`: run a command under a distributed lock, inspect a lock, or watch a demo.
//! A thin layer over the library; see `redfence --help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use redfence::{AcquireOptions, Error};

mod demo;
mod elect;
mod ops;
mod run;
mod status;
mod style;

/// Exit statuses, as documented in `--help`.
pub(crate) mod exit {
    /// Bad input: an unparsable URL, a duplicate node, a zero TTL, a missing `--`.
    pub(crate) const USAGE: u8 = 2;
    /// The lock was lost while the command ran; the command was stopped.
    pub(crate) const LOST: u8 = 77;
    /// Not acquired within `--wait`: held by another owner.
    pub(crate) const HELD: u8 = 75;
    /// Not acquired within `--wait`: no quorum of nodes answered.
    pub(crate) const NO_QUORUM: u8 = 69;
    /// The command could not be run (not executable / not found), as in shells.
    pub(crate) const NOT_EXECUTABLE: u8 = 126;
    pub(crate) const NOT_FOUND: u8 = 127;
}

const AFTER_HELP: &str = "\
Nodes come from --nodes or REDFENCE_NODES (comma-separated redis:// or rediss:// URLs).

Examples:
  redfence demo
  REDFENCE_NODES=redis://10.0.0.1:6379,redis://10.0.0.2:6379,redis://10.0.0.3:6379 \\
    redfence run nightly-backup -- /usr/local/bin/backup.sh
  redfence status nightly-backup

Exit statuses of `run`: the command's own status, or
  2   bad input            69  no quorum reached (dead nodes named)
  75  held by another owner  77  lock lost while the command ran (it was stopped)
  126 command not executable  127 command not found";

#[derive(Parser)]
#[command(name = "redfence", version, about = "Distributed locks with fencing tokens over independent Redis nodes", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command while holding a lock, like flock(1) across machines.
    #[command(after_help = run::AFTER_HELP)]
    Run(run::RunArgs),
    /// Show a lock on every node: reachable, owner, remaining TTL, fence counter; and
    /// warn about node settings that break redfence's promises (eviction, no AOF fsync,
    /// replicas, cluster mode).
    #[command(
        after_help = "Example:\n  redfence status --nodes redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003 jobs"
    )]
    Status(status::StatusArgs),
    /// List the locks held now on a majority (name, holder, newest token, lease left),
    /// read with SCAN in batches.
    #[command(
        after_help = "Examples:\n  redfence list\n  redfence list 'jobs:*'\n  redfence list --json"
    )]
    List(ops::ListArgs),
    /// Release a lock whose owner died: shows who holds it, asks (or --yes), then deletes
    /// that owner's keys; the fence counter stays, so the next token is larger.
    #[command(after_help = "Example:\n  redfence break nightly-backup --yes")]
    Break(ops::BreakArgs),
    /// Run a command while leading an election.
    #[command(after_help = elect::ELECT_HELP)]
    Elect(elect::ElectArgs),
    /// Show who leads an election; with --watch, each change.
    #[command(
        after_help = "Examples:\n  redfence leader scheduler\n  redfence leader scheduler --watch\n  redfence leader scheduler --follow"
    )]
    Leader(elect::LeaderArgs),
    /// Start a local 5-node cluster and watch workers contend through faults (needs
    /// redis-server).
    #[command(after_help = "Example:\n  redfence demo --seconds 20")]
    Demo(demo::DemoArgs),
}

/// Where the nodes are.
#[derive(Args, Debug)]
pub(crate) struct NodesArg {
    /// Node URLs, comma-separated (or REDFENCE_NODES).
    #[arg(long, env = "REDFENCE_NODES", value_delimiter = ',', required = true)]
    pub(crate) nodes: Vec<String>,
}

/// `10s`, `500ms`, `2m`, `1h`, or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

/// An error and each of its sources, on one line: `error: cause: cause`.
pub(crate) struct Chain<'a>(pub(crate) &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Prints one line and returns the status: the way the tool reports every failure.
pub(crate) fn fail(status: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{} {msg}", style::Paint::stderr().bad("redfence:"));
    ExitCode::from(status)
}

/// Status and one-line reason for an acquisition that failed.
pub(crate) fn acquire_failure(name: &str, e: &Error) -> (u8, String) {
    match e {
        Error::WaitTimeout {
            last_error: None,
            waited,
            ..
        } => (
            exit::HELD,
            format!("{name:?} is held by another owner (waited {waited:.1?})"),
        ),
        Error::Config(_) | Error::InvalidResource { .. } => (exit::USAGE, e.to_string()),
        _ => {
            let mut dead: Vec<&str> = e.node_errors().iter().map(|n| n.node()).collect();
            dead.sort_unstable();
            dead.dedup();
            (
                exit::NO_QUORUM,
                format!(
                    "no quorum for {name:?}; failing nodes: {}: {}",
                    dead.join(", "),
                    Chain(e)
                ),
            )
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, like other Unix tools: the first line of clap's message.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return fail(exit::USAGE, format!("{first} (see --help)"));
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Status(args) => status::status(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Elect(args) => elect::elect(args).await,
            Command::Leader(args) => elect::leader(args).await,
            Command::List(args) => ops::list(args).await,
            Command::Break(args) => ops::break_lock(args).await,
        }
    })
}

/// Options shared by acquisitions of the tool.
pub(crate) fn acquire_options(wait: Duration, max_hold: Option<Duration>) -> AcquireOptions {
    let o = AcquireOptions::new().wait(wait).watchdog(true);
    match max_hold {
        Some(m) => o.max_hold(m),
        None => o,
    }
}
