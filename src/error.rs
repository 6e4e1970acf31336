//! Error types. Every failure that involves a node names it; nothing from the network
//! panics.

use std::fmt;
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Everything that can go wrong in redfence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client's settings are invalid; nothing was contacted.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The resource name cannot be used as a lock name.
    #[error("invalid resource name {name:?}: {reason}")]
    InvalidResource {
        /// The name as given (cut to 64 characters).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A quorum of nodes could not be reached for a step, so its outcome is unknown or
    /// negative because of failures (not because another owner holds the lock).
    #[error(
        "{step} of {resource:?} reached no quorum: {granted} granted, {refused} refused, \
         {failed} failed (quorum {quorum} of {nodes}){}",
        NodeErrors(errors)
    )]
    NoQuorum {
        /// The lock name.
        resource: String,
        /// The step that failed.
        step: Step,
        /// Nodes that did what was asked.
        granted: usize,
        /// Nodes that answered no (held by another owner, or not ours).
        refused: usize,
        /// Nodes that failed or timed out; see `errors`.
        failed: usize,
        /// Nodes needed.
        quorum: usize,
        /// Nodes in the client.
        nodes: usize,
        /// Each failed node's cause, naming the node.
        errors: Vec<NodeError>,
    },

    /// `acquire` gave up: the lock was not obtained within the wait timeout.
    #[error(
        "timed out after {waited:?} waiting for {resource:?} ({attempts} attempts){}",
        if last_error.is_some() { "" } else { "; held by another owner" }
    )]
    WaitTimeout {
        /// The lock name.
        resource: String,
        /// How long `acquire` waited.
        waited: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error, when it failed rather than found the lock held (also
        /// the [`source`](std::error::Error::source) of this error).
        #[source]
        last_error: Option<Box<Error>>,
    },

    /// The lock can no longer be proven held (an extend after expiry, another owner).
    #[error("lock {resource:?} lost: {reason}")]
    Lost {
        /// The lock name.
        resource: String,
        /// Why.
        reason: LossReason,
    },

    /// A key-based release or extension named a lock this handle does not hold (never
    /// taken, already released, or lost).
    #[error("no lock on {resource:?} is held here")]
    NotHeld {
        /// The lock name.
        resource: String,
    },

    /// A quorum granted, but the attempt took so long that no validity was left (a
    /// TTL too short for the network, or a stalled client).
    #[error(
        "acquiring {resource:?} took {elapsed:?}, leaving no validity of the {ttl:?} ttl \
         (drift allowance {drift:?})"
    )]
    NoValidity {
        /// The lock name.
        resource: String,
        /// How long the attempt took.
        elapsed: Duration,
        /// The lease asked for.
        ttl: Duration,
        /// The drift allowance.
        drift: Duration,
    },
}

impl Error {
    /// True when a timeout caused this: the wait timeout, or every failed node timed out.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::WaitTimeout { .. } => true,
            Self::NoQuorum { errors, .. } => {
                !errors.is_empty() && errors.iter().all(NodeError::is_timeout)
            }
            _ => false,
        }
    }

    /// True when the lock is held by another owner (only `WaitTimeout` without a last
    /// error says so: `try_acquire` reports a held lock as `Ok(None)`).
    pub fn is_held_elsewhere(&self) -> bool {
        matches!(
            self,
            Self::WaitTimeout {
                last_error: None,
                ..
            }
        )
    }

    /// True for [`Error::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// The per-node causes carried by this error, if any.
    pub fn node_errors(&self) -> &[NodeError] {
        match self {
            Self::NoQuorum { errors, .. } => errors,
            Self::WaitTimeout {
                last_error: Some(e),
                ..
            } => e.node_errors(),
            _ => &[],
        }
    }
}

/// Lists per-node causes after an error message, each with its whole chain of sources
/// (the per-node errors are not this error's source: there are several).
struct NodeErrors<'a>(&'a [NodeError]);

impl fmt::Display for NodeErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{e}")?;
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

