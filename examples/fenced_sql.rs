//! Fenced writes to a SQL database: every write carries the lock's fencing token and is
//! applied only when no newer token has written the row (`UPDATE … WHERE fence <= ?`),
//! so a holder that was paused past its lease cannot overwrite its successor's work.
//!
//! `cargo run --example fenced_sql` starts three local lock nodes through the test kit
//! (`redis-server` on the `PATH`, or `REDFENCE_REDIS_SERVER`) and uses an in-memory
//! SQLite database.

use std::time::Duration;

use redfence::testkit::Cluster;
use redfence::{AcquireOptions, FencingToken};
use rusqlite::{Connection, params};

/// Sets the account's balance if `token` is not older than the last writer's; true when
/// the row was written. One statement: the check and the write cannot be split.
fn fenced_update(
    db: &Connection,
    account: i64,
    balance: i64,
    token: FencingToken,
) -> rusqlite::Result<bool> {
    let token = i64::try_from(token.get()).unwrap_or(i64::MAX);
    let rows = db.execute(
        "UPDATE accounts SET balance = ?1, fence = ?2 WHERE id = ?3 AND fence <= ?2",
        params![balance, token, account],
    )?;
    Ok(rows == 1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Connection::open_in_memory()?;
    db.execute_batch(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL,
                                fence INTEGER NOT NULL DEFAULT 0);
         INSERT INTO accounts (id, balance) VALUES (7, 100);",
    )?;
    let cluster = Cluster::start(3)?;
    let client = cluster
        .client_builder()
        .ttl(Duration::from_millis(500))
        .build()?;
    let no_watchdog = || AcquireOptions::new().watchdog(false);

    // A reads the balance under the lock, then stalls past its lease.
    let a = client.acquire_with("account:7", no_watchdog()).await?;
    let seen: i64 = db.query_row("SELECT balance FROM accounts WHERE id = 7", [], |r| {
        r.get(0)
    })?;
    println!(
        "A holds account:7 (token {}) and reads balance {seen}",
        a.token()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;

    // B takes the lock meanwhile, reads and writes: a deposit of 50.
    let b = client.acquire_with("account:7", no_watchdog()).await?;
    let now: i64 = db.query_row("SELECT balance FROM accounts WHERE id = 7", [], |r| {
        r.get(0)
    })?;
    let written = fenced_update(&db, 7, now + 50, b.token())?;
    println!(
        "B holds it (token {}) and deposits 50: written = {written}",
        b.token()
    );
    if !written {
        return Err("B's write was refused".into());
    }

    // A wakes up and writes what it computed from its stale read: refused.
    let written = fenced_update(&db, 7, seen - 30, a.token())?;
    println!(
        "A's late withdrawal of 30 (token {}): written = {written}",
        a.token()
    );
    if written {
        return Err("a stale write was applied".into());
    }
    let (balance, fence): (i64, i64) = db.query_row(
        "SELECT balance, fence FROM accounts WHERE id = 7",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!("account 7: balance {balance}, last written with token {fence}");
    if balance != 150 {
        return Err(format!("balance {balance}, expected 150").into());
    }
    b.release().await?;
    Ok(())
}
