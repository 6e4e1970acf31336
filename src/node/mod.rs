//! One node: a lazily opened, shared multiplexed connection and per-call timeouts (here),
//! its typed calls ([`commands`]), and telling servers apart ([`servers`]).
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
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisResult, Script, ServerErrorKind,
    Value,
};

mod commands;
mod servers;

pub(crate) use commands::{Announce, LogRead, Release, Renewal};
pub(crate) use servers::{Servers, address, identity};

use crate::error::{NodeError, NodeErrorKind, Step};
use crate::observe::NodeHealth;

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
    connect_timeout: Duration,
    conn: Mutex<Conn>,
    generation: AtomicU64,
    /// One permit per call waiting for this node's answer (`max_in_flight`). The
    /// connection's send buffer has room for as many, so a send never waits inside the
    /// `redis` crate, where a caller that gave up would leave its command unsent without
    /// anyone knowing.
    slots: tokio::sync::Semaphore,
    max_in_flight: usize,
    health: NodeHealth,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
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
            connect_timeout,
            conn: Mutex::new(Conn::Idle),
            generation: AtomicU64::new(0),
            slots: tokio::sync::Semaphore::new(buffer),
            max_in_flight: buffer,
            health: NodeHealth::default(),
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

    /// This node's calls, failures and reconnects.
    pub(crate) fn health(&self) -> &NodeHealth {
        &self.health
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
                    node.health.connected(&node.name, generation);
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
        // Bounded like the connect itself: a server that accepted and then froze must not
        // pin the node in "connecting".
        let info = tokio::time::timeout(
            self.connect_timeout,
            redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut conn),
        )
        .await;
        let run_id = match info {
            Err(_) => {
                return Err(NodeError::timeout(
                    &self.name,
                    Step::Connect,
                    self.connect_timeout,
                ));
            }
            Ok(Ok(text)) => text
                .lines()
                .find_map(|l| l.trim_end().strip_prefix("run_id:").map(str::to_owned)),
            Ok(Err(e)) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                return Err(NodeError::from_redis(&self.name, Step::Connect, e));
            }
            Ok(Err(_)) => None,
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
        self.health.call();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) if !admitted.load(Ordering::Relaxed) => Err(self.not_sent(step)),
            Err(_) => Err(NodeError::timeout(&self.name, step, self.timeout)),
        };
        match &result {
            Ok(_) => self.health.answered(&self.name),
            Err(e) => self.health.failed(e),
        }
        result
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
