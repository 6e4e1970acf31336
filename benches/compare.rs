//! redfence against a raw parallel SET NX baseline and `rslock`, in one run, on the same
//! local redis-server nodes (started here by the test kit), contenders alternating so that
//! a noisy machine hits them alike. Prints one table with ratios; `--json` adds one JSON
//! object per line. `--quick` runs every scenario briefly.
//!
//!   cargo bench --bench compare -- [--quick] [--json]   (or scripts/bench.sh)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use futures::StreamExt;
use futures::future::join_all;
use redfence::testkit::Cluster;
use redfence::{AcquireOptions, Client};
use redis::aio::MultiplexedConnection;
use support::cpu_of;

const TTL: Duration = Duration::from_secs(10);
/// Permits of the semaphore in scenario 8.
const PERMITS: usize = 4;

// ---------------------------------------------------------------- measurements

#[derive(Default, Clone)]
struct Sample(Vec<Duration>);

impl Sample {
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i].as_secs_f64() * 1e6
    }
    fn max(&self) -> f64 {
        self.0
            .iter()
            .max()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    }
}

struct Row {
    scenario: &'static str,
    contender: &'static str,
    p50_us: f64,
    p99_us: f64,
    ops_per_s: f64,
    /// The acquire's own p50 and p99 (µs), where the scenario times it apart.
    acquire_us: Option<(f64, f64)>,
    extra: String,
}

// ---------------------------------------------------------------- contenders

/// The practical limit: parallel `SET NX PX` and compare-and-delete over multiplexed
/// connections; no token, no retries, no early decision.
#[derive(Clone)]
struct Raw {
    conns: Vec<MultiplexedConnection>,
    /// SHA1 of `RAW_RELEASE`, loaded on every node: `EVALSHA` spares the servers hashing
    /// the script on every call, as `EVAL` would.
    release_sha: String,
}

const RAW_RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

impl Raw {
    async fn new(urls: &[String]) -> Self {
        let mut conns = Vec::new();
        let script = redis::Script::new(RAW_RELEASE);
        for u in urls {
            // Nagle off, as redfence's own connections: the baseline is the best case.
            let info = redis::IntoConnectionInfo::into_connection_info(u.as_str()).unwrap();
            let tcp = info.tcp_settings().clone().set_nodelay(true);
            let c = redis::Client::open(info.set_tcp_settings(tcp)).unwrap();
            let cfg = redis::AsyncConnectionConfig::new().set_pipeline_buffer_size(4096);
            let mut conn = c
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .unwrap();
            script.load_async(&mut conn).await.unwrap();
            conns.push(conn);
        }
        Self {
            conns,
            release_sha: script.get_hash().to_owned(),
        }
    }
    async fn acquire(&self, key: &str, owner: &str) -> bool {
        let ok = join_all(self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let r: Result<Option<String>, _> = tokio::time::timeout(
                    Duration::from_millis(200),
                    redis::cmd("SET")
                        .arg(key)
                        .arg(owner)
                        .arg("NX")
                        .arg("PX")
                        .arg(10_000)
                        .query_async(&mut c),
                )
                .await
                .unwrap_or_else(|_| Ok(None));
                matches!(r, Ok(Some(_)))
            }
        }))
        .await;
        ok.into_iter().filter(|x| *x).count() > self.conns.len() / 2
    }
    /// Time until a majority of the nodes answered a `PING` sent to all at once.
    async fn quorum_ping(&self) -> Duration {
        self.pings().await.0
    }

    /// Times until a majority, and until every node, answered a `PING` sent to all at once.
    async fn pings(&self) -> (Duration, Duration) {
        let t = Instant::now();
        let mut pings: futures::stream::FuturesUnordered<_> = self
            .conns
            .iter()
            .map(|c| {
                let mut c = c.clone();
                async move {
                    let _: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                }
            })
            .collect();
        for _ in 0..self.conns.len() / 2 + 1 {
            pings.next().await;
        }
        let quorum = t.elapsed();
        while pings.next().await.is_some() {}
        (quorum, t.elapsed())
    }

    async fn release(&self, key: &str, owner: &str) {
        join_all(self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let _: Result<Result<i64, _>, _> = tokio::time::timeout(
                    Duration::from_millis(200),
                    redis::cmd("EVALSHA")
                        .arg(&self.release_sha)
                        .arg(1)
                        .arg(key)
                        .arg(owner)
                        .query_async(&mut c),
                )
                .await;
            }
        }))
        .await;
    }
}

