//! `redfence run NAME -- CMD`: hold a lock while a command runs.

use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redfence::{Client, LockGuard};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::{NodesArg, acquire_failure, acquire_options, exit, fail, parse_duration};

pub(crate) const AFTER_HELP: &str = "\
The command runs with REDFENCE_LOCK (the name), REDFENCE_TOKEN (the fencing token: pass
it to every write) and REDFENCE_VALIDITY_MS in its environment. A watchdog keeps the
lock alive while it runs; it is released when the command exits, and redfence exits
with the command's status. If the lock is lost, the command gets SIGTERM, then SIGKILL
after --grace, and redfence exits with 77. SIGINT and SIGTERM sent to redfence are
passed on to the command.

Examples:
  redfence run --nodes redis://h1:6379,redis://h2:6379,redis://h3:6379 reindex -- ./reindex.sh
  redfence run --wait 0s --ttl 30s nightly -- sh -c 'backup --fence \"$REDFENCE_TOKEN\"'";

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

fn signal_child(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // The child may have exited in the meantime: nothing to do then.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let client = match Client::builder()
        .nodes(args.nodes.nodes)
        .ttl(args.ttl)
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(exit::USAGE, e),
    };
    // A zero wait means one attempt.
    let wait = args.wait.max(Duration::from_millis(1));
    let guard = match client
        .acquire_with(&args.name, acquire_options(wait, args.max_hold))
        .await
    {
        Ok(g) => g,
        Err(e) => {
            let (status, msg) = acquire_failure(&args.name, &e);
            return fail(status, msg);
        }
    };
    let Some((program, rest)) = args.command.split_first() else {
        let _ = guard.release().await;
        return fail(exit::USAGE, "no command after --");
    };
    let spawned = Command::new(program)
        .args(rest)
        .env("REDFENCE_LOCK", &args.name)
        .env("REDFENCE_TOKEN", guard.token().to_string())
        .env(
            "REDFENCE_VALIDITY_MS",
            guard.validity().as_millis().to_string(),
        )
        .stdin(Stdio::inherit())
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
            return fail(status, format!("cannot run {program:?}: {e}"));
        }
    };
    supervise(&mut child, guard, &args.name, args.grace).await
}

/// Waits for the command, passing on SIGINT/SIGTERM, and stops it if the lock is lost.
async fn supervise(child: &mut Child, guard: LockGuard, name: &str, grace: Duration) -> ExitCode {
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        signal_child(child, Signal::SIGKILL);
        let _ = guard.release().await;
        return fail(1, "cannot listen for signals");
    };
    let outcome = loop {
        tokio::select! {
            status = child.wait() => break Ok(status),
            reason = guard.lost() => break Err(reason),
            _ = sigint.recv() => signal_child(child, Signal::SIGINT),
            _ = sigterm.recv() => signal_child(child, Signal::SIGTERM),
        }
    };
    match outcome {
        Ok(status) => {
            let _ = guard.release().await;
            match status {
                Ok(s) => ExitCode::from(status_code(s)),
                Err(e) => fail(1, format!("lost track of the command: {e}")),
            }
        }
        Err(reason) => {
            eprintln!("redfence: lock {name:?} lost ({reason}); stopping the command");
            signal_child(child, Signal::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                signal_child(child, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            let _ = guard.release().await;
            ExitCode::from(exit::LOST)
        }
    }
}
