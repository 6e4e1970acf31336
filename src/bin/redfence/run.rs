//! `redfence run NAME -- CMD`: hold a lock while a command runs.

use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redfence::{Client, Error, LockGuard};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::{Chain, NodesArg, acquire_failure, acquire_options, exit, fail, parse_duration, style};

pub(crate) const AFTER_HELP: &str = "\
The command runs with REDFENCE_LOCK (the name), REDFENCE_TOKEN (the fencing token: pass
it to every write) and REDFENCE_VALIDITY_MS in its environment. With --permits K, NAME is
a counting semaphore: at most K commands run at once across every machine; the command
also gets REDFENCE_SLOT (which of the K it holds), REDFENCE_LOCK is NAME#SLOT, and the
token increases per slot, so fence writes by REDFENCE_LOCK. With --read or --write, NAME
is a reader-writer lock: any number of --read commands run together, a --write command
runs alone (and new readers wait behind a waiting writer); REDFENCE_MODE says which. A
reader's token is at least every earlier writer's. With --all, NAME is a comma-separated
set of locks taken all or nothing (REDFENCE_LOCK lists them, REDFENCE_TOKEN is the first
one's, REDFENCE_TOKENS holds name=token for each, comma-separated). A watchdog keeps the
lock alive while it runs; it is released when the command exits, and redfence exits
with the command's status. The command runs in a process group of its own (as with
timeout(1)), so signals reach everything it starts. If the lock is lost, the group gets
SIGTERM, then SIGKILL after --grace (cut short to what is left of the lock's validity),
and redfence exits with 77. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to redfence are
passed on to the group. If redfence itself is killed with SIGKILL, the command is not
stopped: its lock expires with the TTL, and only the fencing token protects its writes.

Examples:
  redfence run --nodes redis://h1:6379,redis://h2:6379,redis://h3:6379 reindex -- ./reindex.sh
  redfence run --wait 0s --ttl 30s nightly -- sh -c 'backup --fence \"$REDFENCE_TOKEN\"'
  redfence run --permits 4 --wait 10m crawlers -- ./crawl.sh
  redfence run --read catalog -- ./report.sh     redfence run --write catalog -- ./reindex.sh";

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// Lease per node; the watchdog renews it every third.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long to wait for the lock before giving up (0s: one attempt).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    wait: Duration,
    /// Stop renewing, and stop the command, after this long.
    #[arg(long, value_parser = parse_duration)]
    max_hold: Option<Duration>,
    /// Hold one of K permits of a counting semaphore instead of the lock (every run of
    /// NAME must give the same K).
    #[arg(long, value_name = "K", conflicts_with_all = ["read", "write"])]
    permits: Option<usize>,
    /// Hold NAME as a reader of a reader-writer lock (shared with other readers).
    #[arg(long, conflicts_with = "write")]
    read: bool,
    /// NAME is a comma-separated set of locks, taken all or nothing.
    #[arg(long, conflicts_with_all = ["read", "write", "permits"])]
    all: bool,
    /// Hold NAME as the writer of a reader-writer lock (alone).
    #[arg(long)]
    write: bool,
    /// Time between SIGTERM and SIGKILL when the lock is lost.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    grace: Duration,
    /// The lock name.
    name: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        // Killed by a signal: 128 + n, as shells report it.
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    }
}

