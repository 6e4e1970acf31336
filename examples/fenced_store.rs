//! Fenced writes through `RedisFencedStore`: a holder that was paused past its lease
//! writes late, and storage refuses it because a newer holder has written.
//!
//! `cargo run --example fenced_store` starts three lock nodes and one storage node
//! through the test kit (`redis-server` on the `PATH`, or `REDFENCE_REDIS_SERVER`).

use std::time::Duration;

use redfence::AcquireOptions;
use redfence::fence::{RedisFencedStore, Verdict};
use redfence::testkit::Cluster;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let locks = Cluster::start(3)?;
    let storage = Cluster::start(1)?;
    let store = RedisFencedStore::connect(&storage.url(0)).await?;
    let client = locks
        .client_builder()
        .ttl(Duration::from_millis(500))
        .build()?;

    // A takes the lock (no watchdog), then stalls past its lease: a GC pause, a frozen VM.
    let a = client
        .acquire_with("invoice:7", AcquireOptions::new().watchdog(false))
        .await?;
    println!("A holds invoice:7 with token {}", a.token());
    tokio::time::sleep(Duration::from_millis(700)).await;

    // B takes the lock in the meantime and writes.
    let b = client.acquire("invoice:7").await?;
    let verdict = store.write("invoice:7", b.token(), b"paid by B").await?;
    println!(
        "B holds it with token {} and writes: {verdict:?}",
        b.token()
    );
    if !verdict.is_accepted() {
        return Err("B's write was refused".into());
    }

    // A wakes up and writes with its old token: refused, nothing overwritten.
    match store.write("invoice:7", a.token(), b"paid by A").await? {
        Verdict::Rejected { stale, current } => {
            println!("A's late write with token {stale} is refused: storage has seen {current}");
        }
        Verdict::Accepted => return Err("a stale write was accepted".into()),
    }
    let kept = store.read("invoice:7").await?.ok_or("nothing stored")?;
    println!(
        "storage holds {:?} (token {})",
        String::from_utf8_lossy(&kept.value),
        kept.token
    );
    b.release().await?;
    Ok(())
}
