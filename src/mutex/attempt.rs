//! One mutex acquisition attempt: the lease core's grant (`lease::grant`) with the
//! mutex's claim, `SET lock owner NX GET PX ttl` + `INCR fence` on each node (see
//! `Node::acquire` for why that pipeline keeps tokens increasing), wrapped in a guard.
//! Also what every primitive's attempt shares: its terms, and the guard with its watchdog.

use std::sync::Arc;

use super::{AcquirePlan, LockGuard};
use crate::client::Client;
use crate::error::Error;
use crate::lease::grant::{self, Granted, Terms, Won};
use crate::lease::watchdog::WatchdogTask;
use crate::lease::{Lease, LeaseHandle};
use crate::scripts::Keys;

impl Client {
    /// One attempt: the shared grant with the mutex's claim, then the guard and, when
    /// asked for, its watchdog.
    pub(crate) async fn attempt(
        &self,
        resource: &str,
        keys: &Arc<Keys>,
        plan: &AcquirePlan,
    ) -> Result<Option<LockGuard>, Error> {
        let candidates = std::slice::from_ref(keys);
        let name = |_| resource.to_owned();
        let terms = self.terms(plan, true);
        let won = grant::acquire(self.nodes(), resource, candidates, terms, name, |c| {
            let keys = Arc::clone(keys);
            async move {
                let on_repeat = c.on_repeat();
                let counter = c.node.acquire(&keys, &c.owner, c.ttl_ms, on_repeat).await?;
                Ok(counter.map(Granted::only))
            }
        })
        .await?;
        Ok(won.map(|Won { lease, .. }| self.guard(lease, plan)))
    }

    /// The terms of an attempt under `plan`; `commit`: whether its token is committed.
    pub(crate) fn terms(&self, plan: &AcquirePlan, commit: bool) -> Terms {
        let s = self.settings();
        Terms {
            ttl: plan.ttl,
            min_validity: s.min_validity,
            node_timeout: s.node_timeout,
            commit,
        }
    }

    /// A won lease as a guard, with its watchdog when `plan` asks for one.
    pub(crate) fn guard(&self, lease: Arc<Lease>, plan: &AcquirePlan) -> LockGuard {
        let watchdog = plan
            .watchdog
            .map(|w| WatchdogTask::start(&lease, w, self.watchdog_count()));
        LockGuard::new(LeaseHandle::new(lease, watchdog))
    }
}