/// Signals the command's whole process group (it leads it: see `process_group(0)`).
fn signal_child(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // The whole group; failing that, at least the command itself (a SIGKILL that
        // reached nothing would leave us waiting for it forever). Either may be gone in
        // the meantime: nothing to do then.
        if kill(Pid::from_raw(-pid), sig).is_err() {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// The signals passed on to the command.
pub(crate) struct Forwarded {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Forwarded {
    /// Listening starts before the lock is taken, so no signal in between kills redfence
    /// (and leaves the command running unsupervised).
    pub(crate) fn new() -> Option<Self> {
        let kinds = [
            (Signal::SIGINT, SignalKind::interrupt()),
            (Signal::SIGTERM, SignalKind::terminate()),
            (Signal::SIGHUP, SignalKind::hangup()),
            (Signal::SIGQUIT, SignalKind::quit()),
        ];
        let mut streams = Vec::new();
        for (sig, kind) in kinds {
            streams.push((sig, signal(kind).ok()?));
        }
        Some(Self { streams })
    }

    /// The next signal received.
    async fn next(&mut self) -> Signal {
        let waits = self
            .streams
            .iter_mut()
            .map(|(sig, s)| Box::pin(async move { s.recv().await.map(|_| *sig) }));
        match futures::future::select_all(waits).await.0 {
            Some(sig) => sig,
            None => std::future::pending().await,
        }
    }
}

/// How long redfence waits, before it exits, for releases still on their way to slow
/// nodes (each is bounded by the node timeout); the keys of any left expire with the TTL.
pub(crate) const CLEANUP: Duration = Duration::from_secs(1);

pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let Some(forwarded) = Forwarded::new() else {
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
    let code = run_with(&client, args, forwarded).await;
    // The runtime ends with this process: let the releases that are still under way
    // reach their nodes first.
    let _ = client.shutdown(CLEANUP).await;
    code
}

async fn run_with(client: &Client, args: RunArgs, mut forwarded: Forwarded) -> ExitCode {
    // A zero wait means one attempt.
    let wait = args.wait.max(Duration::from_millis(1));
    let options = acquire_options(wait, args.max_hold);
    // On a terminal, a wait of more than a second says what it waits for.
    let what = format!("{:?} (up to {wait:?})", args.name);
    let held = style::waiting(&what, async {
        match (args.permits, args.read, args.write) {
            (Some(k), ..) => match client.semaphore(&args.name, k) {
                Ok(sem) => sem
                    .acquire_with(options)
                    .await
                    .map(|p| (p.slot(), p.into_guard()))
                    .map(|(slot, g)| (g, Some(slot.to_string()))),
                Err(e) => Err(e),
            },
            (None, true, _) => match client.rwlock(&args.name) {
                Ok(l) => l.read_with(options).await.map(|r| (r.into_guard(), None)),
                Err(e) => Err(e),
            },
            (None, _, true) => match client.rwlock(&args.name) {
                Ok(l) => l.write_with(options).await.map(|w| (w.into_guard(), None)),
                Err(e) => Err(e),
            },
            (None, false, false) if args.all => {
                let names: Vec<&str> = args.name.split(',').collect();
                client.acquire_all_with(&names, options).await.map(|set| {
                    let tokens: Vec<String> = set
                        .tokens()
                        .iter()
                        .map(|(name, token)| format!("{name}={token}"))
                        .collect();
                    (set.into_guard(), Some(tokens.join(",")))
                })
            }
            (None, false, false) => client
                .acquire_with(&args.name, options)
                .await
                .map(|g| (g, None)),
        }
    })
    .await;
    let (guard, extra) = match held {
        Ok(held) => held,
        Err(e) => {
            let (status, msg) = acquire_failure(&args.name, &e);
            let msg = match (args.permits, &e) {
                (
                    Some(k),
                    Error::WaitTimeout {
                        last_error: None,
                        waited,
                        ..
                    },
                ) => format!(
                    "all {k} permits of {:?} are held (waited {waited:.1?})",
                    args.name
                ),
                _ => msg,
            };
            return fail(status, msg);
        }
    };
    let mut env = Vec::new();
    match extra {
        Some(slot) if args.permits.is_some() => env.push(("REDFENCE_SLOT", slot)),
        Some(tokens) => env.push(("REDFENCE_TOKENS", tokens)),
        None => {}
    }
    if args.read || args.write {
        let mode = if args.read { "read" } else { "write" };
        env.push(("REDFENCE_MODE", mode.to_owned()));
    }
    run_held(guard, &env, &args.command, args.grace, &mut forwarded)
        .await
        .0
}

/// Runs `command` while `guard` is held (with `env` besides the lock's own variables),
/// and releases it after; the exit code, and whether the lock was lost.
pub(crate) async fn run_held(
    guard: LockGuard,
    env: &[(&str, String)],
    command: &[String],
    grace: Duration,
    forwarded: &mut Forwarded,
) -> (ExitCode, bool) {
    let Some((program, rest)) = command.split_first() else {
        let _ = guard.release().await;
        return (fail(exit::USAGE, "no command after --"), false);
    };
    let mut command = Command::new(program);
    for (k, v) in env {
        command.env(k, v);
    }
    let spawned = command
        .args(rest)
        .env("REDFENCE_LOCK", guard.resource())
        .env("REDFENCE_TOKEN", guard.token().to_string())
        .env(
            "REDFENCE_VALIDITY_MS",
            guard.validity().as_millis().to_string(),
        )
        .stdin(Stdio::inherit())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            let status = if e.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::NOT_EXECUTABLE
            };
            return (fail(status, format!("cannot run {program:?}: {e}")), false);
        }
    };
    let name = guard.resource().to_owned();
    supervise(&mut child, guard, &name, grace, forwarded).await
}

/// Waits for the command, passing on signals, and stops it if the lock is lost.
async fn supervise(
    child: &mut Child,
    guard: LockGuard,
    name: &str,
    grace: Duration,
    forwarded: &mut Forwarded,
) -> (ExitCode, bool) {
    let outcome = loop {
        tokio::select! {
            // A loss wins a tie with the command's exit: its status would hide it.
            biased;
            reason = guard.lost() => break Err(reason.to_string()),
            status = child.wait() => break Ok(status),
            sig = forwarded.next() => signal_child(child, sig),
        }
    };
    match outcome {
        Ok(status) => {
            let code = match status {
                Ok(s) => status_code(s),
                Err(e) => return (fail(1, format!("lost track of the command: {e}")), false),
            };
            match guard.release().await {
                // A majority said the lock was no longer ours: the command ran (at
                // least in part) without it.
                Ok(false) => (
                    fail(
                        exit::LOST,
                        format!("lock {name:?} was lost while the command ran (found at release)"),
                    ),
                    true,
                ),
                Ok(true) | Err(_) => (ExitCode::from(code), false),
            }
        }
        Err(reason) => {
            eprintln!("redfence: lock {name:?} lost ({reason}); stopping the command");
            // The group must be gone before another holder can start: never wait past
            // what is left of the validity.
            let grace = grace.min(guard.deadline().saturating_duration_since(redfence::now()));
            signal_child(child, Signal::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                signal_child(child, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            let _ = guard.release().await;
            (ExitCode::from(exit::LOST), true)
        }
    }
}