/// Why a held lock can no longer be proven held.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LossReason {
    /// A majority of nodes answered that the lock key is gone or belongs to another owner.
    NotOwner {
        /// Nodes that said so.
        nodes: usize,
    },
    /// A majority of nodes answered that `resource`, one of a set's resources
    /// ([`Client::acquire_all`](crate::Client::acquire_all)), is gone or belongs to
    /// another owner: the whole set is lost (an extension renews all of a set's keys or
    /// none).
    PartNotOwner {
        /// The resource found gone (the one most of those nodes named first, in the
        /// set's name order).
        resource: String,
        /// Nodes that said the set is not ours.
        nodes: usize,
    },
    /// Failed nodes kept a quorum out of reach until the validity ran out.
    QuorumUnreachable {
        /// Each failed or silent node's cause, naming the node.
        errors: Vec<NodeError>,
    },
    /// The validity ran out before an extension completed (or the extension was asked for
    /// after it had run out).
    ValidityElapsed,
    /// The watchdog reached its maximum hold time and stopped extending.
    MaxHoldReached {
        /// How long the lock had been held.
        held: Duration,
    },
    /// Not a loss: the owner released the lock. `lost()` answers this for a released
    /// lock, so that nothing waiting on it (a `select!`, another task) waits forever.
    Released,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOwner { nodes } => {
                write!(f, "{nodes} nodes say the lock is gone or has another owner")
            }
            Self::PartNotOwner { resource, nodes } => write!(
                f,
                "{nodes} nodes say the set's resource {resource:?} is gone or has another owner"
            ),
            Self::QuorumUnreachable { errors } => {
                write!(f, "no quorum could renew it in time{}", NodeErrors(errors))
            }
            Self::ValidityElapsed => f.write_str("validity elapsed before it could be extended"),
            Self::MaxHoldReached { held } => {
                write!(f, "maximum hold time reached after {held:?}")
            }
            Self::Released => f.write_str("released by its owner"),
        }
    }
}

/// The protocol step in which a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Opening the connection.
    Connect,
    /// `SET NX PX` + `INCR`.
    Acquire,
    /// Raising the fence counter to the chosen token.
    Commit,
    /// Renewing the lease.
    Extend,
    /// Deleting the lock.
    Release,
    /// Reading a lock's state ([`Client::inspect`](crate::Client::inspect)) or a node's
    /// settings ([`Client::check_nodes`](crate::Client::check_nodes)).
    Inspect,
    /// Publishing an election's leader record.
    Proclaim,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Acquire => "acquire",
            Self::Commit => "token commit",
            Self::Extend => "extend",
            Self::Release => "release",
            Self::Inspect => "inspect",
            Self::Proclaim => "proclaim",
        })
    }
}

/// What kind of failure a node had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeErrorKind {
    /// Nothing listens at the node's address.
    ConnectionRefused,
    /// No answer within the per-node timeout (a paused or overloaded node).
    Timeout,
    /// Other I/O failure (reset, broken pipe, DNS).
    Io,
    /// Authentication failed (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The ACL user may not run a command or touch a key (`NOPERM`).
    NoPermission,
    /// A key redfence uses holds a value of another type: a user's key collides with a
    /// lock or fence key.
    WrongType,
    /// The node is loading its dataset (`LOADING`).
    Loading,
    /// The node is busy or cannot take writes for now (`BUSY`, `TRYAGAIN`, `OOM`,
    /// `MASTERDOWN`, `CLUSTERDOWN`).
    Busy,
    /// The TLS handshake failed (untrusted certificate, TLS to a plain port).
    Tls,
    /// The node answered something redfence does not understand.
    BadReply,
    /// The client could not set up a connection with its own settings (TLS set-up).
    InvalidConfig,
    /// Any other error the node returned.
    Server,
    /// The node is the same server as another node of the client (one `run_id` under two
    /// addresses), so it is not counted: one server must not vote twice.
    SameServer,
}

