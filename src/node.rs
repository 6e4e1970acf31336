//! One node: a lazily opened, shared multiplexed connection, per-call timeouts, and the
//! typed script calls.
//!
//! Connections open on first use, on a spawned task, so a node that is down at start-up
//! does not stop the client from building, and a connect that outlives the caller's
//! timeout still finishes in the background for the next call to use. A connection is
//! dropped and reopened only when it is broken, never on a timeout: a reply that arrives
//! late is still matched to its own request, because the multiplexed connection keeps
//! order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError,
    RedisResult, Script, ServerError, ServerErrorKind, Value,
};

use crate::error::{NodeError, NodeErrorKind, Step};
use crate::scripts::{COMMIT, EXTEND, INSPECT, Keys, RELEASE};

type Connecting = Shared<BoxFuture<'static, Result<(MultiplexedConnection, u64), NodeError>>>;

enum Conn {
    Idle,
    Connecting(Connecting),
    Ready(MultiplexedConnection, u64),
    /// The last connect failed; calls fail at once with its error until `retry_at`, so a
    /// dead node costs nothing per call rather than a connect attempt each time.
    Down(NodeError, Instant),
}

/// How long a failed connect is remembered before the next call tries again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// One Redis primary.
pub(crate) struct Node {
    name: String,
    client: Client,
    config: AsyncConnectionConfig,
    timeout: Duration,
    conn: Mutex<Conn>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `host:port` (or the socket path) of a parsed URL: what makes two nodes the same server.
pub(crate) fn address(client: &Client) -> String {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            if host.contains(':') {
                format!("[{}]:{port}", host.to_ascii_lowercase())
            } else {
                format!("{}:{port}", host.to_ascii_lowercase())
            }
        }
        ConnectionAddr::Unix(path) => format!("unix:{}", path.display()),
        // `ConnectionAddr` is non-exhaustive; a future kind still gets a stable name.
        other => format!("{other}"),
    }
}

impl Node {
    pub(crate) fn new(
        client: Client,
        timeout: Duration,
        connect_timeout: Duration,
        buffer: usize,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            // Timeouts are ours (per call, below); a late reply must stay matched to its
            // request rather than fail the connection.
            .set_response_timeout(None)
            // The default buffer (50) makes sends wait for room under load, and a waiting
            // send can be overtaken; size it for the in-flight load.
            .set_pipeline_buffer_size(buffer);
        Self {
            name: address(&client),
            client,
            config,
            timeout,
            conn: Mutex::new(Conn::Idle),
            generation: AtomicU64::new(0),
        }
    }

    /// The parsed URL's client (for the pub/sub connection).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// `host:port`, never with credentials.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The shared connection, opening it in the background if needed.
    async fn connection(self: &Arc<Self>) -> Result<(MultiplexedConnection, u64), NodeError> {
        let connecting = {
            let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            match &*conn {
                Conn::Ready(c, generation) => return Ok((c.clone(), *generation)),
                // A connect task that ended without storing its result (cancelled with
                // its runtime, or panicked) must not pin the node as failed forever.
                Conn::Connecting(f) if matches!(f.peek(), Some(Err(_))) => {
                    let f = self.spawn_connect();
                    *conn = Conn::Connecting(f.clone());
                    f
                }
                Conn::Connecting(f) => f.clone(),
                Conn::Down(e, retry_at) if Instant::now() < *retry_at => return Err(e.clone()),
                Conn::Idle | Conn::Down(..) => {
                    let f = self.spawn_connect();
                    *conn = Conn::Connecting(f.clone());
                    f
                }
            }
        };
        connecting.await
    }

