//! `redfence status NAME`: every node's view of a lock, a semaphore (`--permits K`) or a
//! reader-writer lock (`--rw`), with the node settings that break a promise; `--watch`
//! prints a line each time that view changes hands.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use redfence::{Client, LockStatus, RwLockStatus};

use crate::ops::{json, lease_left};
use crate::{Chain, NodesArg, exit, fail, parse_duration, style};

#[derive(Args)]
pub(crate) struct StatusArgs {
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
    /// NAME is a counting semaphore of K permits (as in `run --permits K`): show each
    /// permit's holder.
    #[arg(long, value_name = "K", conflicts_with = "rw")]
    permits: Option<usize>,
    /// NAME is a reader-writer lock (as in `run --read`/`--write`): show its writer, its
    /// readers and a waiting writer.
    #[arg(long)]
    rw: bool,
    /// The lock name.
    name: String,
}

/// What `status` looks at.
enum Target {
    Lock,
    Semaphore(redfence::Semaphore),
    RwLock(redfence::RwLock),
}

/// One look at the target, as the table, the JSON object, and the line `--watch` prints
/// (with the key that says whether it changed hands since the last look).
struct View {
    table: String,
    json: String,
    line: String,
    key: String,
    /// The nodes that did not answer.
    down: Vec<String>,
}

/// The nodes of `s` that did not answer.
fn down(s: &LockStatus) -> Vec<String> {
    s.nodes
        .iter()
        .filter(|v| v.state.is_err())
        .map(|v| v.node.clone())
        .collect()
}

