//! Network faults between a client and a node: an in-process loopback TCP proxy that a
//! test switches at run time.
//!
//! A [`Proxy`] listens on a free port of `127.0.0.1` and forwards every connection to a
//! node's port. [`Cluster::proxies`](super::Cluster::proxies) puts one in front of every
//! node of a cluster; each call makes a new, independent set, so two clients given two
//! sets can be partitioned separately (a one-way partition of selected clients).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use redfence::testkit::{Cluster, Fault};
//!
//! let cluster = Cluster::start(3)?;
//! let proxies = cluster.proxies()?;
//! let client = proxies.client_builder().build()?;
//! let guard = client.acquire("job").await?;
//! // Node 0 runs the release, but its reply is lost and the connection drops.
//! proxies.set(0, Fault::CutNextReply)?;
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! | fault | requests (client → node) | replies (node → client) | connections |
//! | --- | --- | --- | --- |
//! | [`None`](Fault::None) | forwarded | forwarded | kept |
//! | [`Latency(d)`](Fault::Latency) | forwarded `d` later | forwarded `d` later | kept |
//! | [`DropReplies`](Fault::DropReplies) | forwarded (they run) | discarded | kept: clients time out |
//! | [`CutReplies`](Fault::CutReplies) | forwarded (they run) | not forwarded | closed at a reply |
//! | [`CutNextReply`](Fault::CutNextReply) | forwarded (they run) | the next one cut | that one closed |
//! | [`BlackHole`](Fault::BlackHole) | discarded | discarded | kept, new ones accepted |
//! | [`Reset`](Fault::Reset) | — | — | open and new ones reset (`RST`) |
//! | [`Refuse`](Fault::Refuse) | — | — | open ones closed, connects refused |
//!
//! A fault applies at once to open and new connections, and to chunks still held back
//! by a latency: the fault in force when a chunk is due decides. The proxy reads
//! whatever the socket has, so "a reply" is one read chunk from the node: on loopback
//! that is one reply per command, though pipelined replies may share a chunk.
//!
//! Bytes a fault discarded leave a connection's byte stream with a gap, which TCP itself
//! never does (a client would match later replies to the wrong requests). So once the
//! fault is neither [`DropReplies`](Fault::DropReplies) nor
//! [`BlackHole`](Fault::BlackHole), a connection that lost bytes is closed instead of
//! forwarding again; its client reconnects.
//!
//! The proxy runs on its own thread with its own Tokio runtime: it serves sync tests and
//! any test runtime, and keeps going while the test's runtime is blocked. Dropping it
//! closes every connection and its port, and joins the thread. It only ever touches
//! `127.0.0.1`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Error;
use crate::ClientBuilder;

/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;
/// Listen backlog.
const BACKLOG: u32 = 1024;
/// Pause before retrying a failed accept or re-listen.
const RETRY: Duration = Duration::from_millis(10);
/// Stands in for a latency too long to add to an `Instant`.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest wait in [`Proxy::set`] for the port to close or reopen.
const DOOR_WAIT: Duration = Duration::from_secs(1);

/// What a [`Proxy`] does to traffic; see the table in the [module docs](self).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Fault {
    /// Plain forwarding.
    #[default]
    None,
    /// Every chunk, in each direction, is delivered this much later than it arrived, in
    /// order, so a round trip gains twice this. A change applies to chunks arriving after
    /// it.
    Latency(Duration),
    /// A one-way partition node → client: requests reach the node and run there, replies
    /// are silently discarded, connections stay open (the client sees timeouts).
    DropReplies,
    /// Requests reach the node and run; when a reply comes back it is not forwarded and
    /// the client's connection is closed at once ("request executed, reply lost"). Lasts
    /// until healed.
    CutReplies,
    /// [`CutReplies`](Self::CutReplies) once: the next reply from the node, on any
    /// connection of this proxy, is discarded and its client connection closed; then the
    /// fault reverts to [`None`](Self::None) by itself.
    CutNextReply,
    /// Every open connection is reset (`SO_LINGER` 0, so the client reads
    /// `ECONNRESET`), and new connections are accepted and reset at once.
    Reset,
    /// A black hole (a one-way partition client → node): connections are accepted, the
    /// client's bytes are read and thrown away, nothing is forwarded in either direction
    /// and nothing answers. Open connections are affected too.
    BlackHole,
    /// A dead node without killing it: the port refuses connects (`ECONNREFUSED`) and
    /// open connections are closed. Any other fault listens again on the same port.
    Refuse,
}

impl Fault {
    /// True for the faults that throw bytes away while a connection stays open.
    fn discards(&self) -> bool {
        matches!(self, Self::DropReplies | Self::BlackHole)
    }
}

