//! Scenario 7 of `scripts/bench.sh`: locks held by watchdogs on one client (TTL 10 s),
//! 1,000, 10,000 and 100,000 with the client's batched renewal, and 10,000 with a task
//! per lock beside it: the client's and the servers' CPU per wall second, the client's
//! live heap per lock, renewals per second, the latest a renewal was sent after its
//! schedule, and losses.
//!
//! A binary of its own because it counts every allocation (a counting global allocator):
//! that costs an atomic add per allocation, which must not weigh on the throughput
//! scenarios of `compare.rs`.
//!
//! `--quick` holds 10 s instead of 60; `--hold SECS` sets it (300 for the five-minute
//! run); `--locks N` runs only the batched configuration with N locks; `--json` adds one
//! JSON object per line.

mod support;

use std::time::{Duration, Instant};

use cap::Cap;
use futures::future::join_all;
use redfence::AcquireOptions;
use redfence::testkit::Cluster;
use support::cpu_of;

/// Counts live heap bytes: RSS keeps what the allocator cached, so it cannot tell a
/// lock's own memory.
#[global_allocator]
static HEAP: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const TTL: Duration = Duration::from_secs(10);

/// One configuration's figures.
struct Held {
    n: usize,
    batched: bool,
    held: usize,
    lost: usize,
    wall: Duration,
    client_cpu: f64,
    servers_cpu: f64,
    heap_per_lock: f64,
    rss_per_lock: f64,
    renewals_per_s: f64,
    latest: Duration,
}

/// `n` locks held by watchdogs (TTL 10 s) on one client for `hold`: the client's and the
/// servers' CPU per wall second, memory per lock, renewals per second, the latest a
/// renewal was sent after its schedule, and losses. `batched`: the client's one renewal
/// task (the default) or a task per lock.
async fn held_locks(cluster: &Cluster, n: usize, batched: bool, hold: Duration) -> Held {
    fn rss_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
    let servers_cpu = || -> Duration {
        (0..cluster.len())
            .filter_map(|i| cluster.pid(i))
            .map(|p| cpu_of(&p.to_string()))
            .sum()
    };
    let c = cluster
        .client_builder()
        .ttl(TTL)
        .batch_renewals(batched)
        .build()
        .unwrap();
    let opts = AcquireOptions::new().watchdog(true);
    let (rss0, heap0) = (rss_kib(), HEAP.allocated());
    let mut guards = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(256) {
        let got = join_all((batch * 256..((batch + 1) * 256).min(n)).map(|i| {
            let (c, opts) = (c.clone(), opts.clone());
            async move {
                c.try_acquire_with(&format!("held-{batched}-{i}"), opts)
                    .await
            }
        }))
        .await;
        guards.extend(got.into_iter().filter_map(|g| g.ok().flatten()));
    }
    let held = guards.len();
    let renewed0 = c.stats().extensions.renewed;
    let (cpu0, servers0, t0) = (cpu_of("self"), servers_cpu(), Instant::now());
    tokio::time::sleep(hold).await;
    let (cpu_used, servers_used, wall) = (
        cpu_of("self") - cpu0,
        servers_cpu() - servers0,
        t0.elapsed(),
    );
    let (rss1, heap1) = (rss_kib(), HEAP.allocated());
    let stats = c.stats();
    let lost = guards
        .iter()
        .filter(|g| !matches!(*g.state().borrow(), redfence::LockState::Held { .. }))
        .count();
    let mut left = guards;
    while !left.is_empty() {
        let rest = left.split_off(left.len().min(256));
        join_all(left.into_iter().map(|g| g.release())).await;
        left = rest;
    }
    c.shutdown(Duration::from_secs(5)).await;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
    Held {
        n,
        batched,
        held,
        lost,
        wall,
        client_cpu: pct(cpu_used),
        servers_cpu: pct(servers_used),
        heap_per_lock: heap1.saturating_sub(heap0) as f64 / held.max(1) as f64,
        rss_per_lock: rss1.saturating_sub(rss0) as f64 * 1024.0 / held.max(1) as f64,
        renewals_per_s: (stats.extensions.renewed - renewed0) as f64 / wall.as_secs_f64(),
        latest: stats.renewal_lateness.max().unwrap_or_default(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let hold = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .map_or(
            Duration::from_secs(if quick { 10 } else { 60 }),
            Duration::from_secs,
        );
    let locks: Option<usize> = args
        .iter()
        .position(|a| a == "--locks")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let cluster = Cluster::start(5).expect("the benchmarks need redis-server");
        let mut rows = Vec::new();
        let configurations = match locks {
            Some(n) => vec![(n, true)],
            None => vec![
                (1_000, true),
                (10_000, false),
                (10_000, true),
                (100_000, true),
            ],
        };
        for (n, batched) in configurations {
            eprintln!("7: {n} held locks, batched renewal {batched}");
            rows.push(held_locks(&cluster, n, batched, hold).await);
        }
        rows
    });
    let per_lock_10k = rows.iter().find(|r| r.n == 10_000 && !r.batched);
    println!(
        "\n{:<28} {:>9} {:>9} {:>11} {:>10} {:>11} {:>10} {:>5}",
        "7 held locks (TTL 10 s)",
        "client %",
        "servers %",
        "heap B/lock",
        "RSS B/lock",
        "renewals/s",
        "latest ms",
        "lost"
    );
    for r in &rows {
        let name = format!(
            "{} {}",
            r.n,
            if r.batched {
                "batched"
            } else {
                "task per lock"
            }
        );
        let ratio = match per_lock_10k {
            Some(p) if r.batched && r.n == p.n => format!(
                "  (client CPU {:.2}x, servers {:.2}x, heap {:.2}x the task per lock)",
                r.client_cpu / p.client_cpu,
                r.servers_cpu / p.servers_cpu,
                r.heap_per_lock / p.heap_per_lock
            ),
            _ => String::new(),
        };
        println!(
            "{name:<28} {:>9.1} {:>9.1} {:>11.0} {:>10.0} {:>11.0} {:>10.1} {:>5}{ratio}",
            r.client_cpu,
            r.servers_cpu,
            r.heap_per_lock,
            r.rss_per_lock,
            r.renewals_per_s,
            r.latest.as_secs_f64() * 1000.0,
            r.lost,
        );
        if json {
            println!(
                "{{\"scenario\":\"7 held locks\",\"locks\":{},\"batched\":{},\"held\":{},\"seconds\":{:.1},\"client_cpu_pct\":{:.2},\"servers_cpu_pct\":{:.2},\"heap_bytes_per_lock\":{:.0},\"rss_bytes_per_lock\":{:.0},\"renewals_per_s\":{:.0},\"latest_renewal_ms\":{:.2},\"lost\":{}}}",
                r.n,
                r.batched,
                r.held,
                r.wall.as_secs_f64(),
                r.client_cpu,
                r.servers_cpu,
                r.heap_per_lock,
                r.rss_per_lock,
                r.renewals_per_s,
                r.latest.as_secs_f64() * 1000.0,
                r.lost
            );
        }
    }
}