enum Contender {
    Redfence(Client),
    /// One permit of a semaphore of [`PERMITS`], through the same client.
    Permit(Client),
    /// A reader of a reader-writer lock, through the same client.
    Reader(Client),
    Raw(Raw),
    Rslock(rslock::LockManager),
}

impl Contender {
    fn name(&self) -> &'static str {
        match self {
            Self::Redfence(_) => "redfence",
            Self::Permit(_) => "permit",
            Self::Reader(_) => "reader",
            Self::Raw(_) => "raw",
            Self::Rslock(_) => "rslock",
        }
    }

    /// One acquire + release cycle on `key`: (acquire, release) times, or None if not
    /// acquired within 1 s.
    async fn cycle(&self, key: &str) -> Option<(Duration, Duration)> {
        let t = Instant::now();
        match self {
            Self::Redfence(c) => {
                let g = tokio::time::timeout(Duration::from_secs(1), c.try_acquire(key))
                    .await
                    .ok()?
                    .ok()??;
                let a = t.elapsed();
                let t = Instant::now();
                let _ = g.release().await;
                Some((a, t.elapsed()))
            }
            Self::Permit(c) => {
                let sem = c.semaphore(key, PERMITS).ok()?;
                let p = tokio::time::timeout(Duration::from_secs(1), sem.try_acquire())
                    .await
                    .ok()?
                    .ok()??;
                let a = t.elapsed();
                let t = Instant::now();
                let _ = p.release().await;
                Some((a, t.elapsed()))
            }
            Self::Reader(c) => {
                let lock = c.rwlock(key).ok()?;
                let r = tokio::time::timeout(Duration::from_secs(1), lock.try_read())
                    .await
                    .ok()?
                    .ok()??;
                let a = t.elapsed();
                let t = Instant::now();
                let _ = r.release().await;
                Some((a, t.elapsed()))
            }
            Self::Raw(r) => {
                let owner = uuid::Uuid::new_v4().simple().to_string();
                if !tokio::time::timeout(Duration::from_secs(1), r.acquire(key, &owner))
                    .await
                    .ok()?
                {
                    return None;
                }
                let a = t.elapsed();
                let t = Instant::now();
                r.release(key, &owner).await;
                Some((a, t.elapsed()))
            }
            Self::Rslock(m) => {
                let l = tokio::time::timeout(Duration::from_secs(1), m.lock(key.as_bytes(), TTL))
                    .await
                    .ok()?
                    .ok()?;
                let a = t.elapsed();
                let t = Instant::now();
                let _ = tokio::time::timeout(Duration::from_secs(1), m.unlock(&l)).await;
                Some((a, t.elapsed()))
            }
        }
    }

    /// Waits for `key` (retrying as the contender does), holds it `hold`, releases, then
    /// does other work for `hold` before contending again. Returns (time waited, time
    /// from the previous release to this acquisition, time held).
    async fn contend(
        &self,
        key: &str,
        hold: Duration,
        released_at: &AtomicU64,
        base: Instant,
    ) -> Option<(Duration, Duration, Duration)> {
        let t = Instant::now();
        let handoff = |released: &AtomicU64| {
            let rel = Duration::from_nanos(released.load(Ordering::SeqCst));
            base.elapsed().saturating_sub(rel)
        };
        match self {
            Self::Redfence(c) => {
                let opts = AcquireOptions::new()
                    .wait(Duration::from_secs(30))
                    .watchdog(false);
                let g = c.acquire_with(key, opts).await.ok()?;
                let (wait, h, held) = (t.elapsed(), handoff(released_at), Instant::now());
                tokio::time::sleep(hold).await;
                let held = held.elapsed();
                released_at.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                let _ = g.release().await;
                tokio::time::sleep(hold).await;
                Some((wait, h, held))
            }
            Self::Rslock(m) => {
                let g = tokio::time::timeout(
                    Duration::from_secs(30),
                    m.acquire_no_guard(key.as_bytes(), TTL),
                )
                .await
                .ok()?
                .ok()?;
                let (wait, h, held) = (t.elapsed(), handoff(released_at), Instant::now());
                tokio::time::sleep(hold).await;
                let held = held.elapsed();
                released_at.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                m.unlock(&g).await;
                tokio::time::sleep(hold).await;
                Some((wait, h, held))
            }
            Self::Raw(_) | Self::Permit(_) | Self::Reader(_) => None,
        }
    }
}