/// A loopback TCP proxy in front of one node, with a switchable [`Fault`]; see the
/// [module docs](self).
#[must_use = "the proxy stops when dropped"]
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    /// Dropped (or sent) to stop the proxy's thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the test and the proxy's tasks share.
struct Shared {
    upstream: u16,
    fault: watch::Sender<Fault>,
    connections: AtomicU64,
    cut: AtomicU64,
    /// Whether the port listens, as the accept loop last set it.
    listening: Mutex<bool>,
    door: Condvar,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            port,
            shared,
            stop: _,
            thread: _,
        } = self;
        f.debug_struct("Proxy")
            .field("port", port)
            .field("upstream", &shared.upstream)
            .field("fault", &*shared.fault.borrow())
            .field("connections", &shared.connections.load(Relaxed))
            .field("cut", &shared.cut.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts a proxy on a free port of `127.0.0.1`, forwarding to
    /// `127.0.0.1:upstream_port`, with [`Fault::None`]. The node need not be up: while it
    /// is down, each connection is closed at once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the thread, the runtime or the listening socket cannot be made.
    pub fn start(upstream_port: u16) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            upstream: upstream_port,
            fault: watch::Sender::new(Fault::None),
            connections: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            listening: Mutex::new(true),
            door: Condvar::new(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("redfence-proxy".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(shared, stopped, &ready_tx)
            })
            .map_err(|source| Error::Io {
                what: format!("start a proxy thread for port {upstream_port}"),
                source,
            })?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the proxy thread ended before listening")));
        match ready {
            Ok(port) => Ok(Self {
                port,
                shared,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(source) => {
                let _ = thread.join();
                Err(Error::Io {
                    what: format!("listen on 127.0.0.1 for a proxy to port {upstream_port}"),
                    source,
                })
            }
        }
    }

    /// The port the proxy listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's URL, `redis://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The node port it forwards to.
    #[must_use]
    pub fn upstream(&self) -> u16 {
        self.shared.upstream
    }

    /// Switches the fault, at once, for open and new connections. To or from
    /// [`Fault::Refuse`] it returns once the port is closed or listens again (waiting at
    /// most a second), so a connect right after it sees the new state.
    pub fn set(&self, fault: Fault) {
        let refuse = fault == Fault::Refuse;
        self.shared.fault.send_replace(fault);
        // The accept loop closes or reopens the port on the proxy's thread.
        let listening = lock(&self.shared.listening);
        let _ = self
            .shared
            .door
            .wait_timeout_while(listening, DOOR_WAIT, |listening| *listening == refuse);
    }

    /// Back to plain forwarding: `set(Fault::None)`.
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// The fault in force ([`Fault::CutNextReply`] reads [`Fault::None`] once used).
    #[must_use]
    pub fn fault(&self) -> Fault {
        self.shared.fault.borrow().clone()
    }

    /// Connections accepted so far, including those a fault reset or closed at once: a
    /// rise shows a client reconnected.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Relaxed)
    }

    /// Replies (chunks from the node) withheld from clients so far: cut, dropped or
    /// black-holed.
    #[must_use]
    pub fn cut(&self) -> u64 {
        self.shared.cut.load(Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Closing the channel stops the accept loop; the thread then drops its runtime,
        // and with it every task and socket.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One [`Proxy`] per node of a [`Cluster`](super::Cluster), in node order; made by
/// [`Cluster::proxies`](super::Cluster::proxies).
#[must_use = "the proxies stop when dropped"]
pub struct Proxies {
    proxies: Vec<Proxy>,
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { proxies } = self;
        f.debug_list().entries(proxies).finish()
    }
}

impl Proxies {
    /// Starts a proxy for each port, in order.
    pub(super) fn start(ports: impl IntoIterator<Item = u16>) -> Result<Self, Error> {
        let proxies = ports
            .into_iter()
            .map(Proxy::start)
            .collect::<Result<_, _>>()?;
        Ok(Self { proxies })
    }

    /// Number of proxies (nodes).
    #[must_use]
    pub fn len(&self) -> usize {
        self.proxies.len()
    }

    /// True when there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// Node `i`'s proxy.
    ///
    /// # Panics
    ///
    /// If there is no node `i`.
    pub fn proxy(&self, i: usize) -> &Proxy {
        &self.proxies[i]
    }

    /// Node `i`'s proxied URL, `redis://127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// If there is no node `i`.
    #[must_use]
    pub fn url(&self, i: usize) -> String {
        self.proxies[i].url()
    }

    /// Every proxied URL, in node order.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(Proxy::url).collect()
    }

    /// Sets the fault of node `i`'s proxy.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchNode`] if there is no node `i`.
    pub fn set(&self, i: usize, fault: Fault) -> Result<(), Error> {
        let proxy = self.proxies.get(i).ok_or(Error::NoSuchNode {
            index: i,
            len: self.proxies.len(),
        })?;
        proxy.set(fault);
        Ok(())
    }

    /// Heals every proxy.
    pub fn heal_all(&self) {
        self.proxies.iter().for_each(Proxy::heal);
    }

    /// A [`ClientBuilder`] with every proxied URL added.
    pub fn client_builder(&self) -> ClientBuilder {
        crate::Client::builder().nodes(self.urls())
    }
}

/// The proxy's thread: binds, reports its port, serves until told to stop.
fn run(
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
    ready: &std::sync::mpsc::Sender<io::Result<u16>>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            // The caller waits for this; if it is gone there is no one to tell.
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async {
        let bound = listen(0).and_then(|l| Ok((l.local_addr()?.port(), l)));
        let (port, listener) = match bound {
            Ok(bound) => bound,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(port));
        tokio::select! {
            _ = stopped => {}
            () = accept_loop(listener, port, shared) => {}
        }
    });
    // Dropping the runtime drops every connection task, which closes its sockets.
    drop(runtime);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A socket bound to `127.0.0.1:port`, not yet listening.
fn bind(port: u16) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    // Lets the port be bound again while connections of an earlier listener linger.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    Ok(socket)
}

