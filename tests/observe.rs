//! What a client tells about itself, read back through a real `tracing` subscriber, a real
//! `metrics` recorder and `Client::stats`, while a node is killed and restarted and a
//! majority is paused under a held lock.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redfence::{Client, LockState};
use support::{client, cluster};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A closed span or an event, with its fields as text.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    level: Level,
    fields: BTreeMap<String, String>,
    /// For an event, the spans it happened in (outermost first).
    scope: Vec<String>,
}

impl Seen {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Keeps every closed span and every event of target `redfence`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

impl Capture {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "redfence" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let scope = ctx
            .event_scope(event)
            .map(|s| s.from_root().map(|s| s.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            name: "event".into(),
            level: *event.metadata().level(),
            fields: f.0,
            scope,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if span.metadata().target() != "redfence" {
            return;
        }
        let fields = span
            .extensions()
            .get::<Fields>()
            .map(|f| f.0.clone())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            name: span.name().to_owned(),
            level: *span.metadata().level(),
            fields,
            scope: Vec::new(),
        });
    }
}

/// What the recorder has seen: its snapshots drain it (counters, gauges and histograms
/// alike), so every read adds them to running totals, shared by the tests of this binary.
struct Metrics {
    snap: Snapshotter,
    totals: Mutex<Vec<Series>>,
}

/// One series' name, labels, and total so far.
type Series = (String, Vec<(String, String)>, f64);

impl Metrics {
    /// The series' total (a counter's count, a gauge's value, a histogram's number of
    /// samples), summed over the series whose labels include every one of `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snap.snapshot().into_vec() {
            let key = key.key();
            let series: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            #[allow(clippy::cast_precision_loss)]
            let v = match value {
                DebugValue::Counter(c) => c as f64,
                // Gauges move by increments from 0, which the drain resets to.
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            match totals
                .iter_mut()
                .find(|(n, l, _)| n == key.name() && *l == series)
            {
                Some((_, _, t)) => *t += v,
                None => totals.push((key.name().to_owned(), series, v)),
            }
        }
        totals
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, t)| t)
            .sum()
    }
}

/// The process's subscriber and recorder, installed once (both are global).
fn installed() -> &'static (Capture, Metrics) {
    static ONCE: OnceLock<(Capture, Metrics)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::set_global_default(subscriber).unwrap();
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        recorder.install().unwrap();
        let totals = Mutex::default();
        (capture, Metrics { snap, totals })
    })
}

/// Polls `check` until it holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn of<'a>(seen: &'a [Seen], name: &str, resource: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.name == name && s.get("resource") == Some(resource))
        .collect()
}

