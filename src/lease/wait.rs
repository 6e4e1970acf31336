//! Waiting for a lease, for every primitive: attempts repeated until one wins or the wait
//! runs out, woken by release announcements, with a jittered delay between attempts for
//! expiries, lost messages and nodes without pub/sub; and the scoped run, which holds a
//! lease only for as long as a piece of work runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::LeaseHandle;
use crate::core::wakeup::Wakeups;
use crate::error::{Error, LossReason};
use crate::observe::{Counters, OpSpan};

tokio::task_local! {
    /// Set by [`until_won`] around each attempt: the grant round of an attempt that did
    /// not win stores here the nodes that kept it from a majority (a bit per node:
    /// refused, or failed), so that the wait after it can be woken only once enough of
    /// them have announced a release ([`Waiter::released_on`]).
    ///
    /// [`Waiter::released_on`]: crate::core::wakeup::Waiter::released_on
    pub(crate) static BLOCKED: Arc<AtomicU64>;
}

/// [`BLOCKED`]'s value when nothing was stored (no grant round ran, or more than 64 nodes).
const UNKNOWN: u64 = 0;

/// Stores the nodes that kept a failed grant round from a majority, for the wait after
/// it (nothing outside [`until_won`]).
pub(crate) fn record_blocked(n: usize, blocked: impl Iterator<Item = usize>) {
    if n > 64 {
        return;
    }
    let mask = blocked.fold(0u64, |m, i| m | (1 << i));
    let _ = BLOCKED.try_with(|b| b.store(mask, Ordering::Relaxed));
}

/// What a wait needs of its client.
pub(crate) struct Waiting<'a> {
    pub(crate) wakeups: &'a Arc<Wakeups>,
    /// Where the wait's outcome is counted.
    pub(crate) counters: &'a Counters,
    /// The channel on which the nodes announce releases of what is waited for.
    pub(crate) channel: &'a str,
    /// For errors: what is waited for.
    pub(crate) resource: &'a str,
    pub(crate) wait: Duration,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_jitter: Duration,
}

/// Runs `attempt` until it wins (`Ok(Some)`), fails for a lasting reason, or the wait
/// runs out ([`Error::WaitTimeout`], with the last attempt's error).
pub(crate) async fn until_won<G, Fut>(
    w: Waiting<'_>,
    attempt: impl FnMut() -> Fut,
) -> Result<G, Error>
where
    Fut: Future<Output = Result<Option<G>, Error>>,
{
    let span = OpSpan::wait(w.resource);
    let (counters, start) = (w.counters, Instant::now());
    let mut attempts = 0;
    let won = span.run(waiting(w, attempt, &mut attempts)).await;
    counters.wait(&won, start.elapsed());
    span.attempts(attempts).outcome(match &won {
        Ok(_) => "won",
        Err(Error::WaitTimeout { .. }) => "timed_out",
        Err(_) => "failed",
    });
    won
}

/// The attempts of [`until_won`], outside its span; counts them in `attempts`.
async fn waiting<G, Fut>(
    w: Waiting<'_>,
    mut attempt: impl FnMut() -> Fut,
    attempts: &mut u32,
) -> Result<G, Error>
where
    Fut: Future<Output = Result<Option<G>, Error>>,
{
    let start = Instant::now();
    // Woken by any node announcing a release; the jittered retry delay runs alongside.
    let mut releases = w.wakeups.watch(w.channel);
    // This client's waiters of the same thing go one at a time, in arrival order.
    let Ok(_turn) = tokio::time::timeout(w.wait, releases.turn()).await else {
        return Err(Error::WaitTimeout {
            resource: w.resource.to_owned(),
            waited: start.elapsed(),
            attempts: 0,
            last_error: None,
        });
    };
    let blocked = Arc::new(AtomicU64::new(UNKNOWN));
    // The last wait ended on the first announcement of a release.
    let mut woken_early = false;
    let last_error = loop {
        *attempts += 1;
        releases.mark();
        blocked.store(UNKNOWN, Ordering::Relaxed);
        let outcome = BLOCKED.scope(Arc::clone(&blocked), attempt()).await;
        let last = match outcome {
            Ok(Some(won)) => return Ok(won),
            Ok(None) => {
                // Refused right after the first announcement: the release had not
                // reached the others yet.
                if woken_early {
                    releases.landed_unevenly();
                }
                None
            }
            Err(e) if retryable(&e) => Some(e),
            Err(e) => return Err(e),
        };
        let Some(left) = w.wait.checked_sub(start.elapsed()).filter(|l| !l.is_zero()) else {
            break last;
        };
        // Subscribed only now that there is something to wait for; a release before the
        // subscription is in place is covered by the wake-up that follows it.
        releases.listen();
        let pause = jittered(w.retry_delay, w.retry_jitter).min(left);
        // No sleep after a wake-up: tokio's timers tick in milliseconds, so even a
        // sub-millisecond spread would cost a whole tick. The client's own waiters already
        // take turns (one attempt per release); a split vote with another client falls
        // back to the jittered delay above.
        // Woken by the first announcement, or, where releases land unevenly, once the
        // nodes that kept this attempt out have announced enough for a majority.
        let kept_out = match blocked.load(Ordering::Relaxed) {
            UNKNOWN => None,
            mask => Some(mask),
        };
        woken_early = tokio::select! {
            () = tokio::time::sleep(pause) => false,
            early = releases.hand_off(kept_out) => early,
        };
    };
    Err(Error::WaitTimeout {
        resource: w.resource.to_owned(),
        waited: start.elapsed(),
        attempts: *attempts,
        last_error: last_error.map(Box::new),
    })
}

