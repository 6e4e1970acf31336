//! Fencing tokens, and the storage side that makes them count.
//!
//! A lock alone cannot stop a holder that was paused (GC, swap, a stopped VM) past its
//! validity from writing after a newer holder did. Storage can: it remembers the highest
//! token it has seen for each key and refuses writes that carry a lower one. This module
//! ships that check for a Redis-backed store ([`RedisFencedStore`]) and for resources
//! inside one process ([`FenceGate`]).
//!
//! # The same check in SQL
//!
//! Keep the token next to the row, and make the comparison part of the write, so it is
//! atomic with it:
//!
//! ```sql
//! -- once: ALTER TABLE accounts ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
//! UPDATE accounts
//!    SET balance = $2, fence = $3
//!  WHERE id = $1 AND fence <= $3;
//! ```
//!
//! If no row changed, either the row does not exist or a newer holder (a higher token)
//! has written since: read the row's `fence` to tell which, and **do not retry the
//! write** with the same token: this holder's lock is gone. Abandon the critical section,
//! or acquire the lock again (a new, higher token) and redo the work from a fresh read.
//! For an insert, use `INSERT … ON CONFLICT (id) DO UPDATE SET … WHERE accounts.fence <=
//! EXCLUDED.fence`. Tokens are `u64`; store them in a `BIGINT`/`NUMERIC` column that can
//! hold them (PostgreSQL `BIGINT` holds every token below 2^63).

use std::collections::HashMap;
use std::fmt;

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Mutex, MutexGuard};

use crate::scripts::{FENCED_WRITE, hash_tag};

/// A fencing token: strictly greater than every token handed out before it for the same
/// resource, by any client, as long as the nodes keep acknowledged writes (AOF with
/// `appendfsync always`).
///
/// Each acquisition's token is committed on a majority of nodes before the guard is
/// returned, so it stays monotonic when nodes fail or a later holder reaches a different
/// majority. Pass it to every write the lock protects, and have storage reject writes
/// whose token is lower than one it has already seen (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw value (e.g. one read back from storage).
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value, to store next to the data it fences.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FencingToken> for u64 {
    fn from(t: FencingToken) -> Self {
        t.0
    }
}

/// What storage did with a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a rejected write means the lock was lost: stop the critical section"]
pub enum Verdict {
    /// Written: the token was at least the highest seen.
    Accepted,
    /// Refused: a newer holder has written. The critical section must stop.
    Rejected {
        /// The token this write carried.
        stale: FencingToken,
        /// The highest token storage has seen for the key.
        current: FencingToken,
    },
}

impl Verdict {
    /// True for [`Verdict::Accepted`].
    pub fn is_accepted(self) -> bool {
        matches!(self, Self::Accepted)
    }
}

/// The rule, in one place: a write is admitted when its token is not older than the
/// newest one seen (equal tokens are the same holder writing again).
pub(crate) fn admits(current: Option<FencingToken>, token: FencingToken) -> bool {
    current.is_none_or(|c| token >= c)
}

/// A value read back from a fenced store, with the token of the write that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced<T> {
    /// The value.
    pub value: T,
    /// The token it was written with.
    pub token: FencingToken,
}

/// A failure of the fenced store's own Redis (not a rejection, which is a [`Verdict`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's Redis failed or could not be reached.
    #[error("the fenced store's Redis call failed")]
    Redis(#[from] redis::RedisError),
    /// The store's key holds something this module did not write.
    #[error("fenced store: key {key:?} holds an unexpected reply {reply}")]
    BadReply {
        /// The data key.
        key: String,
        /// What was found.
        reply: String,
    },
}

/// A Redis-backed store whose writes are fenced: a value for a key is stored only when its
/// token is at least the highest token seen for that key, atomically (one Lua script).
///
/// Each key is a hash `<prefix>:{<key>}:data` with fields `value` and `fence`. The braces
/// are a Redis hash tag around the escaped key, as for locks, so the data and its audit log
/// `<prefix>:{<key>}:log` share a slot and no key collides with another's log. This is storage for the data the lock
/// protects, so it usually lives on another Redis than the lock nodes.
///
/// ```no_run
/// # async fn demo(client: redfence::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use redfence::fence::{RedisFencedStore, Verdict};
///
/// let store = RedisFencedStore::connect("redis://storage:6379").await?;
/// let guard = client.acquire("account:7").await?;
/// match store.write("account:7", guard.token(), b"balance=120").await? {
///     Verdict::Accepted => {}
///     Verdict::Rejected { current, .. } => {
///         eprintln!("a newer holder (token {current}) wrote first: stop");
///     }
/// }
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisFencedStore {
    conn: MultiplexedConnection,
    prefix: String,
    audit: bool,
}

