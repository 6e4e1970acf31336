//! `redfence demo`: a local 5-node cluster, workers contending for one lock and writing
//! through the fenced store, a node killed and restarted, another frozen, a holder paused
//! past its lease; shown live, then checked.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use redfence::fence::{RedisFencedStore, Verdict};
use redfence::testkit::history::{Check, Event, History};
use redfence::testkit::{Cluster, Persistence};
use redfence::{AcquireOptions, Client, LockGuard};

use crate::{Chain, fail};

const LOCK: &str = "ledger";
const WORKERS: usize = 4;
const TTL: Duration = Duration::from_secs(2);

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// How long the demo runs, in seconds (10 to 600).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(10..=600))]
    seconds: u64,
    /// Plain lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

#[derive(Default)]
struct Board {
    nodes: [&'static str; 5],
    holder: Option<(usize, u64, Instant, bool)>,
    acquisitions: usize,
    accepted: usize,
    rejected: usize,
    events: VecDeque<String>,
}

struct Demo {
    start: Instant,
    tty: bool,
    board: Mutex<Board>,
    history: History,
    store: RedisFencedStore,
    stop: AtomicBool,
    pause_next: AtomicBool,
}

impl Demo {
    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs an event: into the live view on a terminal, as a line otherwise.
    fn event(&self, text: String) {
        let line = format!("{:>6.1}s  {text}", self.start.elapsed().as_secs_f64());
        if self.tty {
            let mut b = self.board();
            b.events.push_back(line);
            while b.events.len() > 8 {
                b.events.pop_front();
            }
        } else {
            println!("{line}");
        }
    }

