//! [`Client::check_nodes`]: the node settings that redfence's promises depend on.
//!
//! Tokens stay strictly increasing and a lock stays exclusive only while every node keeps
//! what it acknowledged: no eviction, durable counter writes, no failover to a replica
//! that missed them (README, "Safety: what the nodes must promise"). The client can read most of this and says which
//! promise a setting breaks; what it cannot read (an ACL without `CONFIG`, a node down) is
//! reported as unreadable, never as an error.

use std::fmt;
use std::sync::Arc;

use futures::future::join_all;

use crate::client::Client;
use crate::error::NodeError;
use crate::node::Node;
use crate::observe;

/// One node's settings, judged against what redfence relies on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeCheck {
    /// The node, as `host:port`.
    pub node: String,
    /// Settings that break a promise. Empty when everything that could be read is fine.
    pub warnings: Vec<NodeWarning>,
    /// Why some settings could not be read (an ACL without `CONFIG` or `INFO`, a renamed
    /// command, the node down); what could not be read is not judged.
    pub unreadable: Vec<NodeError>,
}

/// A node setting that breaks one of the promises redfence relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeWarning {
    /// `maxmemory-policy` lets the node evict keys under memory pressure: under
    /// `allkeys-*` the fence counters (which have no TTL) can go, and tokens with them;
    /// under `volatile-*` live locks can.
    Eviction {
        /// The policy in force.
        policy: String,
    },
    /// A crash can lose acknowledged writes: AOF off, or `appendfsync` other than
    /// `always`. The fence counters may then go backwards after a restart.
    NotDurable {
        /// `appendonly`.
        appendonly: bool,
        /// `appendfsync`.
        appendfsync: String,
    },
    /// The node is a replica: lock writes fail on it.
    Replica,
    /// The node has replicas: a failover to one of them may lose the latest lock and
    /// counter writes.
    HasReplicas {
        /// How many are connected.
        replicas: u64,
    },
    /// The node runs in Redis Cluster mode, where keys live on other nodes and fail
    /// over to replicas.
    ClusterMode,
}

impl fmt::Display for NodeWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eviction { policy } => {
                let what = if policy.starts_with("volatile") {
                    "live lock keys"
                } else {
                    "fence counters (tokens could go backwards) and live lock keys"
                };
                write!(
                    f,
                    "maxmemory-policy is {policy}: the node may evict {what}; use noeviction"
                )
            }
            Self::NotDurable {
                appendonly,
                appendfsync,
            } => {
                let aof = if *appendonly {
                    format!("appendfsync is {appendfsync}")
                } else {
                    "appendonly is no".to_owned()
                };
                write!(
                    f,
                    "{aof}: a crash can lose acknowledged fence counter writes (tokens could go \
                     backwards); use appendonly yes with appendfsync always, or keep a crashed \
                     node out for longer than the largest TTL"
                )
            }
            Self::Replica => f.write_str(
                "the node is a replica: lock writes fail on it; use independent primaries",
            ),
            Self::HasReplicas { replicas } => write!(
                f,
                "the node has {replicas} replica(s): a failover to one may lose the latest lock \
                 and counter writes; use independent primaries without failover"
            ),
            Self::ClusterMode => f.write_str(
                "the node runs in Redis Cluster mode: use independent primaries, not a cluster",
            ),
        }
    }
}

impl Client {
    /// Reads every node's settings and says which of redfence's promises they break
    /// (see [`NodeWarning`]). Worth running once at start-up, or from monitoring;
    /// `redfence status` prints it.
    ///
    /// Never fails: a node whose settings cannot be read (down, or an ACL without
    /// `CONFIG GET` or `INFO`) says why in [`NodeCheck::unreadable`].
    ///
    /// ```no_run
    /// # async fn f(client: redfence::Client) {
    /// for node in client.check_nodes().await {
    ///     for w in &node.warnings {
    ///         eprintln!("redfence: node {}: {w}", node.node);
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn check_nodes(&self) -> Vec<NodeCheck> {
        join_all(self.nodes().iter().map(check)).await
    }
}

async fn check(node: &Arc<Node>) -> NodeCheck {
    let (config, info) = futures::join!(
        node.config_get(&["maxmemory", "maxmemory-policy", "appendonly", "appendfsync"]),
        node.info(&["replication", "cluster"]),
    );
    let mut warnings = Vec::new();
    let mut unreadable = Vec::new();
    match config {
        Ok(settings) => warnings.extend(judge_config(&settings)),
        Err(e) => unreadable.push(e),
    }
    match info {
        Ok(text) => warnings.extend(judge_info(&text)),
        Err(e) => unreadable.push(e),
    }
    for w in &warnings {
        observe::node_warning(node.name(), w);
    }
    NodeCheck {
        node: node.name().to_owned(),
        warnings,
        unreadable,
    }
}