/// A primitive's handle on a held lease.
pub(crate) trait Held: Sized {
    fn lease(&self) -> &LeaseHandle;
    fn into_lease(self) -> LeaseHandle;
}

/// Runs `work` while `held` lasts, then releases it. If the lease is lost first, `work`
/// is cancelled (dropped at its current `.await`) and the loss is returned. `not_owner`
/// is the count reported when the release finds the lease already gone: the fewest nodes
/// that can say so.
pub(crate) async fn scoped<H: Held, T>(
    held: H,
    not_owner: usize,
    work: impl AsyncFnOnce(&H) -> T,
) -> Result<T, Error> {
    let outcome = {
        let work = work(&held);
        tokio::select! {
            // On a tie the loss wins: never report success for work that overran.
            biased;
            reason = held.lease().lost() => Err(reason),
            value = work => Ok(value),
        }
    };
    // `work` is dropped by now, so nothing of it runs after the release.
    let lease = held.into_lease();
    let lost = |reason| Error::Lost {
        resource: lease.resource().to_owned(),
        reason,
    };
    // Work that finished past the deadline (a runtime too busy for the watchdog to run, or
    // work that blocked inside a poll) overran the lease, whatever release says.
    let outcome = match outcome {
        Ok(_) if lease.validity().is_zero() => Err(LossReason::ValidityElapsed),
        other => other,
    };
    match outcome {
        Ok(value) => {
            let lost = lost(LossReason::NotOwner { nodes: not_owner });
            match lease.release().await {
                // Release failures leave keys to expire; the watchdog had proven the lease
                // held until the work finished, so the value stands.
                Ok(true) | Err(_) => Ok(value),
                Ok(false) => Err(lost),
            }
        }
        Err(reason) => {
            let err = lost(reason);
            // Best effort: the keys expire anyway.
            let _ = lease.release().await;
            Err(err)
        }
    }
}

/// Whether a wait should try again after this error.
///
/// A lasting error (a read-only or misconfigured node, a permission, a key of the wrong
/// type) ends the wait only when the nodes failing that way are enough, on their own, to
/// rule out a quorum. One such node among three is no reason to stop: the round it helped
/// lose may have been lost to another owner's key as well, and the other two nodes grant
/// once that key is gone.
fn retryable(e: &Error) -> bool {
    match e {
        Error::NoQuorum {
            errors,
            nodes,
            quorum,
            ..
        } => {
            let lasting = errors.iter().filter(|e| !e.kind().is_transient()).count();
            lasting <= nodes - quorum
        }
        Error::NoValidity { .. } => true,
        _ => false,
    }
}

fn jittered(delay: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let j = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
    let spread = rand::rng().random_range(0..=2 * j);
    (delay + Duration::from_micros(spread)).saturating_sub(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::quorum;

    #[test]
    fn jitter_stays_within_bounds() {
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(50));
        for _ in 0..1000 {
            let x = jittered(d, j);
            assert!(x >= d - j && x <= d + j, "{x:?}");
        }
    }

    /// Lasting errors end the wait only when they alone rule out a quorum; transient
    /// ones never do.
    #[test]
    fn lasting_errors_end_the_wait_only_when_they_rule_out_a_quorum() {
        use crate::error::{NodeError, NodeErrorKind, Step};
        for n in 1..=9usize {
            let q = quorum::quorum(n);
            for lasting in 0..=n {
                for transient in 0..=n - lasting {
                    let kinds = std::iter::repeat_n(NodeErrorKind::WrongType, lasting)
                        .chain(std::iter::repeat_n(NodeErrorKind::Timeout, transient));
                    let errors = kinds
                        .enumerate()
                        .map(|(i, k)| {
                            NodeError::new(&format!("n{i}"), Step::Acquire, k, "x".into())
                        })
                        .collect();
                    let e = Error::NoQuorum {
                        resource: "r".into(),
                        step: Step::Acquire,
                        granted: 0,
                        refused: 0,
                        failed: lasting + transient,
                        quorum: q,
                        nodes: n,
                        errors,
                    };
                    assert_eq!(retryable(&e), lasting + q <= n, "n {n}, lasting {lasting}");
                }
            }
        }
    }
}
