//! One node: a lazily opened, shared multiplexed connection, per-call timeouts, and the
//! typed script calls.
//!
//! Connections open on first use, on a spawned task, so a node that is down at start-up
//! does not stop the client from building, and a connect that outlives the caller's
//! timeout still finishes in the background for the next call to use. A connection is
//! dropped and reopened only when it is broken, never on a timeout: a reply that arrives
//! late is still matched to its own request, because the multiplexed connection keeps
//! order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError,
    RedisResult, Script, ServerError, ServerErrorKind, Value,
};

use crate::clock;
use crate::error::{NodeError, NodeErrorKind, Step};
use crate::scripts::{COMMIT, EXTEND, INSPECT, Keys, RELEASE};

type Connecting = Shared<BoxFuture<'static, Result<(MultiplexedConnection, u64), NodeError>>>;

/// The node's connection. A failed connect leaves it `Idle`, so the next call that needs
/// the node tries again at once: a node that comes back is used by the first call after
/// it does, and no call is ever answered with an earlier call's error. Calls arriving
/// while a connect is under way share it, so a dead node costs one connect attempt at a
/// time, and a black-holed one costs each call no more than its own timeout.
enum Conn {
    Idle,
    Connecting(Connecting),
    Ready(MultiplexedConnection, u64),
}

/// One Redis primary.
pub(crate) struct Node {
    name: String,
    /// This node's slot in the client, and what every slot's server is.
    index: usize,
    servers: Arc<Servers>,
    client: Client,
    config: AsyncConnectionConfig,
    timeout: Duration,
    conn: Mutex<Conn>,
    generation: AtomicU64,
    /// One permit per call waiting for this node's answer (`max_in_flight`). The
    /// connection's send buffer has room for as many, so a send never waits inside the
    /// `redis` crate, where a caller that gave up would leave its command unsent without
    /// anyone knowing.
    slots: tokio::sync::Semaphore,
    max_in_flight: usize,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one node's release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Release {
    /// The key was the owner's, and this call's answer says it deleted it.
    pub(crate) deleted: bool,
    /// When the release was sent a second time, on a new connection, because the first
    /// connection broke before its answer came. The first send may have run: a repeat
    /// that finds nothing to delete may be finding its own earlier work.
    pub(crate) repeated_at: Option<Instant>,
}

/// What one server looks like from every address the builder can tell apart without a
/// lookup: `localhost`, `127.0.0.1` and `::1` on one port are one server, and IP literals
/// compare in their canonical form (`::ffff:10.0.0.1` is `10.0.0.1`). Two node URLs with
/// the same identity would let one server vote twice. Names that need DNS are compared as
/// written; the `run_id` check on connect ([`Servers`]) catches the rest.
pub(crate) fn identity(client: &Client) -> String {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let host = match bare.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.to_canonical().is_loopback() && is_plain_loopback(ip) => {
                    "localhost".to_owned()
                }
                Ok(ip) => ip.to_canonical().to_string(),
                Err(_) if bare.eq_ignore_ascii_case("localhost") => "localhost".to_owned(),
                Err(_) => bare.to_ascii_lowercase(),
            };
            format!("{host}:{port}")
        }
        _ => address(client),
    }
}