/// The warnings `CONFIG GET maxmemory maxmemory-policy appendonly appendfsync` calls for.
/// A setting missing from the reply is not judged, except that an evicting policy is
/// named unless `maxmemory` is known to be 0 (no limit, so nothing is ever evicted).
fn judge_config(settings: &[(String, String)]) -> Vec<NodeWarning> {
    let get = |name: &str| {
        settings
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mut warnings = Vec::new();
    let unlimited = get("maxmemory").as_deref() == Some("0");
    if let Some(policy) = get("maxmemory-policy").filter(|p| p != "noeviction" && !unlimited) {
        warnings.push(NodeWarning::Eviction { policy });
    }
    if let (Some(aof), Some(fsync)) = (get("appendonly"), get("appendfsync")) {
        let appendonly = aof == "yes";
        if !appendonly || fsync != "always" {
            warnings.push(NodeWarning::NotDurable {
                appendonly,
                appendfsync: fsync,
            });
        }
    }
    warnings
}

/// The warnings `INFO replication cluster` calls for.
fn judge_info(text: &str) -> Vec<NodeWarning> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    let mut warnings = Vec::new();
    if matches!(field("role"), Some("slave" | "replica")) {
        warnings.push(NodeWarning::Replica);
    }
    if let Some(replicas) = field("connected_slaves")
        .and_then(|n| n.parse().ok())
        .filter(|&n: &u64| n > 0)
    {
        warnings.push(NodeWarning::HasReplicas { replicas });
    }
    if field("cluster_enabled") == Some("1") {
        warnings.push(NodeWarning::ClusterMode);
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn safe_settings_give_no_warning() {
        let s = pairs(&[
            ("maxmemory-policy", "noeviction"),
            ("appendonly", "yes"),
            ("appendfsync", "always"),
        ]);
        assert_eq!(judge_config(&s), []);
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n# Cluster\r\ncluster_enabled:0\r\n";
        assert_eq!(judge_info(info), []);
    }

    #[test]
    fn each_broken_promise_is_named() {
        let s = pairs(&[
            ("maxmemory-policy", "allkeys-lru"),
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
        ]);
        assert_eq!(
            judge_config(&s),
            [
                NodeWarning::Eviction {
                    policy: "allkeys-lru".into()
                },
                NodeWarning::NotDurable {
                    appendonly: true,
                    appendfsync: "everysec".into()
                }
            ]
        );
        let info = "role:master\r\nconnected_slaves:2\r\ncluster_enabled:1\r\n";
        assert_eq!(
            judge_info(info),
            [
                NodeWarning::HasReplicas { replicas: 2 },
                NodeWarning::ClusterMode
            ]
        );
        assert_eq!(judge_info("role:slave\r\n"), [NodeWarning::Replica]);
    }

    /// Without a memory limit no policy evicts anything.
    #[test]
    fn an_evicting_policy_without_a_memory_limit_is_harmless() {
        let policy = |maxmemory: &str| {
            judge_config(&pairs(&[
                ("maxmemory", maxmemory),
                ("maxmemory-policy", "allkeys-lru"),
            ]))
        };
        assert_eq!(policy("0"), []);
        assert_eq!(
            policy("104857600"),
            [NodeWarning::Eviction {
                policy: "allkeys-lru".into()
            }]
        );
    }

    #[test]
    fn what_is_missing_is_not_judged() {
        assert_eq!(judge_config(&pairs(&[("appendonly", "no")])), []);
        assert_eq!(judge_info(""), []);
        assert_eq!(judge_info("connected_slaves:many\r\n"), []);
    }

    #[test]
    fn warnings_read_as_sentences_naming_the_setting() {
        let w = NodeWarning::Eviction {
            policy: "volatile-ttl".into(),
        };
        assert!(w.to_string().contains("volatile-ttl"), "{w}");
        assert!(w.to_string().contains("live lock keys"), "{w}");
        let w = NodeWarning::NotDurable {
            appendonly: false,
            appendfsync: "everysec".into(),
        };
        assert!(w.to_string().starts_with("appendonly is no"), "{w}");
    }
}
