//! [`Client::inspect`]: a read-only look at one lock on every node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use crate::client::Client;
use crate::error::{Error, NodeError};
use crate::mutex::check_resource;
use crate::scripts::{Keys, RwKeys};

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
        Ok(self.inspect_keys(resource, &keys).await)
    }

    /// Every node's view of the lease on `keys` (a mutex's, a semaphore slot's, a
    /// reader-writer lock's writer key), reported as `resource`.
    pub(crate) async fn inspect_keys(&self, resource: &str, keys: &Keys) -> LockStatus {
        let views = join_all(self.nodes().iter().map(|node| {
            let node = Arc::clone(node);
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
        let owners = views
            .iter()
            .filter_map(|v| v.state.as_ref().ok()?.owner.as_deref());
        let holder = on_quorum(owners, quorum).into_iter().next();
        LockStatus {
            resource: resource.to_owned(),
            nodes: views,
            holder,
            quorum,
        }
    }
}

/// The ids named by at least `quorum` of the nodes' answers (`ids` holds each node's ids,
/// each id once per node), in id order.
pub(crate) fn on_quorum<'a>(ids: impl Iterator<Item = &'a str>, quorum: usize) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n >= quorum)
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// A reader-writer lock on one node: its live readers and a waiting writer's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeReaders {
    /// The readers whose entries are live there, with the lease each has left, in id
    /// order.
    pub readers: Vec<(String, Duration)>,
    /// The id of the writer waiting there (one per wait), if its marker is set: new
    /// readers are refused where it is.
    pub waiting_writer: Option<String>,
}

/// One node's view of a reader-writer lock's readers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReadersView {
    /// The node, as `host:port`.
    pub node: String,
    /// What the node said, or why it could not be asked.
    pub state: Result<NodeReaders, NodeError>,
}

/// Every node's view of a reader-writer lock ([`RwLock::inspect`](crate::RwLock::inspect)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RwLockStatus {
    /// The writer's side, as a lock named after the reader-writer lock: its holder on a
    /// quorum, and the fence counter (the newest writer token).
    pub writer: LockStatus,
    /// The readers' side, per node, in the client's order.
    pub nodes: Vec<ReadersView>,
    /// The readers live on a quorum of nodes, in id order.
    pub readers: Vec<String>,
    /// The waiting writer whose marker is on a quorum, if one is: readers that come now
    /// are refused until it has written or given up.
    pub waiting_writer: Option<String>,
}

impl RwLockStatus {
    /// True when a writer or at least one reader holds the lock on a quorum.
    pub fn is_held(&self) -> bool {
        self.writer.is_held() || !self.readers.is_empty()
    }
}

impl Client {
    /// Every node's view of a reader-writer lock's keys (see [`RwLock::inspect`](crate::RwLock::inspect)).
    pub(crate) async fn inspect_rw(&self, name: &str, keys: &RwKeys) -> RwLockStatus {
        let writer = self.inspect_keys(name, &keys.writer);
        let readers = join_all(self.nodes().iter().map(|node| {
            let node = Arc::clone(node);
            async move {
                let state = match node.readers(&keys.reader).await {
                    Ok(readers) => {
                        node.inspect(&keys.waiting)
                            .await
                            .map(|(waiting_writer, _, _)| NodeReaders {
                                readers: readers
                                    .into_iter()
                                    .map(|(id, ms)| (id, Duration::from_millis(ms)))
                                    .collect(),
                                waiting_writer,
                            })
                    }
                    Err(e) => Err(e),
                };
                ReadersView {
                    node: node.name().to_owned(),
                    state,
                }
            }
        }));
        let (writer, nodes) = futures::join!(writer, readers);
        let quorum = writer.quorum;
        let up = || nodes.iter().filter_map(|v| v.state.as_ref().ok());
        let readers = on_quorum(
            up().flat_map(|s| s.readers.iter().map(|(id, _)| id.as_str())),
            quorum,
        );
        let waiting_writer = on_quorum(up().filter_map(|s| s.waiting_writer.as_deref()), quorum)
            .into_iter()
            .next();
        RwLockStatus {
            writer,
            nodes,
            readers,
            waiting_writer,
        }
    }
}