fn listen(port: u16) -> io::Result<TcpListener> {
    bind(port)?.listen(BACKLOG)
}

/// The listening side: open, or shut for [`Fault::Refuse`].
enum Door {
    Open(TcpListener),
    /// Closed; the port is held by a socket bound without listening (the kernel answers
    /// connects with `RST`, and no one else can take the port), if that bind worked.
    Shut(Option<TcpSocket>),
}

async fn accept_loop(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    let mut fault = shared.fault.subscribe();
    let mut door = Door::Open(listener);
    loop {
        let refuse = *fault.borrow_and_update() == Fault::Refuse;
        door = match (door, refuse) {
            (Door::Open(listener), true) => {
                drop(listener);
                Door::Shut(bind(port).ok())
            }
            (Door::Shut(held), false) => {
                let listener = match held {
                    Some(held) => held.listen(BACKLOG),
                    None => listen(port),
                };
                listener.map_or(Door::Shut(None), Door::Open)
            }
            (door, _) => door,
        };
        shared.set_listening(matches!(door, Door::Open(_)));
        match &door {
            Door::Open(listener) => tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        shared.connections.fetch_add(1, Relaxed);
                        tokio::spawn(serve(stream, Arc::clone(&shared)));
                    }
                    // Out of file descriptors and the like: wait rather than spin.
                    Err(_) => tokio::time::sleep(RETRY).await,
                },
                changed = fault.changed() => if changed.is_err() { return },
            },
            // Re-listening failed: try again shortly.
            Door::Shut(_) if !refuse => tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                changed = fault.changed() => if changed.is_err() { return },
            },
            Door::Shut(_) => {
                if fault.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides closed their stream.
    Done,
    /// Close the client's socket.
    Close,
    /// Reset the client's socket.
    Reset,
}

/// A direction of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Reply,
}

/// What happens to one chunk about to be delivered.
enum Verdict {
    Forward,
    Discard,
    Cut,
    Close,
    Reset,
}

impl Shared {
    fn set_listening(&self, now: bool) {
        let mut listening = lock(&self.listening);
        if *listening != now {
            *listening = now;
            self.door.notify_all();
        }
    }

    fn latency(&self) -> Duration {
        match *self.fault.borrow() {
            Fault::Latency(d) => d,
            _ => Duration::ZERO,
        }
    }