async fn contenders(cluster: &Cluster, with_rslock: bool) -> Vec<Contender> {
    contenders_at(cluster.urls(), with_rslock).await
}

/// The contenders on the nodes at `urls` (directly, or through the test kit's proxies).
async fn contenders_at(urls: Vec<String>, with_rslock: bool) -> Vec<Contender> {
    let client = Client::builder()
        .nodes(urls.clone())
        .ttl(TTL)
        .retry_delay(Duration::from_millis(100))
        .retry_jitter(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut v = vec![
        Contender::Redfence(client),
        Contender::Raw(Raw::new(&urls).await),
    ];
    if with_rslock {
        v.push(Contender::Rslock(rslock::LockManager::new(urls)));
    }
    // Warm every connection.
    for c in &v {
        for _ in 0..20 {
            c.cycle("warm").await;
        }
    }
    v
}

// ---------------------------------------------------------------- scenarios

/// One task, acquire+release in a loop; contenders alternate in rounds. A round of one
/// contender stops after `per_round` cycles or `budget`, whichever comes first (a
/// contender that waits for a frozen node gets fewer samples, not a longer run).
async fn uncontended(
    scenario: &'static str,
    cs: &[Contender],
    rounds: usize,
    per_round: usize,
    budget: Duration,
) -> Vec<Row> {
    let mut acq: Vec<Sample> = vec![Sample::default(); cs.len()];
    let mut rel = acq.clone();
    let mut cyc = acq.clone();
    let mut failed = vec![0usize; cs.len()];
    let mut busy = vec![Duration::ZERO; cs.len()];
    for round in 0..rounds {
        for (i, c) in cs.iter().enumerate() {
            let key = format!("{scenario}-{round}-{i}");
            let t = Instant::now();
            for _ in 0..per_round {
                if t.elapsed() > budget {
                    break;
                }
                match c.cycle(&key).await {
                    Some((a, r)) => {
                        acq[i].0.push(a);
                        rel[i].0.push(r);
                        cyc[i].0.push(a + r);
                    }
                    None => failed[i] += 1,
                }
            }
            busy[i] += t.elapsed();
        }
    }
    cs.iter()
        .enumerate()
        .map(|(i, c)| Row {
            scenario,
            contender: c.name(),
            p50_us: cyc[i].pct(0.5),
            p99_us: cyc[i].pct(0.99),
            ops_per_s: cyc[i].0.len() as f64 / busy[i].as_secs_f64(),
            acquire_us: Some((acq[i].pct(0.5), acq[i].pct(0.99))),
            extra: format!(
                "acquire p50/p99 {:.0}/{:.0} us, release p50/p99 {:.0}/{:.0} us{}",
                acq[i].pct(0.5),
                acq[i].pct(0.99),
                rel[i].pct(0.5),
                rel[i].pct(0.99),
                if failed[i] > 0 {
                    format!(", {} failed", failed[i])
                } else {
                    String::new()
                }
            ),
        })
        .collect()
}

/// 64 tasks on distinct keys: cycles per second.
async fn parallel(cs: &[Contender], rounds: usize, window: Duration, servers: &[u32]) -> Vec<Row> {
    let mut done = vec![0u64; cs.len()];
    let mut time = vec![Duration::ZERO; cs.len()];
    let (mut client_cpu, mut server_cpu) = (
        vec![Duration::ZERO; cs.len()],
        vec![Duration::ZERO; cs.len()],
    );
    let servers_cpu = || {
        servers
            .iter()
            .map(|p| cpu_of(&p.to_string()))
            .sum::<Duration>()
    };
    let cs: Vec<Arc<Contender>> = cs.iter().map(|c| Arc::new(clone_contender(c))).collect();
    for round in 0..rounds {
        for (i, c) in cs.iter().enumerate() {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let (c, stop, count) = (c.clone(), stop.clone(), count.clone());
                    tokio::spawn(async move {
                        let key = format!("par-{round}-{i}-{t}");
                        while !stop.load(Ordering::Relaxed) {
                            if c.cycle(&key).await.is_some() {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            let (t, c0, s0) = (Instant::now(), cpu_of("self"), servers_cpu());
            tokio::time::sleep(window).await;
            stop.store(true, Ordering::Relaxed);
            join_all(tasks).await;
            time[i] += t.elapsed();
            client_cpu[i] += cpu_of("self").saturating_sub(c0);
            server_cpu[i] += servers_cpu().saturating_sub(s0);
            done[i] += count.load(Ordering::Relaxed);
        }
    }
    cs.iter()
        .enumerate()
        .map(|(i, c)| Row {
            scenario: "2 parallel 64 keys",
            contender: c.name(),
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            ops_per_s: done[i] as f64 / time[i].as_secs_f64(),
            acquire_us: None,
            extra: format!(
                "CPU per cycle: client {:.1} us, servers {:.1} us",
                client_cpu[i].as_secs_f64() * 1e6 / done[i].max(1) as f64,
                server_cpu[i].as_secs_f64() * 1e6 / done[i].max(1) as f64
            ),
        })
        .collect()
}

fn clone_contender(c: &Contender) -> Contender {
    match c {
        Contender::Redfence(x) => Contender::Redfence(x.clone()),
        Contender::Permit(x) => Contender::Permit(x.clone()),
        Contender::Reader(x) => Contender::Reader(x.clone()),
        Contender::Raw(x) => Contender::Raw(x.clone()),
        Contender::Rslock(x) => Contender::Rslock(x.clone()),
    }
}

/// 16 tasks on one key holding ~1 ms: hand-offs per second, time from a release to the
/// next acquisition, and each acquisition's total wait (fairness: its maximum).
async fn contended(scenario: &'static str, cs: &[Contender], window: Duration) -> Vec<Row> {
    let hold = Duration::from_millis(1);
    let raw = cs.iter().find_map(|c| match c {
        Contender::Raw(r) => Some(r.clone()),
        _ => None,
    });
    let mut rows = Vec::new();
    for c in cs {
        if matches!(c, Contender::Raw(_)) {
            continue; // no retries: no hand-off to measure
        }
        let c = Arc::new(clone_contender(c));
        let base = Instant::now();
        let released = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // The round trip, measured alongside under the same load (the machine's speed
        // drifts between scenarios, and an idle wait wakes slower than a busy loop): a
        // `PING` to every node at once, every millisecond, timed to the majority's reply,
        // as a lock round is.
        let probe = raw.clone().map(|raw| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut rtts = Sample::default();
                while !stop.load(Ordering::Relaxed) {
                    rtts.0.push(raw.quorum_ping().await);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                rtts
            })
        });
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (c, released, stop) = (c.clone(), released.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut waits, mut handoffs, mut held) =
                        (Sample::default(), Sample::default(), Sample::default());
                    while !stop.load(Ordering::Relaxed) {
                        if let Some((w, h, d)) = c.contend("contended", hold, &released, base).await
                        {
                            waits.0.push(w);
                            handoffs.0.push(h);
                            held.0.push(d);
                        }
                    }
                    (waits, handoffs, held)
                })
            })
            .collect();
        tokio::time::sleep(window).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = base.elapsed();
        let (mut waits, mut handoffs, mut held) =
            (Sample::default(), Sample::default(), Sample::default());
        for t in join_all(tasks).await {
            let (w, h, d) = t.unwrap();
            waits.0.extend(w.0);
            handoffs.0.extend(h.0);
            held.0.extend(d.0);
        }
        // The ceiling uses the hold as measured (a 1 ms sleep lasts longer).
        let mean_hold = held.0.iter().sum::<Duration>().as_secs_f64() / held.0.len().max(1) as f64;
        let rtt_us = match probe {
            Some(p) => p.await.unwrap().pct(0.5),
            None => f64::NAN,
        };
        let ceiling = 1.0 / (mean_hold + rtt_us / 1e6);
        let rate = handoffs.0.len() as f64 / elapsed.as_secs_f64();
        rows.push(Row {
            scenario,
            contender: c.name(),
            p50_us: handoffs.pct(0.5),
            p99_us: handoffs.pct(0.99),
            ops_per_s: rate,
            acquire_us: None,
            extra: format!(
                "p50/p99 = release to next acquisition; p50 = {:.2} round trips (majority PING p50 {:.0} us, measured alongside); total wait p50/p99/max {:.0}/{:.0}/{:.0} us; {:.0}% of the {:.0}/s ceiling (hold {:.2} ms + RTT)",
                handoffs.pct(0.5) / rtt_us,
                rtt_us,
                waits.pct(0.5),
                waits.pct(0.99),
                waits.max(),
                100.0 * rate / ceiling,
                ceiling,
                mean_hold * 1e3
            ),
        });
    }
    rows
}

