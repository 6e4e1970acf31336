//! Operator tools: every node's view of a lock ([`Client::inspect`](crate::Client::inspect))
//! and the node settings that break a promise
//! ([`Client::check_nodes`](crate::Client::check_nodes)).

mod checks;
mod status;

pub use checks::{NodeCheck, NodeWarning};
pub use status::{LockStatus, NodeLock, NodeView};