impl fmt::Debug for RedisFencedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFencedStore")
            .field("prefix", &self.prefix)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl RedisFencedStore {
    /// Connects to the store's Redis, with keys under the prefix `fenced`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?;
        // Nagle off, as on the lock nodes: a write does not wait for the last one's ACK.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let conn = redis::Client::open(info.set_tcp_settings(tcp))?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self::new(conn))
    }

    /// Uses an existing connection, with keys under the prefix `fenced`.
    pub fn new(conn: MultiplexedConnection) -> Self {
        Self {
            conn,
            prefix: "fenced".to_owned(),
            audit: false,
        }
    }

    /// Puts keys under `prefix` instead.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Also appends every accepted token to a list `<prefix>:{<key>}:log`, in the order the
    /// store accepted them, so a test can audit that it never went backwards
    /// ([`accepted_log`](Self::accepted_log)). Off by default.
    #[must_use]
    pub fn with_audit_log(mut self) -> Self {
        self.audit = true;
        self
    }

    fn data_key(&self, key: &str) -> String {
        format!("{}:{{{}}}:data", self.prefix, hash_tag(key))
    }

    fn log_key(&self, key: &str) -> String {
        format!("{}:{{{}}}:log", self.prefix, hash_tag(key))
    }

    /// Stores `value` under `key` if `token` is at least the highest token seen for it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store's Redis fails; a refusal is `Ok(Verdict::Rejected)`.
    pub async fn write(
        &self,
        key: &str,
        token: FencingToken,
        value: &[u8],
    ) -> Result<Verdict, StoreError> {
        let data = self.data_key(key);
        let mut invocation = FENCED_WRITE.prepare_invoke();
        invocation.key(&data);
        if self.audit {
            invocation.key(self.log_key(key));
        }
        invocation.arg(token.get().to_string()).arg(value);
        let mut conn = self.conn.clone();
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let bad = || StoreError::BadReply {
            key: data.clone(),
            reply: format!("{reply:?}"),
        };
        let Value::Array(items) = &reply else {
            return Err(bad());
        };
        let (Some(Value::Int(flag)), Some(tok)) = (items.first(), items.get(1)) else {
            return Err(bad());
        };
        let current = parse_token(tok).ok_or_else(bad)?;
        Ok(if *flag == 1 {
            Verdict::Accepted
        } else {
            Verdict::Rejected {
                stale: token,
                current,
            }
        })
    }

    /// The value stored under `key`, with its token.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store's Redis fails or the key holds something else.
    pub async fn read(&self, key: &str) -> Result<Option<Fenced<Vec<u8>>>, StoreError> {
        let data = self.data_key(key);
        let mut conn = self.conn.clone();
        let (value, fence): (Option<Vec<u8>>, Option<Value>) = redis::cmd("HMGET")
            .arg(&data)
            .arg("value")
            .arg("fence")
            .query_async(&mut conn)
            .await?;
        match (value, fence) {
            (None, None) => Ok(None),
            (Some(value), Some(t)) => match parse_token(&t) {
                Some(token) => Ok(Some(Fenced { value, token })),
                None => Err(StoreError::BadReply {
                    key: data,
                    reply: format!("{t:?}"),
                }),
            },
            (v, t) => Err(StoreError::BadReply {
                key: data,
                reply: format!("value {v:?}, fence {t:?}"),
            }),
        }
    }

    /// Every token the store accepted for `key`, in acceptance order (needs
    /// [`with_audit_log`](Self::with_audit_log)).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store's Redis fails or the log holds something else.
    pub async fn accepted_log(&self, key: &str) -> Result<Vec<FencingToken>, StoreError> {
        let log = self.log_key(key);
        let mut conn = self.conn.clone();
        let raw: Vec<Value> = redis::cmd("LRANGE")
            .arg(&log)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        raw.iter()
            .map(|v| {
                parse_token(v).ok_or_else(|| StoreError::BadReply {
                    key: log.clone(),
                    reply: format!("{v:?}"),
                })
            })
            .collect()
    }
}

