//! `redfence list [PATTERN]`: the locks held now; `redfence break NAME`: release a lock
//! whose owner died.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use redfence::Client;
use redfence::LockStatus;

use crate::{Chain, NodesArg, exit, fail};

#[derive(Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    json: bool,
    /// Lock names to list, a glob (`*`, `?`, `[...]`).
    #[arg(default_value = "*")]
    pattern: String,
}

#[derive(Args)]
pub(crate) struct BreakArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long)]
    yes: bool,
    /// The lock name.
    name: String,
}

fn client(nodes: NodesArg) -> Result<Client, ExitCode> {
    Client::builder()
        .nodes(nodes.nodes)
        .build()
        .map_err(|e| fail(exit::USAGE, Chain(&e)))
}

/// The holder's remaining lease on a majority: the quorum-th longest among its nodes.
pub(crate) fn lease_left(s: &LockStatus) -> Option<std::time::Duration> {
    let holder = s.holder.as_deref()?;
    let mut ttls: Vec<_> = s
        .nodes
        .iter()
        .filter_map(|v| v.state.as_ref().ok())
        .filter(|l| l.owner.as_deref() == Some(holder))
        .filter_map(|l| l.ttl)
        .collect();
    ttls.sort_unstable_by(|a, b| b.cmp(a));
    ttls.get(s.quorum.checked_sub(1)?).copied()
}

/// A JSON string literal.
pub(crate) fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) async fn list(args: ListArgs) -> ExitCode {
    let client = match client(args.nodes) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let held = match client.list_locks(&args.pattern).await {
        Ok(h) => h,
        Err(e) => return fail(exit::NO_QUORUM, Chain(&e)),
    };
    let tty = std::io::stdout().is_terminal();
    if !args.json && tty {
        println!(
            "{:<32} {:<34} {:>10} {:>9}",
            "LOCK", "HOLDER", "TOKEN", "LEFT"
        );
    }
    for s in &held {
        let holder = s.holder.as_deref().unwrap_or("-");
        let token = s.newest_token().map_or("-".into(), |t| t.to_string());
        let left = lease_left(s).map_or(0, |d| d.as_millis());
        if args.json {
            println!(
                "{{\"lock\":{},\"holder\":{},\"token\":{},\"left_ms\":{left}}}",
                json(&s.resource),
                json(holder),
                s.newest_token().map_or("null".into(), |t| t.to_string()),
            );
        } else {
            // Names with spaces stay one field: quoted, as in the other commands' output.
            println!(
                "{:<32} {holder:<34} {token:>10} {:>8.1}s",
                format!("{:?}", s.resource),
                left as f64 / 1000.0
            );
        }
    }
    if !args.json && tty && held.is_empty() {
        println!(
            "(no lock matching {:?} is held on a majority)",
            args.pattern
        );
    }
    ExitCode::SUCCESS
}

pub(crate) async fn break_lock(args: BreakArgs) -> ExitCode {
    let client = match client(args.nodes) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let status = match client.inspect(&args.name).await {
        Ok(s) => s,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    // Every owner found on any node: a dead owner may hold it on a minority only.
    let mut owners: Vec<(&str, usize)> = Vec::new();
    for owner in status
        .nodes
        .iter()
        .filter_map(|v| v.state.as_ref().ok()?.owner.as_deref())
    {
        match owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, n)) => *n += 1,
            None => owners.push((owner, 1)),
        }
    }
    if owners.is_empty() {
        println!("lock {:?} is not held on any reachable node", args.name);
        return ExitCode::SUCCESS;
    }
    let newest = status.newest_token().map_or("-".into(), |t| t.to_string());
    for (owner, on) in &owners {
        println!(
            "lock {:?} held by owner {owner} on {on} of {} nodes (newest token {newest})",
            args.name,
            status.nodes.len()
        );
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return fail(
                exit::USAGE,
                "not breaking it: stdin is not a terminal to confirm on (pass --yes)",
            );
        }
        print!("break it? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("left alone");
            return ExitCode::SUCCESS;
        }
    }
    for (owner, _) in &owners {
        match client.force_release(&args.name, owner).await {
            Ok(n) => println!(
                "released owner {owner}'s lock on {n} nodes; the next holder's token is above {newest}"
            ),
            Err(e) => return fail(exit::NO_QUORUM, Chain(&e)),
        }
    }
    ExitCode::SUCCESS
}