/// `127.0.0.1` or `::1`, the addresses `localhost` resolves to.
fn is_plain_loopback(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// The `run_id` each node slot's current connection reported, so that one server reached
/// under two addresses the builder could not tell apart (two DNS names, a proxy) is
/// refused on the second slot instead of voting twice.
#[derive(Debug)]
pub(crate) struct Servers {
    names: Vec<String>,
    run_ids: Mutex<Vec<Option<String>>>,
}

impl Servers {
    pub(crate) fn new(names: Vec<String>) -> Self {
        let run_ids = Mutex::new(vec![None; names.len()]);
        Self { names, run_ids }
    }

    /// Records that slot `i` reached the server `run_id`, or names the other slot that
    /// already reaches it.
    fn claim(&self, i: usize, run_id: &str) -> Result<(), &str> {
        let mut ids = self.run_ids.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = ids
            .iter()
            .enumerate()
            .find(|(j, id)| *j != i && id.as_deref() == Some(run_id));
        if let Some((j, _)) = taken {
            return Err(self.names.get(j).map_or("another node", String::as_str));
        }
        if let Some(slot) = ids.get_mut(i) {
            *slot = Some(run_id.to_owned());
        }
        Ok(())
    }
}

/// `host:port` (or the socket path) of a parsed URL, as nodes are named in errors.
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
        (index, servers): (usize, Arc<Servers>),
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
            index,
            servers,
            client,
            config,
            timeout,
            conn: Mutex::new(Conn::Idle),
            generation: AtomicU64::new(0),
            slots: tokio::sync::Semaphore::new(buffer),
            max_in_flight: buffer,
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
                Conn::Idle => {
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
            let opened = match node
                .client
                .get_multiplexed_async_connection_with_config(&node.config)
                .await
            {
                Ok(c) => node.check_server(c).await,
                Err(e) => Err(NodeError::from_redis(&node.name, Step::Connect, e)),
            };
            let mut conn = node.conn.lock().unwrap_or_else(PoisonError::into_inner);
            match opened {
                Ok(c) => {
                    let generation = node.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    *conn = Conn::Ready(c.clone(), generation);
                    Ok((c, generation))
                }
                Err(e) => {
                    *conn = Conn::Idle;
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

    /// Refuses a connection to a server another slot of this client already reaches (its
    /// `run_id` from `INFO server`). A node that does not let us read `INFO` (an ACL, a
    /// renamed command) is used unchecked: the check must not cost availability.
    async fn check_server(
        &self,
        mut conn: MultiplexedConnection,
    ) -> Result<MultiplexedConnection, NodeError> {
        let info: RedisResult<String> = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await;
        let run_id = match info {
            Ok(text) => text
                .lines()
                .find_map(|l| l.trim_end().strip_prefix("run_id:").map(str::to_owned)),
            Err(e) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                return Err(NodeError::from_redis(&self.name, Step::Connect, e));
            }
            Err(_) => None,
        };
        match run_id.map(|id| self.servers.claim(self.index, &id).map_err(str::to_owned)) {
            Some(Err(other)) => Err(NodeError::new(
                &self.name,
                Step::Connect,
                NodeErrorKind::SameServer,
                format!(
                    "this is the same server as node {other} (one run_id): counting it twice \
                     would let one server vote twice; give each server once"
                ),
            )),
            Some(Ok(())) | None => Ok(conn),
        }
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
        // Set once this call holds a slot: a call that times out before it did was never
        // handed to the connection.
        let admitted = AtomicBool::new(false);
        let deadline = Instant::now() + self.timeout;
        let call = async {
            // Waits (within the timeout below) while `max_in_flight` calls already wait for
            // this node; held until this call ends. The semaphore is never closed. A slot
            // freed by a call that timed out may come at the very moment this call times
            // out as well: it is then not sent, or every call queued behind a frozen node
            // would slip through, one freed slot after another, as its time ran out.
            let slot = self.slots.acquire().await;
            if slot.is_err() || Instant::now() >= deadline {
                return Err(self.not_sent(step));
            }
            admitted.store(true, Ordering::Relaxed);
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
            Err(_) if !admitted.load(Ordering::Relaxed) => Err(self.not_sent(step)),
            Err(_) => Err(NodeError::timeout(&self.name, step, self.timeout)),
        }
    }

    /// The error of a call that found `max_in_flight` calls waiting for this node for its
    /// whole timeout: it was never sent, so it had no effect.
    fn not_sent(&self, step: Step) -> NodeError {
        NodeError::new(
            &self.name,
            step,
            NodeErrorKind::Timeout,
            format!(
                "not sent: {} calls were already waiting for this node's answers for the whole \
                 {:?} timeout (max_in_flight)",
                self.max_in_flight, self.timeout
            ),
        )
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

    /// Deletes the lock where it is `owner`'s. `announce` publishes the release for
    /// waiters (a held lock); clean-ups of failed attempts pass false.
    pub(crate) async fn release(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        announce: bool,
    ) -> Result<Release, NodeError> {
        let channel = if announce { keys.released.as_str() } else { "" };
        let request = evalsha(&RELEASE, &[&keys.lock], |c| {
            c.arg(owner).arg(channel);
        });
        let repeated_at = Mutex::new(None);
        let v = self
            .call_repeating(Step::Release, request, || {
                *repeated_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(clock::now());
            })
            .await?;
        Ok(Release {
            deleted: self.flag(Step::Release, v)?,
            repeated_at: repeated_at
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        })
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
