//! `redfence`: run a command under a distributed lock, inspect a lock, or watch a demo.
//! A thin layer over the library; see `redfence --help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use redfence::{AcquireOptions, Client, Error};

mod demo;
mod elect;
mod ops;
mod run;
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
    Status(StatusArgs),
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

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// Keep looking, and print a line each time the lock changes hands (holder, token,
    /// nodes holding it), until interrupted.
    #[arg(long)]
    watch: bool,
    /// With --watch, how often to look.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    poll: Duration,
    /// One JSON object (with --watch, one per change) instead of the table.
    #[arg(long)]
    json: bool,
    /// The lock name.
    name: String,
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
            Command::Status(args) => status(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Elect(args) => elect::elect(args).await,
            Command::Leader(args) => elect::leader(args).await,
            Command::List(args) => ops::list(args).await,
            Command::Break(args) => ops::break_lock(args).await,
        }
    })
}

async fn status(args: StatusArgs) -> ExitCode {
    let client = match Client::builder().nodes(args.nodes.nodes).build() {
        Ok(c) => c,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    if args.watch {
        return watch_status(&client, &args.name, args.poll, args.json).await;
    }
    let status = match client.inspect(&args.name).await {
        Ok(s) => s,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    // The settings that break a promise, and the nodes whose settings could not be read
    // (an unreachable node is reported with its state already).
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    for check in client.check_nodes().await {
        warnings.extend(
            check
                .warnings
                .iter()
                .map(|w| (check.node.clone(), w.to_string())),
        );
        let up = status
            .nodes
            .iter()
            .any(|v| v.node == check.node && v.state.is_ok());
        for e in check.unreadable.iter().filter(|_| up) {
            notes.push((check.node.clone(), e.to_string()));
        }
    }
    if args.json {
        println!("{}", status_json(&status, &warnings));
        return ExitCode::SUCCESS;
    }
    let paint = style::Paint::stdout();
    let short = |o: &str| o.chars().take(8).collect::<String>();
    let verdict = match (&status.holder, status.newest_token()) {
        (Some(h), Some(t)) => format!("held by {} (newest token {t})", short(h)),
        (Some(h), None) => format!("held by {}", short(h)),
        (None, _) => "not held by a quorum".to_owned(),
    };
    println!(
        "lock {:?} on {} nodes (quorum {}): {}",
        status.resource,
        status.nodes.len(),
        status.quorum,
        paint.bold(&verdict)
    );
    println!(
        "{:<22} {:<12} {:<9} {:>8} {:>10}",
        "NODE", "STATE", "OWNER", "TTL", "FENCE"
    );
    for v in &status.nodes {
        match &v.state {
            Ok(l) => println!(
                "{:<22} {} {:<9} {:>8} {:>10}",
                v.node,
                paint.good(&format!("{:<12}", "up")),
                l.owner.as_deref().map_or("-".into(), short),
                l.ttl
                    .map_or("-".into(), |t| format!("{:.1}s", t.as_secs_f64())),
                l.fence.map_or("-".into(), |f| f.to_string()),
            ),
            Err(e) => println!(
                "{:<22} {} {e}",
                v.node,
                paint.bad(&format!("{:<12}", "unreachable"))
            ),
        }
    }
    for (node, w) in &warnings {
        println!("{} node {node}: {w}", paint.warn("warning:"));
    }
    for (node, e) in &notes {
        println!("note: node {node}: settings not readable: {e}");
    }
    ExitCode::SUCCESS
}

/// `status --json`: the lock, its holder on a majority, each node's view, the warnings.
fn status_json(status: &redfence::LockStatus, warnings: &[(String, String)]) -> String {
    use ops::json;
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|v| match &v.state {
            Ok(l) => format!(
                "{{\"node\":{},\"up\":true,\"owner\":{},\"ttl_ms\":{},\"fence\":{}}}",
                json(&v.node),
                or_null(l.owner.as_deref().map(json)),
                or_null(l.ttl.map(|t| t.as_millis().to_string())),
                or_null(l.fence.map(|f| f.to_string())),
            ),
            Err(e) => format!(
                "{{\"node\":{},\"up\":false,\"error\":{}}}",
                json(&v.node),
                json(&e.to_string())
            ),
        })
        .collect();
    let warnings: Vec<String> = warnings
        .iter()
        .map(|(node, w)| format!("{{\"node\":{},\"warning\":{}}}", json(node), json(w)))
        .collect();
    format!(
        "{{\"lock\":{},\"quorum\":{},\"holder\":{},\"token\":{},\"nodes\":[{}],\"warnings\":[{}]}}",
        json(&status.resource),
        status.quorum,
        or_null(status.holder.as_deref().map(json)),
        or_null(status.newest_token().map(|t| t.to_string())),
        nodes.join(","),
        warnings.join(","),
    )
}

/// `status --watch`: one line per change of hands, read every `poll`: the time, the
/// holder on a majority (or none), the newest token, and on how many nodes it is held.
async fn watch_status(client: &Client, name: &str, poll: Duration, as_json: bool) -> ExitCode {
    let mut last = None;
    let started = std::time::Instant::now();
    loop {
        let status = match client.inspect(name).await {
            Ok(s) => s,
            Err(e) => return fail(exit::USAGE, Chain(&e)),
        };
        let holder = status.holder.clone();
        let on = status
            .nodes
            .iter()
            .filter(|v| {
                v.state
                    .as_ref()
                    .is_ok_and(|l| l.owner.is_some() && l.owner == holder)
            })
            .count();
        let now = (holder, status.newest_token());
        if last.as_ref() != Some(&now) {
            let at = started.elapsed().as_secs_f64();
            let token = now.1.map_or("null".into(), |t| t.to_string());
            match &now {
                _ if as_json => println!(
                    "{{\"at_s\":{at:.3},\"holder\":{},\"token\":{token},\"on\":{on},\"nodes\":{}}}",
                    now.0.as_deref().map_or("null".into(), ops::json),
                    status.nodes.len()
                ),
                (Some(h), token) => println!(
                    "{at:>8.3}s held by {} (newest token {}) on {on} of {} nodes",
                    h.chars().take(8).collect::<String>(),
                    token.map_or("-".into(), |t| t.to_string()),
                    status.nodes.len()
                ),
                (None, token) => println!(
                    "{at:>8.3}s not held by a quorum (newest token {})",
                    token.map_or("-".into(), |t| t.to_string())
                ),
            }
            last = Some(now);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Options shared by acquisitions of the tool.
pub(crate) fn acquire_options(wait: Duration, max_hold: Option<Duration>) -> AcquireOptions {
    let o = AcquireOptions::new().wait(wait).watchdog(true);
    match max_hold {
        Some(m) => o.max_hold(m),
        None => o,
    }
}