    fn render(&self) {
        let b = self.board();
        let mut out = String::from("\x1b[H");
        let mut line = |s: String| {
            // 80 columns at most; clear the rest of the line.
            let s: String = s.chars().take(79).collect();
            out.push_str(&s);
            out.push_str("\x1b[K\n");
        };
        line(format!(
            "redfence demo: 5 nodes, {WORKERS} workers, one lock ({LOCK:?})        t = {:.1}s",
            self.start.elapsed().as_secs_f64()
        ));
        line(String::new());
        let nodes: Vec<String> = b
            .nodes
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}:{s}", i + 1))
            .collect();
        line(format!(" nodes    {}", nodes.join("  ")));
        line(match b.holder {
            Some((w, t, deadline, paused)) => format!(
                " holder   worker {w}   token {t}   valid {:.2}s{}",
                deadline
                    .saturating_duration_since(redfence::now())
                    .as_secs_f64(),
                if paused {
                    "   (stalled: will wake up too late)"
                } else {
                    ""
                }
            ),
            None => " holder   -".to_owned(),
        });
        line(format!(
            " writes   {} accepted   {} stale rejected by the fence   ({} acquisitions)",
            b.accepted, b.rejected, b.acquisitions
        ));
        line(format!(" {}", "-".repeat(77)));
        for e in &b.events {
            line(format!(" {e}"));
        }
        for _ in b.events.len()..8 {
            line(String::new());
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

pub(crate) async fn demo(args: DemoArgs) -> ExitCode {
    let tty = std::io::stdout().is_terminal() && !args.plain;
    let started = blocking(|| {
        let nodes = Cluster::builder()
            .persistence(Persistence::AofAlways)
            .start()?;
        let storage = Cluster::start(1)?;
        Ok::<_, redfence::testkit::Error>((nodes, storage))
    })
    .await;
    let (cluster, storage) = match started {
        Ok(c) => c,
        Err(e) => return fail(1, format!("the demo needs redis-server: {}", Chain(&e))),
    };
    let cluster = Arc::new(cluster);
    let store = match RedisFencedStore::connect(&storage.url(0)).await {
        Ok(s) => s.with_audit_log(),
        Err(e) => return fail(1, Chain(&e)),
    };
    let demo = Arc::new(Demo {
        start: Instant::now(),
        tty,
        board: Mutex::new(Board {
            nodes: ["up"; 5],
            ..Board::default()
        }),
        history: History::new(),
        store,
        stop: AtomicBool::new(false),
        pause_next: AtomicBool::new(false),
    });
    if tty {
        print!("\x1b[2J");
    } else {
        println!(
            "redfence demo: 5 local redis-server nodes (AOF), {WORKERS} workers contending for {LOCK:?}"
        );
    }
    let mut tasks = Vec::new();
    for w in 1..=WORKERS {
        let client = cluster
            .client_builder()
            .ttl(TTL)
            .node_timeout(Duration::from_millis(150))
            .retry_delay(Duration::from_millis(20))
            .retry_jitter(Duration::from_millis(10))
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => return fail(1, Chain(&e)),
        };
        tasks.push(tokio::spawn(worker(w, client, demo.clone())));
    }
    let painter = tty.then(|| {
        let demo = demo.clone();
        tokio::spawn(async move {
            while !demo.stop.load(Ordering::SeqCst) {
                demo.render();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });

    // Ctrl-C, a closed terminal or a kill must not leave the nodes running: stop the
    // workers and fall through to the end, where dropping the clusters kills them.
    let interrupted = tokio::select! {
        () = script(&cluster, &demo, Duration::from_secs(args.seconds)) => false,
        () = interrupted() => true,
    };
    demo.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(p) = painter {
        let _ = p.await;
        demo.render();
    }
    if interrupted {
        // The clusters drop (and their nodes die) on the way out.
        return fail(130, "interrupted; the demo's nodes are stopped");
    }
    summary(&demo).await
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (never, if they cannot be watched).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ];
    let mut streams: Vec<_> = kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
    if streams.is_empty() {
        return std::future::pending().await;
    }
    let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
    futures::future::select_all(waits).await;
}

/// The faults, at fixed points of the run.
async fn script(cluster: &Arc<Cluster>, demo: &Demo, length: Duration) {
    let at = |f: f64| demo.start + length.mul_f64(f);
    let set = |i: usize, s: &'static str| demo.board().nodes[i] = s;
    let step = |f: f64| tokio::time::sleep_until(at(f).into());
    let record = |what: String| {
        demo.history.record(Event::Nemesis {
            at: Instant::now(),
            what: what.clone(),
            breaks_assumptions_until: None,
        });
        demo.event(what);
    };

    step(0.2).await;
    let c = cluster.clone();
    if blocking(move || c.kill(1)).await.is_ok() {
        set(1, "KILLED");
        record("kill -9 node 2: the others carry on (3 of 5 is a quorum)".into());
    }
    step(0.4).await;
    let c = cluster.clone();
    if blocking(move || c.restart(1)).await.is_ok() {
        set(1, "up");
        record("node 2 restarted; AOF kept its locks and fence counters".into());
    }
    step(0.5).await;
    if cluster.pause(3).is_ok() {
        set(3, "FROZEN");
        record("SIGSTOP node 4: it accepts connections but never answers".into());
    }
    step(0.65).await;
    if cluster.resume(3).is_ok() {
        set(3, "up");
        record("SIGCONT node 4".into());
    }
    step(0.7).await;
    demo.pause_next.store(true, Ordering::SeqCst);
    record("the next holder will stall (think GC pause) past its lease".into());
    step(1.0).await;
}

async fn worker(id: usize, client: Client, demo: Arc<Demo>) {
    while !demo.stop.load(Ordering::SeqCst) {
        let paused = demo.pause_next.swap(false, Ordering::SeqCst);
        let options = AcquireOptions::new()
            .wait(Duration::from_secs(3))
            .watchdog(!paused);
        let started = Instant::now();
        let guard = match client.acquire_with(LOCK, options).await {
            Ok(g) => g,
            Err(e) => {
                let why = match &e {
                    redfence::Error::WaitTimeout {
                        last_error: None,
                        waited,
                        ..
                    } => {
                        format!(
                            "gave up after {:.1}s: the lock stayed busy",
                            waited.as_secs_f64()
                        )
                    }
                    other => first_words(&other.to_string()),
                };
                demo.event(format!("worker {id}: not acquired: {why}"));
                if paused {
                    demo.pause_next.store(true, Ordering::SeqCst);
                }
                continue;
            }
        };
        let token = guard.token();
        demo.history.record(Event::Acquired {
            worker: id,
            resource: LOCK.into(),
            token,
            started,
            acquired: Instant::now(),
        });
        {
            let mut b = demo.board();
            b.acquisitions += 1;
            b.holder = Some((id, token.get(), guard.deadline(), paused));
        }
        if !demo.tty && !paused {
            println!(
                "{:>6.1}s  worker {id} holds it: token {token}, valid {:.2}s",
                demo.start.elapsed().as_secs_f64(),
                guard.validity().as_secs_f64()
            );
        }
        if paused {
            stalled(id, &guard, &demo).await;
        } else {
            for step in 0..2 {
                write(id, &guard, &demo, format!("worker {id} step {step}"), false).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        demo.history.record(Event::Ended {
            worker: id,
            resource: LOCK.into(),
            token,
            at: Instant::now(),
            deadline: guard.deadline(),
        });
        {
            let mut b = demo.board();
            if b.holder.is_some_and(|h| h.1 == token.get()) {
                b.holder = None;
            }
        }
        let _ = guard.release().await;
    }
}

/// Stalls past the lease until a newer holder has written, then writes anyway.
async fn stalled(id: usize, guard: &LockGuard, demo: &Demo) {
    let token = guard.token();
    demo.event(format!(
        "worker {id} (token {token}) stalls inside its critical section"
    ));
    tokio::time::sleep_until((guard.deadline() + Duration::from_millis(50)).into()).await;
    let give_up = Instant::now() + 3 * TTL;
    while Instant::now() < give_up {
        if let Ok(Some(f)) = demo.store.read(LOCK).await
            && f.token > token
        {
            demo.event(format!(
                "worker {id} wakes up after its lease; token {} has written since",
                f.token
            ));
            write(
                id,
                guard,
                demo,
                format!("late write from worker {id}"),
                true,
            )
            .await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(id: usize, guard: &LockGuard, demo: &Demo, value: String, stale: bool) {
    let token = guard.token();
    let verdict = match demo.store.write(LOCK, token, value.as_bytes()).await {
        Ok(v) => v,
        Err(e) => {
            demo.event(format!("worker {id}: store error: {e}"));
            return;
        }
    };
    demo.history.record(Event::Write {
        worker: id,
        resource: LOCK.into(),
        token,
        verdict,
        stale_by_design: stale,
    });
    let mut b = demo.board();
    match verdict {
        Verdict::Accepted => b.accepted += 1,
        Verdict::Rejected { current, .. } => {
            b.rejected += 1;
            drop(b);
            demo.event(format!(
                "worker {id}'s write with token {token} REJECTED: the store has seen {current}"
            ));
        }
    }
}

fn first_words(s: &str) -> String {
    s.chars().take(60).collect()
}

async fn summary(demo: &Demo) -> ExitCode {
    let log = match demo.store.accepted_log(LOCK).await {
        Ok(l) => l,
        Err(e) => return fail(1, Chain(&e)),
    };
    let report = demo.history.check(&HashMap::from([(LOCK.to_owned(), log)]));
    let mark = |c: Check| {
        if report.count(c) == 0 {
            "ok"
        } else {
            "VIOLATED"
        }
    };
    println!();
    println!(
        "What was checked, over {} acquisitions:",
        report.acquisitions
    );
    println!(
        "  tokens strictly increasing across holders ........... {}",
        mark(Check::TokenOrder)
    );
    println!(
        "  store accepted tokens in non-decreasing order ....... {}",
        mark(Check::StoreOrder)
    );
    println!(
        "  no two holders valid at the same time ............... {}",
        mark(Check::Exclusion)
    );
    println!(
        "  stale writes accepted: {} (rejected by the fence: {}) . {}",
        report.stale_accepted,
        report.writes_rejected,
        mark(Check::StaleWrite)
    );
    if report.is_clean() {
        println!("All promises held.");
        ExitCode::SUCCESS
    } else {
        println!("{report}");
        ExitCode::from(1)
    }
}
