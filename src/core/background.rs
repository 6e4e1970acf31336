//! [`Background`]: the work a client leaves running after the calls that started it
//! returned, counted so that it can be waited for.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::StreamExt;
use tokio::sync::Notify;

use super::round::NodeCalls;
use crate::observe;

/// One client's background work: calls left to finish after their round was decided,
/// releases of failed attempts and dropped guards, re-releases of late grants. Each task
/// is counted while it lives, so that [`Client::shutdown`](crate::Client::shutdown) can
/// wait for them before the runtime ends and takes unsent releases with it.
#[derive(Debug, Default)]
pub(crate) struct Background {
    running: AtomicUsize,
    idle: Notify,
}

impl Background {
    /// Runs `work` on a spawned task, counted until it ends or is dropped, in the span of
    /// the operation that left it (what its calls tell is told as that operation's).
    pub(crate) fn spawn(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        let work = observe::in_current_span(work);
        let counted = Counted::new(self);
        tokio::spawn(async move {
            work.await;
            drop(counted);
        });
    }

    /// Lets calls still in flight finish on a background task; none of them is awaited by
    /// the caller. The multiplexed connection has already taken each command in order, so
    /// any command sent later to the same node runs after it.
    pub(crate) fn finish<T: Send + 'static>(self: &Arc<Self>, calls: NodeCalls<T>) {
        if !calls.is_empty() {
            self.spawn(calls.for_each(|_| async {}));
        }
    }

    /// Tasks still running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until no task runs, or `limit` passes; returns the tasks still running.
    pub(crate) async fn idle(&self, limit: Duration) -> usize {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the count is read, so the last task's notification
                // cannot fall between the two.
                notified.as_mut().enable();
                if self.running() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, idle).await;
        self.running()
    }
}

/// One background task, counted in [`Background::running`] while it lives (its future
/// dropped with a runtime that shuts down counts out too).
struct Counted(Arc<Background>);

impl Counted {
    fn new(background: &Arc<Background>) -> Self {
        background.running.fetch_add(1, Ordering::SeqCst);
        observe::gauge("redfence_background_tasks", 1.0);
        Self(Arc::clone(background))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        observe::gauge("redfence_background_tasks", -1.0);
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
