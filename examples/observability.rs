//! What a client tells about itself: the spans and events of acquisitions while a node is
//! dead, and the same story in `Client::stats`.
//!
//! `cargo run --example observability --features tracing,testkit` starts three local
//! `redis-server` nodes through the test kit and prints, through `tracing-subscriber`'s
//! plain formatter (debug level, target `redfence`, each span as it closes):
//!
//! 1. one acquisition and release on healthy nodes;
//! 2. node 2 killed: the next acquisition still wins on the other two, node 2 is reported
//!    failing once (a warning naming it, the step and the error), its later failures at
//!    debug level only, each inside the operation it belongs to;
//! 3. node 2 restarted: "node reconnected" and "node answers again";
//! 4. `Client::stats()`: attempts, latency, each node's calls and errors.

use std::time::Duration;

use redfence::testkit::Cluster;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

async fn cycle(client: &redfence::Client, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let guard = client.try_acquire(name).await?.ok_or("held elsewhere")?;
    guard.release().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_span_events(FmtSpan::CLOSE),
        )
        .with(Targets::new().with_target("redfence", tracing::Level::DEBUG))
        .init();
    let cluster = Cluster::start(3)?;
    let client = cluster
        .client_builder()
        .node_timeout(Duration::from_millis(200))
        .build()?;

    println!("1. healthy nodes");
    cycle(&client, "report").await?;
    client.shutdown(Duration::from_secs(2)).await;

    println!("\n2. node 2 ({}) killed", cluster.url(2));
    cluster.kill(2)?;
    for _ in 0..2 {
        cycle(&client, "report").await?;
        client.shutdown(Duration::from_secs(2)).await;
    }

    println!("\n3. node 2 restarted");
    cluster.restart(2)?;
    while client.stats().nodes[2].failing {
        cycle(&client, "report").await?;
        client.shutdown(Duration::from_secs(2)).await;
    }

    let stats = client.stats();
    println!("\n4. Client::stats()");
    println!(
        "   attempts: {} won of {}; attempt p50 {:?}, p99 {:?}",
        stats.attempts.won,
        stats.attempts.total(),
        stats.attempt_latency.quantile(0.5),
        stats.attempt_latency.quantile(0.99),
    );
    for n in &stats.nodes {
        println!(
            "   {}: {} calls, {} errors {:?}, {} reconnects",
            n.name, n.calls, n.errors, n.errors_by_kind, n.reconnects
        );
    }
    let n2 = &stats.nodes[2];
    if n2.errors == 0 || n2.reconnects != 1 || stats.attempts.won != stats.attempts.total() {
        return Err("the stats do not tell the story: see above".into());
    }
    Ok(())
}