pub(crate) async fn status(args: StatusArgs) -> ExitCode {
    let client = match Client::builder().nodes(args.nodes.nodes).build() {
        Ok(c) => c,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    let target = match (args.permits, args.rw) {
        (Some(k), _) => client.semaphore(&args.name, k).map(Target::Semaphore),
        (None, true) => client.rwlock(&args.name).map(Target::RwLock),
        (None, false) => Ok(Target::Lock),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return fail(exit::USAGE, Chain(&e)),
    };
    if args.watch {
        return watch(&client, &target, &args.name, args.poll, args.json).await;
    }
    let view = match look(&client, &target, &args.name).await {
        Ok(v) => v,
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
        for e in &check.unreadable {
            notes.push((check.node.clone(), e.to_string()));
        }
    }
    if args.json {
        let warnings: Vec<String> = warnings
            .iter()
            .map(|(node, w)| format!("{{\"node\":{},\"warning\":{}}}", json(node), json(w)))
            .collect();
        // The view's object, closed with the warnings.
        let open = view.json.strip_suffix('}').unwrap_or(&view.json);
        println!("{open},\"warnings\":[{}]}}", warnings.join(","));
        return ExitCode::SUCCESS;
    }
    print!("{}", view.table);
    let paint = style::Paint::stdout();
    for (node, w) in &warnings {
        println!("{} node {node}: {w}", paint.warn("warning:"));
    }
    // A node that did not answer is in the table already.
    for (node, e) in notes.iter().filter(|(n, _)| !view.down.contains(n)) {
        println!("note: node {node}: settings not readable: {e}");
    }
    ExitCode::SUCCESS
}

/// One look at `target`.
async fn look(client: &Client, target: &Target, name: &str) -> Result<View, redfence::Error> {
    let paint = style::Paint::stdout();
    Ok(match target {
        Target::Lock => lock_view(&client.inspect(name).await?, paint),
        Target::Semaphore(s) => semaphore_view(s, &s.inspect().await, paint),
        Target::RwLock(l) => rw_view(&l.inspect().await, paint),
    })
}

/// An owner id as shown in tables and lines: its first 8 characters.
fn short(owner: &str) -> String {
    owner.chars().take(8).collect()
}

fn or_null(v: Option<String>) -> String {
    v.unwrap_or_else(|| "null".into())
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// On how many nodes the lock's holder holds it.
fn held_on(s: &LockStatus) -> usize {
    s.nodes
        .iter()
        .filter(|v| {
            v.state
                .as_ref()
                .is_ok_and(|l| l.owner.is_some() && l.owner == s.holder)
        })
        .count()
}

/// A mutex (or a semaphore's slot, or a reader-writer lock's writer key).
fn lock_view(status: &LockStatus, paint: style::Paint) -> View {
    use std::fmt::Write;
    let verdict = match (&status.holder, status.newest_token()) {
        (Some(h), Some(t)) => format!("held by {} (newest token {t})", short(h)),
        (Some(h), None) => format!("held by {}", short(h)),
        (None, _) => "not held by a quorum".to_owned(),
    };
    let mut table = format!(
        "lock {:?} on {} nodes (quorum {}): {}\n",
        status.resource,
        status.nodes.len(),
        status.quorum,
        paint.bold(&verdict)
    );
    let _ = writeln!(
        table,
        "{:<22} {:<12} {:<9} {:>8} {:>10}",
        "NODE", "STATE", "OWNER", "TTL", "FENCE"
    );
    for v in &status.nodes {
        let _ = match &v.state {
            Ok(l) => writeln!(
                table,
                "{:<22} {} {:<9} {:>8} {:>10}",
                v.node,
                paint.good(&format!("{:<12}", "up")),
                or_dash(l.owner.as_deref().map(short)),
                or_dash(l.ttl.map(|t| format!("{:.1}s", t.as_secs_f64()))),
                or_dash(l.fence.map(|f| f.to_string())),
            ),
            Err(e) => writeln!(
                table,
                "{:<22} {} {e}",
                v.node,
                paint.bad(&format!("{:<12}", "unreachable"))
            ),
        };
    }
    let token = status.newest_token();
    let on = held_on(status);
    let line = match &status.holder {
        Some(h) => format!(
            "held by {} (newest token {}) on {on} of {} nodes",
            short(h),
            or_dash(token.map(|t| t.to_string())),
            status.nodes.len()
        ),
        None => format!(
            "not held by a quorum (newest token {})",
            or_dash(token.map(|t| t.to_string()))
        ),
    };
    View {
        table,
        json: lock_json(status),
        line,
        key: format!("{:?} {token:?}", status.holder),
        down: down(status),
    }
}

/// `status --json` of a lock: its holder on a majority, its lease left there, the newest
/// token, each node's view.
fn lock_json(status: &LockStatus) -> String {
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
    format!(
        "{{\"lock\":{},\"quorum\":{},\"holder\":{},\"token\":{},\"on\":{},\"left_ms\":{},\"nodes\":[{}]}}",
        json(&status.resource),
        status.quorum,
        or_null(status.holder.as_deref().map(json)),
        or_null(status.newest_token().map(|t| t.to_string())),
        held_on(status),
        or_null(lease_left(status).map(|d| d.as_millis().to_string())),
        nodes.join(","),
    )
}

/// A semaphore: a line per permit (its slot's holder, newest token, lease left, on how
/// many nodes), then the nodes that did not answer.
fn semaphore_view(sem: &redfence::Semaphore, slots: &[LockStatus], paint: style::Paint) -> View {
    use std::fmt::Write;
    let held = slots.iter().filter(|s| s.is_held()).count();
    let (nodes, quorum) = slots.first().map_or((0, 0), |s| (s.nodes.len(), s.quorum));
    let mut table = format!(
        "semaphore {:?} on {nodes} nodes (quorum {quorum}): {}\n",
        sem.name(),
        paint.bold(&format!("{held} of {} permits held", sem.permits()))
    );
    let _ = writeln!(
        table,
        "{:<5} {:<9} {:>10} {:>8} {:>6}",
        "SLOT", "HOLDER", "TOKEN", "LEFT", "ON"
    );
    for (slot, s) in slots.iter().enumerate() {
        let _ = writeln!(
            table,
            "{slot:<5} {:<9} {:>10} {:>8} {:>6}",
            or_dash(s.holder.as_deref().map(short)),
            or_dash(s.newest_token().map(|t| t.to_string())),
            or_dash(lease_left(s).map(|t| format!("{:.1}s", t.as_secs_f64()))),
            format!("{}/{nodes}", held_on(s)),
        );
    }
    // A node down is down for every slot: named once, with the first slot's error.
    if let Some(first) = slots.first() {
        for v in &first.nodes {
            if let Err(e) = &v.state {
                let _ = writeln!(
                    table,
                    "{:<22} {} {e}",
                    v.node,
                    paint.bad(&format!("{:<12}", "unreachable"))
                );
            }
        }
    }
    let holders: Vec<String> = slots
        .iter()
        .enumerate()
        .filter_map(|(slot, s)| {
            let h = s.holder.as_deref()?;
            Some(format!(
                "#{slot} {} (token {})",
                short(h),
                or_dash(s.newest_token().map(|t| t.to_string()))
            ))
        })
        .collect();
    let line = if holders.is_empty() {
        format!("0 of {} permits held", sem.permits())
    } else {
        format!(
            "{held} of {} permits held: {}",
            sem.permits(),
            holders.join(", ")
        )
    };
    let slots_json: Vec<String> = slots.iter().map(lock_json).collect();
    View {
        table,
        json: format!(
            "{{\"semaphore\":{},\"permits\":{},\"quorum\":{quorum},\"held\":{held},\"slots\":[{}]}}",
            json(sem.name()),
            sem.permits(),
            slots_json.join(",")
        ),
        line,
        key: format!(
            "{:?}",
            slots
                .iter()
                .map(|s| (&s.holder, s.newest_token()))
                .collect::<Vec<_>>()
        ),
        down: slots.first().map(down).unwrap_or_default(),
    }
}

/// A reader-writer lock: its writer, its readers and a waiting writer on a quorum, and a
/// line per node.
fn rw_view(status: &RwLockStatus, paint: style::Paint) -> View {
    use std::fmt::Write;
    let w = &status.writer;
    let token = w.newest_token();
    let token_text = or_dash(token.map(|t| t.to_string()));
    let mut verdict = match (&w.holder, status.readers.len()) {
        (Some(h), _) => format!("written by {} (newest token {token_text})", short(h)),
        (None, 0) => format!("free (newest writer token {token_text})"),
        (None, n) => format!("read by {n} (newest writer token {token_text})"),
    };
    if let Some(waiting) = &status.waiting_writer {
        let _ = write!(
            verdict,
            "; writer {} waits, new readers refused",
            short(waiting)
        );
    }
    let mut table = format!(
        "rwlock {:?} on {} nodes (quorum {}): {}\n",
        w.resource,
        w.nodes.len(),
        w.quorum,
        paint.bold(&verdict)
    );
    let _ = writeln!(
        table,
        "{:<22} {:<12} {:<9} {:>8} {:>10} {:>7} WAITING",
        "NODE", "STATE", "WRITER", "TTL", "FENCE", "READERS"
    );
    for (v, r) in w.nodes.iter().zip(&status.nodes) {
        let _ = match (&v.state, &r.state) {
            (Ok(l), Ok(rs)) => writeln!(
                table,
                "{:<22} {} {:<9} {:>8} {:>10} {:>7} {}",
                v.node,
                paint.good(&format!("{:<12}", "up")),
                or_dash(l.owner.as_deref().map(short)),
                or_dash(l.ttl.map(|t| format!("{:.1}s", t.as_secs_f64()))),
                or_dash(l.fence.map(|f| f.to_string())),
                rs.readers.len(),
                or_dash(rs.waiting_writer.as_deref().map(short)),
            ),
            (Err(e), _) | (_, Err(e)) => writeln!(
                table,
                "{:<22} {} {e}",
                v.node,
                paint.bad(&format!("{:<12}", "unreachable"))
            ),
        };
    }
    for id in &status.readers {
        let _ = writeln!(table, "reader {id}");
    }
    let readers: Vec<String> = status.readers.iter().map(|r| json(r)).collect();
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|v| match &v.state {
            Ok(s) => {
                let readers: Vec<String> = s
                    .readers
                    .iter()
                    .map(|(id, left)| {
                        format!("{{\"id\":{},\"ttl_ms\":{}}}", json(id), left.as_millis())
                    })
                    .collect();
                format!(
                    "{{\"node\":{},\"up\":true,\"readers\":[{}],\"waiting_writer\":{}}}",
                    json(&v.node),
                    readers.join(","),
                    or_null(s.waiting_writer.as_deref().map(json))
                )
            }
            Err(e) => format!(
                "{{\"node\":{},\"up\":false,\"error\":{}}}",
                json(&v.node),
                json(&e.to_string())
            ),
        })
        .collect();
    View {
        table,
        json: format!(
            "{{\"rwlock\":{},\"quorum\":{},\"writer\":{},\"readers\":[{}],\"waiting_writer\":{},\"reader_nodes\":[{}]}}",
            json(&w.resource),
            w.quorum,
            lock_json(w),
            readers.join(","),
            or_null(status.waiting_writer.as_deref().map(json)),
            nodes.join(","),
        ),
        line: verdict,
        key: format!(
            "{:?} {token:?} {:?} {:?}",
            w.holder, status.readers, status.waiting_writer
        ),
        down: w
            .nodes
            .iter()
            .zip(&status.nodes)
            .filter(|(v, r)| v.state.is_err() || r.state.is_err())
            .map(|(v, _)| v.node.clone())
            .collect(),
    }
}

/// `status --watch`: one line per change of hands, read every `poll`: the time, then the
/// view's line (or, with `--json`, its object with the time as `at_s`).
async fn watch(
    client: &Client,
    target: &Target,
    name: &str,
    poll: Duration,
    as_json: bool,
) -> ExitCode {
    let mut last = None;
    let started = std::time::Instant::now();
    loop {
        let view = match look(client, target, name).await {
            Ok(v) => v,
            Err(e) => return fail(exit::USAGE, Chain(&e)),
        };
        if last.as_ref() != Some(&view.key) {
            let at = started.elapsed().as_secs_f64();
            if as_json {
                let rest = view.json.strip_prefix('{').unwrap_or(&view.json);
                println!("{{\"at_s\":{at:.3},{rest}");
            } else {
                println!("{at:>8.3}s {}", view.line);
            }
            last = Some(view.key);
        }
        tokio::time::sleep(poll).await;
    }
}
