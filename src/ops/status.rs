//! [`Client::inspect`]: a read-only look at one lock on every node.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use crate::client::Client;
use crate::error::{Error, NodeError};
use crate::mutex::check_resource;
use crate::scripts::Keys;

/// One node's view of a lock.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeView {
    /// The node, as `host:port`.
    pub node: String,
    /// What the node said, or why it could not be asked.
    pub state: Result<NodeLock, NodeError>,
}

/// A lock as one node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeLock {
    /// The owner id holding it there, if any (an opaque random id per acquisition).
    pub owner: Option<String>,
    /// The lease left on this node.
    pub ttl: Option<Duration>,
    /// The fence counter on this node (the last token it handed out or committed).
    pub fence: Option<u64>,
}

/// Every node's view of a lock, and what they add up to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The lock name.
    pub resource: String,
    /// Per node, in the client's order.
    pub nodes: Vec<NodeView>,
    /// The owner that holds it on a quorum of nodes, if one does.
    pub holder: Option<String>,
    /// Nodes needed.
    pub quorum: usize,
}

impl LockStatus {
    /// True when one owner holds the lock on a quorum.
    pub fn is_held(&self) -> bool {
        self.holder.is_some()
    }

    /// The highest fence counter any reachable node has: the newest token handed out.
    pub fn newest_token(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|v| v.state.as_ref().ok()?.fence)
            .max()
    }
}

impl Client {
    /// Looks at `resource` on every node (owner, remaining lease, fence counter) without
    /// changing anything; for operators and dashboards, not for deciding who may write.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for a bad name. Unreachable nodes are reported per node
    /// in [`NodeView::state`], not as an error.
    pub async fn inspect(&self, resource: &str) -> Result<LockStatus, Error> {
        check_resource(resource)?;
        let keys = Keys::new(&self.settings().prefix, resource);
        let views = join_all(self.nodes().iter().map(|node| {
            let (node, keys) = (Arc::clone(node), &keys);
            async move {
                let state = node
                    .inspect(keys)
                    .await
                    .map(|(owner, ttl, fence)| NodeLock {
                        owner,
                        ttl: ttl.map(Duration::from_millis),
                        fence,
                    });
                NodeView {
                    node: node.name().to_owned(),
                    state,
                }
            }
        }))
        .await;
        let quorum = self.quorum();
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for owner in views
            .iter()
            .filter_map(|v| v.state.as_ref().ok()?.owner.as_deref())
        {
            match counts.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, n)) => *n += 1,
                None => counts.push((owner, 1)),
            }
        }
        let holder = counts
            .into_iter()
            .find(|&(_, n)| n >= quorum)
            .map(|(o, _)| o.to_owned());
        Ok(LockStatus {
            resource: resource.to_owned(),
            nodes: views,
            holder,
            quorum,
        })
    }
}