/// Scenario 9's WAN profiles: the one-way delay to each of the five nodes, in µs (each
/// way, so a node's round trip is twice it).
const WAN_PROFILES: [(&str, &str, [u64; 5]); 2] = [
    (
        "9 WAN 3 zones uncontended",
        "9 WAN 3 zones contended",
        [500, 500, 2_000, 2_000, 10_000],
    ),
    (
        "9 WAN 5 regions uncontended",
        "9 WAN 5 regions contended",
        [2_000, 8_000, 15_000, 40_000, 80_000],
    ),
];

/// Scenario 9: the uncontended cycle and 16 contending tasks through the test kit's
/// latency proxies, one per node with the profile's delay. The floor is measured
/// alongside: the round trip of a `PING` to every node, until a majority answered (what
/// a majority decider can reach) and until all did (what a wait-for-all client pays).
async fn wan(
    cluster: &Cluster,
    uncontended_name: &'static str,
    contended_name: &'static str,
    delays: [u64; 5],
    quick: bool,
) -> Vec<Row> {
    let proxies = cluster.proxies().unwrap();
    for (i, us) in delays.iter().enumerate() {
        proxies
            .set(
                i,
                redfence::testkit::Fault::Latency(Duration::from_micros(*us)),
            )
            .unwrap();
    }
    let cs = contenders_at(proxies.urls(), true).await;
    let Some(raw) = cs.iter().find_map(|c| match c {
        Contender::Raw(r) => Some(r.clone()),
        _ => None,
    }) else {
        unreachable!("raw is a contender")
    };
    let (mut majority, mut all) = (Sample::default(), Sample::default());
    for _ in 0..20 {
        let (q, a) = raw.pings().await;
        majority.0.push(q);
        all.0.push(a);
    }
    let (floor_q, floor_all) = (majority.pct(0.5), all.pct(0.5));
    let (rounds, per_round, budget) = if quick {
        (2, 50, Duration::from_secs(1))
    } else {
        (4, 100, Duration::from_secs(3))
    };
    let mut rows = uncontended(uncontended_name, &cs, rounds, per_round, budget).await;
    for r in &mut rows {
        // A contender's acquire p50 is the first figure of its note.
        let floor = if r.contender == "rslock" {
            floor_all
        } else {
            floor_q
        };
        let (p50, p99) = r.acquire_us.unwrap_or((f64::NAN, f64::NAN));
        r.extra = format!(
            "acquire p50/p99 {p50:.0}/{p99:.0} us = floor + {:.0}/{:.0} us; floor {floor:.0} us ({} RTT of a PING to all nodes); {}",
            p50 - floor,
            p99 - floor,
            if r.contender == "rslock" {
                "the slowest"
            } else {
                "the majority's"
            },
            r.extra
        );
    }
    let window = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(6)
    };
    rows.extend(contended(contended_name, &cs, window).await);
    rows
}

