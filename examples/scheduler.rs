//! A job scheduler with one active leader: three scheduler instances campaign, the
//! leader runs the jobs (each run written with the leader's term as its fencing token),
//! and when the leader steps down the next one takes over at once. A follower prints
//! every leadership. Terms strictly increase, though not one by one: every grant request
//! counts, a waiting candidate's refused ones included.
//!
//! `cargo run --example scheduler` starts three local nodes for the election and one for
//! the job store through the test kit (`redis-server` on the `PATH`, or
//! `REDFENCE_REDIS_SERVER`).

use std::sync::Arc;
use std::time::Duration;

use redfence::fence::RedisFencedStore;
use redfence::testkit::Cluster;

/// One scheduler instance: campaigns, then runs `ticks` rounds of jobs while leading,
/// then resigns. Returns its term.
async fn scheduler(
    name: &str,
    client: redfence::Client,
    store: Arc<RedisFencedStore>,
    ticks: u32,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let election = client.election("jobs")?;
    let leading = election.campaign(name).await?;
    let term = leading.term();
    println!("{name} leads in term {term}");
    for tick in 0..ticks {
        if !leading.is_leader() {
            println!("{name} lost the leadership: stops scheduling");
            break;
        }
        let job = format!("{name} ran the nightly job (tick {tick})");
        // The term is the fencing token: a deposed leader's late write is refused.
        let verdict = store.write("job:nightly", term, job.as_bytes()).await?;
        if !verdict.is_accepted() {
            println!("{name}: a newer leader has written, stepping down");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    leading.resign().await?;
    println!("{name} resigns");
    Ok(term.get())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let nodes = Cluster::start(3)?;
    let storage = Cluster::start(1)?;
    let store = Arc::new(RedisFencedStore::connect(&storage.url(0)).await?);
    let watcher = nodes.client_builder().build()?;
    let mut follower = watcher
        .election("jobs")?
        .follow(Duration::from_secs(1))
        .await?;
    let follow = tokio::spawn(async move {
        let mut terms = Vec::new();
        while terms.len() < 3 {
            let change = follower.next().await?;
            println!("  follower: term {} led by {}", change.term, change.value);
            terms.push(change.term.get());
        }
        Ok::<_, redfence::Error>(terms)
    });
    let instances: Vec<_> = ["scheduler-a", "scheduler-b", "scheduler-c"]
        .into_iter()
        .map(|name| {
            let client = nodes.client_builder().build().expect("client");
            tokio::spawn(scheduler(name, client, Arc::clone(&store), 3))
        })
        .collect();
    let mut terms = Vec::new();
    for i in instances {
        terms.push(i.await??);
    }
    terms.sort_unstable();
    let followed = tokio::time::timeout(Duration::from_secs(10), follow).await???;
    println!("terms {terms:?}; the follower saw {followed:?}");
    if followed != terms {
        return Err("the follower did not see every leadership in order".into());
    }
    let last = store.read("job:nightly").await?.ok_or("no job ran")?;
    println!(
        "last job record: {:?} (term {})",
        String::from_utf8_lossy(&last.value),
        last.token
    );
    Ok(())
}