impl NodeErrorKind {
    /// True for failures that may pass by themselves (a node down, paused, loading,
    /// busy): worth retrying. Authentication, permission, TLS, wrong-type, bad-reply and
    /// other server errors (such as a corrupt fence counter) are lasting.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::ConnectionRefused | Self::Timeout | Self::Io | Self::Loading | Self::Busy
        )
    }
}

/// One node's failure, naming the node.
#[derive(Debug, Clone)]
pub struct NodeError {
    node: String,
    step: Step,
    kind: NodeErrorKind,
    detail: String,
    source: Option<RedisError>,
}

impl NodeError {
    pub(crate) fn new(node: &str, step: Step, kind: NodeErrorKind, detail: String) -> Self {
        Self {
            node: node.to_owned(),
            step,
            kind,
            detail,
            source: None,
        }
    }

    pub(crate) fn timeout(node: &str, step: Step, after: Duration) -> Self {
        Self::new(
            node,
            step,
            NodeErrorKind::Timeout,
            format!("no answer within {after:?}"),
        )
    }

    /// No answer before a budget other than the node timeout ran out (`budget` says which,
    /// e.g. "the lock's validity"), `after` the call started.
    pub(crate) fn out_of_time(node: &str, step: Step, budget: &str, after: Duration) -> Self {
        Self::new(
            node,
            step,
            NodeErrorKind::Timeout,
            format!("no answer before {budget} ran out, {after:?} after the call"),
        )
    }

    /// The node's error as the [`source`](std::error::Error::source); this error's own
    /// message says only which node and step (and, with [`about`](Self::about), what it
    /// was working on), so that a printed chain says each thing once.
    pub(crate) fn from_redis(node: &str, step: Step, err: RedisError) -> Self {
        Self {
            node: node.to_owned(),
            step,
            kind: classify(&err),
            detail: String::new(),
            source: Some(err),
        }
    }

    /// Prefixes the detail with what the node was working on (a key, say).
    pub(crate) fn about(mut self, what: &str) -> Self {
        self.detail = if self.detail.is_empty() {
            what.to_owned()
        } else {
            format!("{what}: {}", self.detail)
        };
        self
    }

    /// The node, as `host:port` (never with credentials).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> NodeErrorKind {
        self.kind
    }

    /// True when the node did not answer in time.
    pub fn is_timeout(&self) -> bool {
        self.kind == NodeErrorKind::Timeout
    }
}

/// Equal when node, step, kind and message agree. The underlying `RedisError` is left
/// out: its own equality is false for I/O errors, even against themselves.
impl PartialEq for NodeError {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
            && self.step == other.step
            && self.kind == other.kind
            && self.detail == other.detail
            && self.source.as_ref().map(ToString::to_string)
                == other.source.as_ref().map(ToString::to_string)
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} ({})", self.node, self.step)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