/// One client, three nodes. Healthy acquisitions, then node 2 is killed: the next
/// acquisition still wins, node 2 is reported failing once (a warning naming it, the step
/// and the kind), its later failures only at debug level, and counted per kind. Node 2
/// comes back: one "answers again", one reconnect. Then a held lock loses a paused
/// majority: the loss is a warning with its reason, counted, and `Stats` says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_events_metrics_and_stats_follow_a_killed_node_and_a_loss() {
    let (capture, snap) = installed();
    let cluster = cluster(3);
    let c: Client = client(&cluster)
        .ttl(Duration::from_secs(1))
        .node_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let node2 = format!("127.0.0.1:{}", cluster.port(2));

    // Healthy: each acquisition is an `acquire` span that won, with its token and the
    // nodes' answers.
    for _ in 0..3 {
        let g = c.try_acquire("obs-healthy").await.unwrap().unwrap();
        g.release().await.unwrap();
    }
    c.shutdown(Duration::from_secs(5)).await;
    let seen = capture.all();
    let acquires = of(&seen, "acquire", "obs-healthy");
    assert_eq!(acquires.len(), 3, "{acquires:#?}");
    for (k, a) in acquires.iter().enumerate() {
        assert_eq!(a.get("outcome"), Some("won"), "{a:?}");
        assert_eq!(a.get("token"), Some((k + 1).to_string().as_str()), "{a:?}");
        let granted: usize = a.get("granted").unwrap().parse().unwrap();
        assert!(granted >= 2, "{a:?}");
        assert!(a.get("answers").unwrap().contains(":yes"), "{a:?}");
    }
    assert_eq!(of(&seen, "release", "obs-healthy").len(), 3);
    assert!(
        of(&seen, "release", "obs-healthy")
            .iter()
            .all(|r| r.get("outcome") == Some("released"))
    );

    // Node 2 is killed: acquisitions still win on the other two.
    cluster.kill(2).unwrap();
    for _ in 0..5 {
        let g = c.try_acquire("obs-killed").await.unwrap().unwrap();
        g.release().await.unwrap();
    }
    c.shutdown(Duration::from_secs(5)).await;
    let failing = |seen: &[Seen]| -> Vec<Seen> {
        seen.iter()
            .filter(|s| s.name == "event" && s.get("node") == Some(node2.as_str()))
            .filter(|s| {
                s.get("message")
                    .is_some_and(|m| m.starts_with("node failing"))
            })
            .cloned()
            .collect()
    };
    let seen = capture.all();
    let warned = failing(&seen);
    assert_eq!(
        warned.len(),
        1,
        "one warning when node 2 starts failing: {warned:#?}"
    );
    assert_eq!(warned[0].level, Level::WARN);
    let kind = warned[0].get("kind").unwrap().to_owned();
    assert!(
        ["connection_refused", "io"].contains(&kind.as_str()),
        "{:?}",
        warned[0]
    );
    assert!(warned[0].get("step").is_some());
    let later: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.get("node") == Some(node2.as_str()))
        .filter(|s| {
            s.get("message")
                .is_some_and(|m| m.starts_with("node call failed"))
        })
        .collect();
    assert!(!later.is_empty(), "later failures are told at debug level");
    assert!(later.iter().all(|s| s.level == Level::DEBUG));
    // Each inside the operation it failed, even a call left to finish in the background.
    for s in warned.iter().chain(later.iter().copied()) {
        assert!(
            s.scope.iter().any(|n| n == "acquire" || n == "release"),
            "{s:?}"
        );
    }
    for a in of(&seen, "acquire", "obs-killed") {
        assert_eq!(a.get("outcome"), Some("won"), "{a:?}");
    }
    // Where node 2's answer came in before the decision, the span names its failure.
    let answers: Vec<&str> = of(&seen, "acquire", "obs-killed")
        .iter()
        .filter_map(|a| a.get("answers"))
        .collect();
    assert!(answers.iter().all(|t| !t.contains("2:yes")), "{answers:?}");

    let stats = c.stats();
    assert_eq!(stats.attempts.won, 8, "{stats:#?}");
    assert_eq!(stats.attempts.total(), 8);
    assert_eq!(stats.attempt_latency.count(), 8);
    assert_eq!(stats.releases.released, 8);
    let n2 = &stats.nodes[2];
    assert_eq!(n2.name, node2);
    assert!(n2.errors >= 5, "{n2:?}");
    assert!(n2.failing);
    assert!(!stats.nodes[0].failing && stats.nodes[0].errors == 0);
    assert!(
        snap.get("redfence_node_errors_total", &[("node", &node2)]) >= 5.0,
        "node errors counted per node"
    );
    assert!(
        snap.get(
            "redfence_node_errors_total",
            &[("node", &node2), ("kind", &kind)]
        ) >= 1.0
    );

    // Node 2 comes back: one "answers again", one reconnect.
    cluster.restart(2).unwrap();
    // Told on the first call it answers: keep acquiring until then.
    let start = Instant::now();
    while c.stats().nodes[2].failing {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node 2 never answered again"
        );
        let g = c.try_acquire("obs-back").await.unwrap().unwrap();
        g.release().await.unwrap();
    }
    // The flag clears just before the event is told, possibly in a call left to finish in
    // the background: let that finish before reading.
    c.shutdown(Duration::from_secs(5)).await;
    let stats = c.stats();
    assert_eq!(stats.nodes[2].reconnects, 1, "{:?}", stats.nodes[2]);
    let seen = capture.all();
    let back: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.get("node") == Some(node2.as_str()))
        .filter(|s| s.get("message") == Some("node answers again"))
        .collect();
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0].level, Level::INFO);
    assert!(seen.iter().any(|s| s.get("node") == Some(node2.as_str())
        && s.get("message") == Some("node reconnected")
        && s.get("generation") == Some("2")));
    assert!(snap.get("redfence_node_reconnects_total", &[("node", &node2)]) >= 1.0);

    // A held lock with a watchdog loses a paused majority: one warning, with the reason.
    let before = snap.get("redfence_losses_total", &[("reason", "quorum_unreachable")]);
    let guard = c.acquire("obs-lost").await.unwrap();
    assert!(guard.has_watchdog());
    assert_eq!(c.stats().active_watchdogs, 1);
    assert!(snap.get("redfence_watchdogs_active", &[]) >= 1.0);
    let token = guard.token().get();
    eventually("the watchdog renewed once", || {
        c.stats().extensions.renewed >= 1
    })
    .await;
    cluster.pause(0).unwrap();
    cluster.pause(1).unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), guard.lost()).await;
    cluster.resume(0).unwrap();
    cluster.resume(1).unwrap();
    lost.expect("the loss is reported");
    assert!(matches!(*guard.state().borrow(), LockState::Lost { .. }));
    let seen = capture.all();
    let losses: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.get("resource") == Some("obs-lost"))
        .filter(|s| s.get("message").is_some_and(|m| m.starts_with("lock lost")))
        .collect();
    assert_eq!(losses.len(), 1, "{losses:#?}");
    assert_eq!(losses[0].level, Level::WARN);
    assert_eq!(losses[0].get("reason"), Some("quorum_unreachable"));
    assert_eq!(losses[0].get("token"), Some(token.to_string().as_str()));
    // The watchdog's rounds (batched: one for every lease due) are spans of their own,
    // each with its leases by outcome and the nodes' answers: renewed, then unreachable
    // with the paused nodes timing out.
    let batches: Vec<&Seen> = seen.iter().filter(|s| s.name == "renew_batch").collect();
    assert!(
        batches.iter().any(|b| b.get("renewed") == Some("1")),
        "{batches:#?}"
    );
    assert!(
        batches.iter().any(|b| b.get("unreachable") == Some("1")
            && b.get("answers").is_some_and(|a| a.contains("0:timeout"))),
        "{batches:#?}"
    );
    assert_eq!(
        snap.get("redfence_losses_total", &[("reason", "quorum_unreachable")]) - before,
        1.0
    );
    let stats = c.stats();
    assert_eq!(stats.losses.quorum_unreachable, 1, "{stats:#?}");
    assert_eq!(stats.losses.total(), 1);
    assert!(stats.extensions.unreachable + stats.extensions.timed_out >= 1);
    drop(guard);
    assert!(snap.get("redfence_attempts_total", &[("outcome", "won")]) >= 10.0);
    assert!(snap.get("redfence_attempt_seconds", &[("outcome", "won")]) >= 10.0);
}