// ---------------------------------------------------------------- report

fn print(rows: &[Row], json: bool) {
    let find = |s: &str, c: &str| rows.iter().find(|r| r.scenario == s && r.contender == c);
    println!(
        "\n{:<24} {:<9} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "scenario", "contender", "p50 us", "p99 us", "ops/s", "vs raw", "vs rslock"
    );
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b.is_finite() && b > 0.0 && a.is_finite() => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    };
    for r in rows {
        // Latency scenarios compare p50; throughput ones compare ops/s.
        let key = |x: &Row| {
            if x.p50_us.is_finite() {
                x.p50_us
            } else {
                x.ops_per_s
            }
        };
        let (vs_raw, vs_rslock) = if r.contender == "redfence" {
            (
                ratio(key(r), find(r.scenario, "raw").map(key)),
                ratio(key(r), find(r.scenario, "rslock").map(key)),
            )
        } else {
            ("".into(), "".into())
        };
        let num = |x: f64, d: usize| {
            if x.is_finite() {
                format!("{x:.d$}")
            } else {
                "-".into()
            }
        };
        println!(
            "{:<24} {:<9} {:>9} {:>9} {:>10} {:>10} {:>10}",
            r.scenario,
            r.contender,
            num(r.p50_us, 0),
            num(r.p99_us, 0),
            num(r.ops_per_s, 0),
            vs_raw,
            vs_rslock
        );
        if !r.extra.is_empty() {
            println!("{:<24}   {}", "", r.extra);
        }
    }
    if json {
        for r in rows {
            let n = |x: f64| {
                if x.is_finite() {
                    format!("{x:.1}")
                } else {
                    "null".into()
                }
            };
            println!(
                "{{\"scenario\":{:?},\"contender\":{:?},\"p50_us\":{},\"p99_us\":{},\"ops_per_s\":{},\"note\":{:?}}}",
                r.scenario,
                r.contender,
                n(r.p50_us),
                n(r.p99_us),
                n(r.ops_per_s),
                r.extra
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    // `--only 2,3`: just those scenarios (for profiling one of them).
    let only: Vec<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let run = |n: u32| only.is_empty() || only.contains(&n);
    let (rounds, per_round) = if quick { (5, 100) } else { (20, 250) };
    let window = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cluster = Cluster::start(5).expect("the benchmarks need redis-server");
        let mut cs = contenders(&cluster, true).await;
        // `--contender NAME`: only that one (for profiling it alone).
        if let Some(name) = args
            .iter()
            .position(|a| a == "--contender")
            .and_then(|i| args.get(i + 1))
        {
            cs.retain(|c| c.name() == name);
        }
        let mut rows = Vec::new();
        let budget = if quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3)
        };
        if run(1) {
            eprintln!("1: uncontended cycle");
            rows.extend(uncontended("1 uncontended cycle", &cs, rounds, per_round, budget).await);
        }
        if run(2) {
            eprintln!("2: 64 parallel keys");
            let pids: Vec<u32> = (0..cluster.len()).filter_map(|i| cluster.pid(i)).collect();
            rows.extend(parallel(&cs, if quick { 2 } else { 4 }, window, &pids).await);
        }
        if run(3) {
            eprintln!("3: contended");
            rows.extend(contended("3 contended 16 tasks", &cs, window * 2).await);
        }
        if run(4) {
            eprintln!("4: one node frozen");
            cluster.pause(4).unwrap();
            rows.extend(
                uncontended("4 one node frozen", &cs, rounds / 2, per_round / 2, budget).await,
            );
            cluster.resume(4).unwrap();
        }
        if run(5) {
            eprintln!("5: one node dead");
            cluster.kill(4).unwrap();
            rows.extend(
                uncontended("5 one node dead", &cs, rounds / 2, per_round / 2, budget).await,
            );
            cluster.restart(4).unwrap();
        }

        for n in [3, 5, 7, 9].into_iter().filter(|_| run(6)) {
            eprintln!("6: {n} nodes");
            let c = Cluster::start(n).unwrap();
            let cs = contenders(&c, false).await;
            let name: &'static str = match n {
                3 => "6 scaling N=3",
                5 => "6 scaling N=5",
                7 => "6 scaling N=7",
                _ => "6 scaling N=9",
            };
            rows.extend(uncontended(name, &cs, rounds / 2, per_round / 2, budget).await);
        }
        if run(8) {
            eprintln!("8: primitives");
            let Contender::Redfence(client) = &cs[0] else {
                unreachable!("the first contender is redfence")
            };
            let primitives = [
                Contender::Redfence(client.clone()),
                Contender::Permit(client.clone()),
                Contender::Reader(client.clone()),
            ];
            let mut found =
                uncontended("8 primitives", &primitives, rounds, per_round, budget).await;
            let mutex = found[0].p50_us;
            for r in &mut found[1..] {
                r.extra = format!("{}, p50 vs the mutex {:.2}x", r.extra, r.p50_us / mutex);
            }
            rows.extend(found);
        }
        if run(9) {
            for (uncontended_name, contended_name, delays) in WAN_PROFILES {
                eprintln!("9: {uncontended_name}");
                rows.extend(wan(&cluster, uncontended_name, contended_name, delays, quick).await);
            }
        }
        print(&rows, json);
    });
}