    /// What to do with a chunk going `dir` on a connection that has (`poisoned`) or has
    /// not lost bytes before.
    fn verdict(&self, dir: Dir, poisoned: bool) -> Verdict {
        let mut verdict = Verdict::Forward;
        // Decided under the channel's write lock, so exactly one reply uses up
        // CutNextReply.
        self.fault.send_if_modified(|fault| {
            verdict = match (&*fault, dir) {
                (Fault::Reset, _) => Verdict::Reset,
                (Fault::Refuse, _) => Verdict::Close,
                (Fault::BlackHole, _) | (Fault::DropReplies, Dir::Reply) => Verdict::Discard,
                (Fault::DropReplies, Dir::Request) => Verdict::Forward,
                // The stream has a gap: delivering more would put the client out of step.
                _ if poisoned => Verdict::Close,
                (Fault::CutReplies | Fault::CutNextReply, Dir::Reply) => Verdict::Cut,
                _ => Verdict::Forward,
            };
            let one_shot = matches!(verdict, Verdict::Cut) && *fault == Fault::CutNextReply;
            if one_shot {
                *fault = Fault::None;
            }
            one_shot
        });
        verdict
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let mut fault = shared.fault.subscribe();
    if relay(&mut client, &shared, &mut fault).await == End::Reset {
        // Zero linger makes the close send RST. It never blocks (only a non-zero linger
        // does, hence the deprecation); `set_zero_linger` needs Tokio 1.50.
        #[allow(deprecated)]
        let _ = client.set_linger(Some(Duration::ZERO));
    }
    // Dropping the sockets closes both sides.
}

async fn relay(client: &mut TcpStream, shared: &Shared, fault: &mut watch::Receiver<Fault>) -> End {
    let poisoned = AtomicBool::new(false);
    match *fault.borrow_and_update() {
        Fault::Reset => return End::Reset,
        Fault::Refuse => return End::Close,
        _ => {}
    }
    let _ = client.set_nodelay(true);
    let mut node = tokio::select! {
        node = TcpStream::connect((Ipv4Addr::LOCALHOST, shared.upstream)) => match node {
            Ok(node) => node,
            Err(_) if *fault.borrow() == Fault::BlackHole => return swallow(client, fault).await,
            // The node is down: close at once, as a connect to it would fail.
            Err(_) => return End::Close,
        },
        end = alarm(fault, &poisoned) => return end,
    };
    let _ = node.set_nodelay(true);
    let (client_r, client_w) = client.split();
    let (node_r, node_w) = node.split();
    let mut requests = pin!(direction(client_r, node_w, Dir::Request, shared, &poisoned));
    let mut replies = pin!(direction(node_r, client_w, Dir::Reply, shared, &poisoned));
    let mut alarm = pin!(alarm(fault, &poisoned));
    let (mut requests_done, mut replies_done) = (false, false);
    loop {
        let end = tokio::select! {
            end = &mut requests, if !requests_done => {
                requests_done = true;
                end
            }
            end = &mut replies, if !replies_done => {
                replies_done = true;
                end
            }
            end = &mut alarm => end,
        };
        if end != End::Done || (requests_done && replies_done) {
            return end;
        }
    }
}

/// Ends a connection when the fault turns to one that ends it.
async fn alarm(fault: &mut watch::Receiver<Fault>, poisoned: &AtomicBool) -> End {
    loop {
        if fault.changed().await.is_err() {
            return End::Close;
        }
        match &*fault.borrow_and_update() {
            Fault::Reset => return End::Reset,
            Fault::Refuse => return End::Close,
            f if poisoned.load(Relaxed) && !f.discards() => return End::Close,
            _ => {}
        }
    }
}

/// A black hole with no node behind it: reads and drops the client's bytes until the
/// fault changes, then closes (the stream has lost bytes).
async fn swallow(client: &mut TcpStream, fault: &mut watch::Receiver<Fault>) -> End {
    let mut buf = vec![0; CHUNK];
    loop {
        tokio::select! {
            read = client.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) {
                return End::Close;
            },
            changed = fault.changed() => {
                if changed.is_err() {
                    return End::Close;
                }
                match *fault.borrow_and_update() {
                    Fault::BlackHole => {}
                    Fault::Reset => return End::Reset,
                    _ => return End::Close,
                }
            }
        }
    }
}

/// One direction: a reader stamps each chunk with its due time, a writer delivers it
/// then. Ends when the writer has passed on the end of the stream, or a fault ends it.
async fn direction<R, W>(from: R, to: W, dir: Dir, shared: &Shared, poisoned: &AtomicBool) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let mut reader = pin!(read_chunks(from, tx, shared));
    let mut writer = pin!(write_chunks(to, rx, dir, shared, poisoned));
    tokio::select! {
        end = &mut writer => end,
        // The reader dropped its sender: the writer drains the queue, then ends.
        () = &mut reader => writer.await,
    }
}

async fn read_chunks<R: AsyncRead + Unpin>(
    mut from: R,
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    shared: &Shared,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        let due = now.checked_add(shared.latency()).unwrap_or(now + FOREVER);
        if tx.send((due, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

async fn write_chunks<W: AsyncWrite + Unpin>(
    mut to: W,
    mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    dir: Dir,
    shared: &Shared,
    poisoned: &AtomicBool,
) -> End {
    while let Some((due, chunk)) = rx.recv().await {
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        match shared.verdict(dir, poisoned.load(Relaxed)) {
            Verdict::Forward => {
                if to.write_all(&chunk).await.is_err() {
                    return End::Close;
                }
            }
            Verdict::Discard => {
                poisoned.store(true, Relaxed);
                if dir == Dir::Reply {
                    shared.cut.fetch_add(1, Relaxed);
                }
            }
            Verdict::Cut => {
                shared.cut.fetch_add(1, Relaxed);
                return End::Close;
            }
            Verdict::Close => return End::Close,
            Verdict::Reset => return End::Reset,
        }
    }
    // The other side ended its stream: pass the half-close on.
    let _ = to.shutdown().await;
    End::Done
}