    fn spawn_connect(self: &Arc<Self>) -> Connecting {
        let node = Arc::clone(self);
        let task = tokio::spawn(async move {
            let opened = node
                .client
                .get_multiplexed_async_connection_with_config(&node.config)
                .await;
            let mut conn = node.conn.lock().unwrap_or_else(PoisonError::into_inner);
            match opened {
                Ok(c) => {
                    let generation = node.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    *conn = Conn::Ready(c.clone(), generation);
                    Ok((c, generation))
                }
                Err(e) => {
                    let e = NodeError::from_redis(&node.name, Step::Connect, e);
                    *conn = Conn::Down(e.clone(), Instant::now() + RECONNECT_BACKOFF);
                    Err(e)
                }
            }
        });
        let name = self.name.clone();
        task.map(move |joined| {
            joined.unwrap_or_else(|e| {
                Err(NodeError::new(
                    &name,
                    Step::Connect,
                    NodeErrorKind::Io,
                    format!("connect task ended: {e}"),
                ))
            })
        })
        .boxed()
        .shared()
    }

    /// Forgets a broken connection so the next call reopens it (unless a newer one is
    /// already in place).
    fn invalidate(&self, generation: u64) {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*conn, Conn::Ready(_, g) if *g == generation) {
            *conn = Conn::Idle;
        }
    }

    /// Sends `request` (see [`send`]), bounded by the per-node timeout, connection
    /// included.
    ///
    /// A connection found broken (the node restarted since it was opened) is replaced and
    /// the call sent once more, within the same timeout: every call is idempotent for its
    /// owner, so one that did run before the break is safe to repeat.
    async fn call(self: &Arc<Self>, step: Step, request: Request) -> Result<Value, NodeError> {
        self.call_repeating(step, request, || {}).await
    }

    /// [`call`](Self::call), telling `on_repeat` just before a repeat is sent.
    async fn call_repeating(
        self: &Arc<Self>,
        step: Step,
        request: Request,
        on_repeat: impl Fn(),
    ) -> Result<Value, NodeError> {
        let call = async {
            let mut retried = false;
            loop {
                let (mut conn, generation) = self.connection().await?;
                if retried {
                    on_repeat();
                }
                match send(&mut conn, &request).await {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        let broken = e.is_connection_dropped() || e.is_unrecoverable_error();
                        if broken {
                            self.invalidate(generation);
                        }
                        if !broken || retried {
                            return Err(NodeError::from_redis(&self.name, step, e));
                        }
                        retried = true;
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(NodeError::timeout(&self.name, step, self.timeout)),
        }
    }

    fn bad_reply(&self, step: Step, value: &Value) -> NodeError {
        NodeError::new(
            &self.name,
            step,
            NodeErrorKind::BadReply,
            format!("unexpected reply {value:?}"),
        )
    }

    /// `Some(counter)` when granted, `None` when held by another owner.
    ///
    /// One pipeline, `SET lock owner NX GET PX ttl` then `INCR fence`: two plain commands
    /// cost the node about a third of a Lua script doing the same (`INFO commandstats`,
    /// 1.1 µs against 4 µs a grant). Unlike the script, `INCR` runs on a refusal too, and
    /// other clients' commands may run between the two. Neither weakens the token:
    /// counters only grow, and no one else's `SET` can succeed on this node between our
    /// `SET` and our `INCR`, because our key stays until our release (sent only after this
    /// reply) or its expiry (which leaves the attempt no validity). So the `INCR` we see
    /// ran while we held the lock here, on a counter at least as high as every token
    /// committed before, which is what [`commit`](crate::attempt) relies on.
    ///
    /// `GET` makes a key of the wrong type an error rather than a refusal, and tells a
    /// key already holding our owner id (ours, whatever put it there) from another
    /// owner's. It needs Redis 7.0 or Valkey.
    ///
    /// A grant repeated on a new connection may land after the owner's release there (the
    /// release can overtake it); `on_repeat` is told before the repeat is sent, so that
    /// the owner's end does not count on that release (see `Ending::deleted`).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        ttl_ms: u64,
        on_repeat: impl Fn(),
    ) -> Result<Option<u64>, NodeError> {
        let step = Step::Acquire;
        // Sized up front: each growing buffer would be another allocation per node.
        let mut set = Cmd::with_capacity(7, keys.lock.len() + owner.len() + 96);
        set.arg("SET")
            .arg(&keys.lock)
            .arg(owner)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl_ms);
        let mut incr = Cmd::with_capacity(2, keys.fence.len() + 32);
        incr.arg("INCR").arg(&keys.fence);
        let mut pipe = Pipeline::with_capacity(2);
        pipe.add_command(set).add_command(incr).ignore_errors();
        let v = self
            .call_repeating(step, Request::Pipeline(pipe), on_repeat)
            .await?;
        let Value::Array(replies) = &v else {
            return Err(self.bad_reply(step, &v));
        };
        let [set, incr] = replies.as_slice() else {
            return Err(self.bad_reply(step, &v));
        };
        match set {
            Value::Nil => {}
            Value::BulkString(held) if held.as_slice() == owner.as_bytes() => {}
            Value::BulkString(_) => return Ok(None),
            Value::ServerError(e) => return Err(self.refused_set(step, e, &keys.lock)),
            _ => return Err(self.bad_reply(step, &v)),
        }
        let err = match incr {
            Value::Int(n) if *n >= 1 => return Ok(Some(n.cast_unsigned())),
            Value::Int(_) => NodeError::new(
                &self.name,
                step,
                NodeErrorKind::Server,
                format!("fence counter {} is not positive", keys.fence),
            ),
            Value::ServerError(e) => NodeError::from_redis(&self.name, step, e.clone().into())
                .about(&format!("fence counter {}", keys.fence)),
            _ => self.bad_reply(step, &v),
        };
        // A grant without a token is no grant, but it is not undone here: a second call
        // would let this one take twice the node timeout. The attempt releases every node
        // that did not plainly refuse when it fails, and its guard releases every node when
        // it wins. (Rare: a user's key under the counter's name, or a counter at its end.)
        Err(err)
    }

    /// The error for a `SET` the node rejected, with a hint where the reason is known.
    fn refused_set(&self, step: Step, e: &ServerError, key: &str) -> NodeError {
        let err = NodeError::from_redis(&self.name, step, RedisError::from(e.clone()));
        if err.to_string().contains("syntax error") {
            err.about(&format!(
                "SET NX GET on {key} (redfence needs Redis 7.0 or later, or Valkey)"
            ))
        } else {
            err.about(&format!("lock key {key}"))
        }
    }

    /// A counter sent back as a decimal string (exact, unlike a Lua number).
    fn counter(&self, v: &Value) -> Option<u64> {
        match v {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The counter after raising it to `token`, or `None` when the lock is not ours.
    pub(crate) async fn commit(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        token: u64,
    ) -> Result<Option<u64>, NodeError> {
        let step = Step::Commit;
        let request = evalsha(&COMMIT, &[&keys.lock, &keys.fence], |c| {
            c.arg(owner).arg(token);
        });
        let v = self.call(step, request).await?;
        match v {
            Value::Nil | Value::Boolean(false) => Ok(None),
            ref bulk @ Value::BulkString(_) => self
                .counter(bulk)
                .map(Some)
                .ok_or_else(|| self.bad_reply(step, &v)),
            other => Err(self.bad_reply(step, &other)),
        }
    }

    /// True when the lease was renewed, false when the lock is not ours.
    pub(crate) async fn extend(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<bool, NodeError> {
        let request = evalsha(&EXTEND, &[&keys.lock], |c| {
            c.arg(owner).arg(ttl_ms);
        });
        let v = self.call(Step::Extend, request).await?;
        self.flag(Step::Extend, v)
    }

    /// True when the lock was ours and is now deleted. `announce` publishes the release
    /// for waiters (a held lock); clean-ups of failed attempts pass false.
    pub(crate) async fn release(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        announce: bool,
    ) -> Result<bool, NodeError> {
        let channel = if announce { keys.released.as_str() } else { "" };
        let request = evalsha(&RELEASE, &[&keys.lock], |c| {
            c.arg(owner).arg(channel);
        });
        let v = self.call(Step::Release, request).await?;
        self.flag(Step::Release, v)
    }

    /// Owner, remaining lease and counter of a resource, without changing anything.
    pub(crate) async fn inspect(
        self: &Arc<Self>,
        keys: &Keys,
    ) -> Result<(Option<String>, Option<u64>, Option<u64>), NodeError> {
        let step = Step::Inspect;
        let request = evalsha(&INSPECT, &[&keys.lock, &keys.fence], |_| {});
        let v = self.call(step, request).await?;
        let Value::Array(items) = &v else {
            return Err(self.bad_reply(step, &v));
        };
        let owner = match items.first() {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        // PTTL: -2 no key, -1 no expiry; both mean "no lease left to report".
        let pttl = match items.get(1) {
            Some(Value::Int(ms)) => u64::try_from(*ms).ok(),
            _ => return Err(self.bad_reply(step, &v)),
        };
        let counter = match items.get(2) {
            // The node answered as asked; a counter that is no token (a key of the user's,
            // or one set by hand) is a finding about the data, not a bad reply.
            Some(bulk @ Value::BulkString(b)) => Some(self.counter(bulk).ok_or_else(|| {
                NodeError::new(
                    &self.name,
                    step,
                    NodeErrorKind::Server,
                    format!(
                        "fence counter {} holds {:?}, which is not a token (a positive integer)",
                        keys.fence,
                        String::from_utf8_lossy(b)
                    ),
                )
            })?),
            _ => None,
        };
        Ok((owner, pttl, counter))
    }

    /// `CONFIG GET` of the named settings, as (name, value) pairs.
    pub(crate) async fn config_get(
        self: &Arc<Self>,
        names: &[&str],
    ) -> Result<Vec<(String, String)>, NodeError> {
        let step = Step::Inspect;
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(names);
        let v = self.call(step, Request::Command(cmd)).await?;
        let Value::Array(items) = &v else {
            return Err(self.bad_reply(step, &v));
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        items
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => text(name)
                    .zip(text(value))
                    .ok_or_else(|| self.bad_reply(step, &v)),
                _ => Err(self.bad_reply(step, &v)),
            })
            .collect()
    }

    /// The text of `INFO` for the named sections.
    pub(crate) async fn info(self: &Arc<Self>, sections: &[&str]) -> Result<String, NodeError> {
        let step = Step::Inspect;
        let mut cmd = redis::cmd("INFO");
        cmd.arg(sections);
        match self.call(step, Request::Command(cmd)).await? {
            Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Value::VerbatimString { text, .. } => Ok(text),
            other => Err(self.bad_reply(step, &other)),
        }
    }

    fn flag(&self, step: Step, v: Value) -> Result<bool, NodeError> {
        match v {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(self.bad_reply(step, &other)),
        }
    }
}

/// `EVALSHA sha numkeys keys... args...` of `script`, the arguments added by `args`;
/// sized so that building it does not reallocate.
fn evalsha(script: &'static Script, keys: &[&str], args: impl FnOnce(&mut Cmd)) -> Request {
    let data = 64 + script.get_hash().len() + keys.iter().map(|k| k.len()).sum::<usize>();
    let mut cmd = Cmd::with_capacity(5 + keys.len(), data + 64);
    cmd.arg("EVALSHA")
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys);
    args(&mut cmd);
    Request::Script(script, cmd)
}

/// What one call sends.
enum Request {
    /// An EVALSHA of the script (see [`evalsha`]).
    Script(&'static Script, Cmd),
    /// Plain commands in one write; their replies come back as an array, errors included.
    Pipeline(Pipeline),
    /// One plain command.
    Command(Cmd),
}

/// Sends a request. An EVALSHA that meets NOSCRIPT (a node restarted without
/// persistence, or after `SCRIPT FLUSH`) loads the script and is sent once more.
async fn send(conn: &mut MultiplexedConnection, request: &Request) -> RedisResult<Value> {
    match request {
        Request::Script(script, cmd) => match cmd.query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(conn).await?;
                cmd.query_async(conn).await
            }
            r => r,
        },
        Request::Pipeline(pipe) => pipe.query_async(conn).await,
        Request::Command(cmd) => cmd.query_async(conn).await,
    }
}