/// A wait is one span around its attempts, counted with its time: a refused attempt, a
/// wake-up, a won one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_a_span_around_its_attempts() {
    let (capture, snap) = installed();
    let cluster = cluster(3);
    let c = client(&cluster).build().unwrap();
    let holder = c.try_acquire("obs-wait").await.unwrap().unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.acquire("obs-wait").await })
    };
    eventually("the waiter was refused once", || {
        c.stats().attempts.refused >= 1
    })
    .await;
    holder.release().await.unwrap();
    let g = waiter.await.unwrap().unwrap();
    g.release().await.unwrap();
    // A span closes when the work it left in the background (a refused attempt's clean-up)
    // is done too.
    c.shutdown(Duration::from_secs(5)).await;
    let stats = c.stats();
    assert_eq!(stats.waits.won, 1);
    assert_eq!(stats.wait_time.count(), 1);
    assert!(
        stats.attempts.won == 2 && stats.attempts.refused >= 1,
        "{stats:#?}"
    );
    let seen = capture.all();
    let waits = of(&seen, "wait", "obs-wait");
    assert_eq!(waits.len(), 1, "{waits:#?}");
    assert_eq!(waits[0].get("outcome"), Some("won"));
    let attempts: u64 = waits[0].get("attempts").unwrap().parse().unwrap();
    // Every attempt but the holder's was the waiter's.
    assert_eq!(attempts, stats.attempts.total() - 1, "{stats:#?}");
    assert!(snap.get("redfence_wait_seconds", &[("outcome", "won")]) >= 1.0);
}