fn classify(err: &RedisError) -> NodeErrorKind {
    if err.is_connection_refusal() {
        return NodeErrorKind::ConnectionRefused;
    }
    if err.is_timeout() {
        return NodeErrorKind::Timeout;
    }
    match err.kind() {
        ErrorKind::AuthenticationFailed => return NodeErrorKind::Auth,
        ErrorKind::InvalidClientConfig => return NodeErrorKind::InvalidConfig,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => return NodeErrorKind::BadReply,
        ErrorKind::Server(ServerErrorKind::NoPerm) => return NodeErrorKind::NoPermission,
        ErrorKind::Server(ServerErrorKind::BusyLoading) => return NodeErrorKind::Loading,
        ErrorKind::Server(
            ServerErrorKind::TryAgain | ServerErrorKind::MasterDown | ServerErrorKind::ClusterDown,
        ) => return NodeErrorKind::Busy,
        _ => {}
    }
    let text = err.to_string();
    if err.is_io_error() {
        // redis-rs keeps the I/O error private; rustls' failures reach us as I/O errors
        // with these words. Only the retry policy depends on telling them apart.
        let lower = text.to_ascii_lowercase();
        return if ["certificate", "fatal alert", "tls"]
            .iter()
            .any(|w| lower.contains(w))
        {
            NodeErrorKind::Tls
        } else {
            NodeErrorKind::Io
        };
    }
    match err.code() {
        Some("WRONGTYPE") => NodeErrorKind::WrongType,
        Some("NOAUTH" | "WRONGPASS") => NodeErrorKind::Auth,
        Some("NOPERM") => NodeErrorKind::NoPermission,
        Some("BUSY" | "OOM" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN") => NodeErrorKind::Busy,
        // Before Redis 7, an error raised inside a script arrives as
        // "ERR Error running script ... WRONGTYPE ...".
        _ if text.contains("WRONGTYPE") => NodeErrorKind::WrongType,
        _ => NodeErrorKind::Server,
    }
}

/// A setting the builder rejected, naming the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No node was given.
    #[error("no nodes: give at least one node URL (three or more for fault tolerance)")]
    NoNodes,
    /// A node URL does not parse.
    #[error("node URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The same server appears twice, which would let one server count as two votes.
    #[error(
        "node {node} is given twice ({first:?} and {second:?}); nodes must be independent servers"
    )]
    DuplicateNode {
        /// `host:port`.
        node: String,
        /// First URL (password redacted).
        first: String,
        /// Second URL (password redacted).
        second: String,
    },
    /// A duration that must be positive is zero.
    #[error("{setting} must be greater than zero")]
    Zero {
        /// The setting.
        setting: &'static str,
    },
    /// A duration is beyond any sensible bound.
    #[error("{setting} of {value:?} is too large (at most {max:?})")]
    TooLarge {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: Duration,
        /// The largest accepted.
        max: Duration,
    },
    /// The TTL leaves no validity after the drift allowance and the time a round may take.
    #[error(
        "ttl of {ttl:?} is too small: drift ({drift:?}) plus two node timeouts ({node_timeout:?} each) \
         plus min_validity ({min_validity:?}) already use it; use a ttl above {minimum:?}"
    )]
    TtlTooSmall {
        /// The TTL given.
        ttl: Duration,
        /// Its drift allowance.
        drift: Duration,
        /// The per-node timeout.
        node_timeout: Duration,
        /// The minimum validity asked for.
        min_validity: Duration,
        /// The smallest TTL that would be accepted.
        minimum: Duration,
    },
    /// The drift factor is not a number in `[0, 0.5)`.
    #[error("drift_factor {0} is invalid: it must be at least 0 and below 0.5")]
    DriftFactor(f64),
    /// The key prefix is unusable.
    #[error("key prefix {prefix:?} is invalid: {reason}")]
    Prefix {
        /// The prefix given.
        prefix: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The TLS settings (root certificate, client identity) were rejected.
    #[error("TLS settings for {url:?} are invalid: {reason}")]
    Tls {
        /// The URL, password redacted.
        url: String,
        /// Why they were rejected.
        reason: String,
    },
    /// The watchdog's interval leaves no time to extend before the validity runs out.
    #[error(
        "extend_interval of {interval:?} is too long for a ttl of {ttl:?}: it must be above \
         zero and below {max:?}, to leave one extension round before the validity runs out"
    )]
    ExtendInterval {
        /// The interval.
        interval: Duration,
        /// The TTL it would extend.
        ttl: Duration,
        /// The longest accepted interval.
        max: Duration,
    },
    /// A semaphore's permit count is zero or beyond the supported bound.
    #[error("permits of {value} is out of range: a semaphore has 1 to {max} permits")]
    Permits {
        /// The count given.
        value: usize,
        /// The largest accepted.
        max: usize,
    },
    /// The jitter is larger than the retry delay it varies.
    #[error("retry_jitter {jitter:?} is larger than retry_delay {delay:?}")]
    Jitter {
        /// The jitter given.
        jitter: Duration,
        /// The retry delay.
        delay: Duration,
    },
}
