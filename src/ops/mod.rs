//! Operator tools: every node's view of a lock ([`Client::inspect`](crate::Client::inspect)),
//! the locks held now ([`Client::list_locks`](crate::Client::list_locks)), breaking a
//! dead owner's lock ([`Client::force_release`](crate::Client::force_release)), and the
//! node settings that break a promise
//! ([`Client::check_nodes`](crate::Client::check_nodes)).

mod checks;
mod list;
mod status;

pub use checks::{NodeCheck, NodeWarning};
pub use status::{LockStatus, NodeLock, NodeReaders, NodeView, ReadersView, RwLockStatus};