fn parse_token(v: &Value) -> Option<FencingToken> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok().map(FencingToken),
        Value::SimpleString(s) => s.parse().ok().map(FencingToken),
        Value::Int(n) => u64::try_from(*n).ok().map(FencingToken),
        _ => None,
    }
}

/// An in-process fence around a resource `T` (a file, a local database handle): holders
/// get access only with a token at least as new as the newest one admitted, and keep the
/// resource locked while they write, so the check and the write are one atomic step.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use redfence::FencingToken;
/// use redfence::fence::FenceGate;
///
/// let gate = FenceGate::new(Vec::<String>::new());
/// gate.enter(FencingToken::new(7)).await.unwrap().push("from 7".into());
/// // A holder with an older token (paused past its lease) is turned away.
/// assert!(gate.enter(FencingToken::new(6)).await.is_err());
/// gate.enter(FencingToken::new(8)).await.unwrap().push("from 8".into());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct FenceGate<T> {
    inner: Mutex<(Option<FencingToken>, T)>,
}

impl<T> FenceGate<T> {
    /// A gate that has admitted no token yet.
    pub fn new(resource: T) -> Self {
        Self {
            inner: Mutex::new((None, resource)),
        }
    }

    /// Admits `token` if it is at least the newest one admitted, and returns the resource,
    /// locked until the returned guard is dropped.
    ///
    /// # Errors
    ///
    /// [`Verdict::Rejected`] (as the error) when a newer token was admitted before.
    pub async fn enter(&self, token: FencingToken) -> Result<FenceGuard<'_, T>, Verdict> {
        let mut inner = self.inner.lock().await;
        let current = inner.0;
        if !admits(current, token) {
            return Err(Verdict::Rejected {
                stale: token,
                current: current.unwrap_or(token),
            });
        }
        inner.0 = Some(token);
        Ok(FenceGuard { inner })
    }

    /// The newest token admitted so far.
    pub async fn current(&self) -> Option<FencingToken> {
        self.inner.lock().await.0
    }
}

/// Access to a [`FenceGate`]'s resource, holding the gate.
#[derive(Debug)]
pub struct FenceGuard<'a, T> {
    inner: MutexGuard<'a, (Option<FencingToken>, T)>,
}

impl<T> std::ops::Deref for FenceGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.1
    }
}

impl<T> std::ops::DerefMut for FenceGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner.1
    }
}

/// Many in-process resources by name, each with its own newest token (for example one
/// per file path). Checking and recording are one atomic step per name.
#[derive(Debug, Default)]
pub struct FenceMap {
    highest: std::sync::Mutex<HashMap<String, FencingToken>>,
}

impl FenceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits `token` for `name` if it is at least the newest one admitted for it (and
    /// records it), or says which newer token was.
    pub fn admit(&self, name: &str, token: FencingToken) -> Verdict {
        let mut map = self
            .highest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = map.get(name).copied();
        if admits(current, token) {
            map.insert(name.to_owned(), token);
            Verdict::Accepted
        } else {
            Verdict::Rejected {
                stale: token,
                current: current.unwrap_or(token),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model: the map admits exactly the tokens not below the running max,
        /// and what it reports as current is that max.
        #[test]
        fn fence_map_matches_the_running_max(
            writes in proptest::collection::vec((0u8..3, any::<u16>()), 1..200),
        ) {
            let map = FenceMap::new();
            let mut model: HashMap<u8, u64> = HashMap::new();
            for (name, t) in writes {
                let t = u64::from(t);
                let verdict = map.admit(&name.to_string(), FencingToken(t));
                let max = model.get(&name).copied();
                if max.is_none_or(|m| t >= m) {
                    prop_assert_eq!(verdict, Verdict::Accepted);
                    model.insert(name, t);
                } else {
                    prop_assert_eq!(verdict, Verdict::Rejected {
                        stale: FencingToken(t),
                        current: FencingToken(max.unwrap()),
                    });
                }
            }
        }
    }
}
