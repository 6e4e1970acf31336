//! Local `redis-server` nodes for tests, including chaos tests of your own critical
//! sections (feature `testkit`).
//!
//! [`Cluster::start`] runs N independent `redis-server` processes on free loopback ports,
//! each in its own temporary folder, and waits until each answers `PING`. Per node you can
//! [`kill`](Cluster::kill) it (`SIGKILL`), [`pause`](Cluster::pause) and
//! [`resume`](Cluster::resume) it (`SIGSTOP`/`SIGCONT`: the kernel still accepts
//! connections, but nothing answers), and [`restart`](Cluster::restart) it on the same
//! port, with or without AOF (`appendfsync always`). Every process is killed and its
//! folder removed when the cluster is dropped, on panic too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use redfence::testkit::Cluster;
//!
//! let cluster = Cluster::start(5)?;
//! let client = cluster.client_builder().build()?;
//! cluster.pause(0)?; // a minority frozen: locking still works
//! let guard = client.acquire("job").await?;
//! cluster.kill(1)?;
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Cluster::proxies`] adds network faults (latency, lost replies, partitions, resets,
//! refused connects) between clients and nodes: see [`proxy`].
//!
//! The methods block for as long as the step takes (a start waits for `PING`, typically
//! 40–90 ms); in async tests use a multi-threaded runtime or `spawn_blocking`. It needs
//! `redis-server` on the `PATH`, or its path in `REDFENCE_REDIS_SERVER`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::ClientBuilder;

pub mod conformance;
pub mod history;
mod process;
pub mod proxy;

pub use proxy::{Fault, Proxies, Proxy};

use process::{faketime_libs, free_port, reap, tail, wait_ready};

/// How long a node may take to answer `PING` after start (AOF replay included).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports are drawn below Linux's ephemeral range (32768+), so a restart does not find its
/// port taken by some client socket.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A test kit failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `redis-server` could not be run.
    #[error(
        "cannot run {server:?}; install redis-server (Debian/Ubuntu: apt-get install \
         redis-server) or set REDFENCE_REDIS_SERVER to its path"
    )]
    ServerNotFound {
        /// The program tried.
        server: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A node did not come up.
    #[error("redis-server on port {port} did not start: {why}\n--- log ---\n{log}")]
    Start {
        /// Its port.
        port: u16,
        /// What happened.
        why: String,
        /// The end of its log file.
        log: String,
    },
    /// A file-system or signal operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No node has that index.
    #[error("no node {index} (the cluster has {len})")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// Nodes in the cluster.
        len: usize,
    },
    /// The node is not running (killed and not restarted).
    #[error("node {0} is not running")]
    NotRunning(usize),
    /// Clock skew needs libfaketime, which was not found.
    #[error(
        "libfaketime not found (looked for {tried:?}); install it (Debian/Ubuntu: apt-get \
         install faketime) or set REDFENCE_LIBFAKETIME to libfaketime.so.1"
    )]
    FaketimeUnavailable {
        /// The paths looked at.
        tried: Vec<PathBuf>,
    },
}

/// Simulates a suspend of this machine for `by`, as redfence's clients see one: their
/// clock ([`crate::now`]) jumps forward by `by`, while tokio's timers and the nodes do not
/// move. A holder "resumed" this way must find its validity gone and report its loss at
/// once. It affects every client in the process, for the rest of its life: run such a
/// test in a test binary of its own.
pub fn simulate_suspend(by: Duration) {
    crate::clock::simulate_suspend(by);
}

/// What a node writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Persistence {
    /// Nothing: a restart loses every key (and every fence counter).
    #[default]
    None,
    /// AOF with `appendfsync always`: a restart keeps every acknowledged write.
    AofAlways,
}

/// Settings for [`Cluster`].
#[derive(Clone)]
#[must_use = "call .start()"]
pub struct ClusterBuilder {
    nodes: usize,
    persistence: Persistence,
    server: PathBuf,
    args: Vec<String>,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            nodes,
            persistence,
            server,
            args,
        } = self;
        f.debug_struct("ClusterBuilder")
            .field("nodes", nodes)
            .field("persistence", persistence)
            .field("server", server)
            .field("args", &redact_args(args))
            .finish()
    }
}

/// Arguments with the value after any `--…pass…` option (`--requirepass`,
/// `--masterauth`-style secrets) replaced.
fn redact_args(args: &[String]) -> Vec<&str> {
    let mut out = Vec::with_capacity(args.len());
    let mut secret_next = false;
    for a in args {
        out.push(if secret_next {
            "<redacted>"
        } else {
            a.as_str()
        });
        secret_next = a.starts_with("--") && (a.contains("pass") || a.contains("auth"));
    }
    out
}

/// The password the nodes require, if the arguments set one.
fn requirepass(args: &[String]) -> Option<&str> {
    let i = args.iter().position(|a| a == "--requirepass")?;
    args.get(i + 1).map(String::as_str)
}

impl ClusterBuilder {
    /// Number of nodes. Defaults to 5.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Persistence of every node (restarts may change it per node). Defaults to
    /// [`Persistence::None`].
    pub fn persistence(mut self, p: Persistence) -> Self {
        self.persistence = p;
        self
    }

    /// The `redis-server` (or `valkey-server`) program. Defaults to
    /// `$REDFENCE_REDIS_SERVER`, else `redis-server` on the `PATH`.
    pub fn server(mut self, program: impl Into<PathBuf>) -> Self {
        self.server = program.into();
        self
    }

    /// Extra `redis-server` arguments for every node, e.g. `["--requirepass", "s3cret"]`.
    /// Defaults to none.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts every node and waits until each answers `PING`.
    ///
    /// # Errors
    ///
    /// [`Error::ServerNotFound`] without a `redis-server`; [`Error::Start`] with the
    /// node's log when one does not come up.
    pub fn start(self) -> Result<Cluster, Error> {
        let root = std::env::temp_dir().join(format!("redfence-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&root).map_err(|source| Error::Io {
            what: format!("create {}", root.display()),
            source,
        })?;
        // From here on, Drop cleans up whatever was started.
        let mut cluster = Cluster {
            root,
            server: self.server,
            args: self.args,
            nodes: Vec::new(),
        };
        for i in 0..self.nodes {
            let dir = cluster.root.join(format!("node{i}"));
            fs::create_dir_all(&dir).map_err(|source| Error::Io {
                what: format!("create {}", dir.display()),
                source,
            })?;
            let mut last = None;
            for _ in 0..5 {
                let port = free_port();
                match cluster.spawn(&dir, port, self.persistence, None) {
                    Ok(child) => {
                        cluster.nodes.push(NodeProc {
                            port,
                            dir: dir.clone(),
                            state: Mutex::new(State {
                                child: Some(child),
                                persistence: self.persistence,
                                clock: None,
                            }),
                        });
                        last = None;
                        break;
                    }
                    Err(e @ Error::ServerNotFound { .. }) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        Ok(cluster)
    }
}

struct State {
    child: Option<Child>,
    persistence: Persistence,
    /// Clock rate under libfaketime (`Some(2.0)`: twice as fast), `None` for the real one.
    clock: Option<f64>,
}

impl State {
    /// SIGKILLs and reaps node `i`'s process, if it runs.
    fn stop(&mut self, i: usize) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            reap(&mut child).map_err(|source| Error::Io {
                what: format!("kill node {i}"),
                source,
            })?;
        }
        Ok(())
    }
}

struct NodeProc {
    port: u16,
    dir: PathBuf,
    state: Mutex<State>,
}

/// N local `redis-server` processes; see the [module docs](self).
pub struct Cluster {
    root: PathBuf,
    server: PathBuf,
    args: Vec<String>,
    nodes: Vec<NodeProc>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        f.debug_struct("Cluster")
            .field("root", &self.root)
            .field("ports", &ports)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Settings, starting from 5 nodes without persistence.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 5,
            persistence: Persistence::None,
            server: std::env::var_os("REDFENCE_REDIS_SERVER")
                .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from),
            args: Vec::new(),
        }
    }

    /// Starts `n` nodes without persistence.
    ///
    /// # Errors
    ///
    /// As [`ClusterBuilder::start`].
    pub fn start(n: usize) -> Result<Self, Error> {
        Self::builder().nodes(n).start()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a cluster of no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s URL, `redis://127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// If there is no node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's URL, in order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// Node `i`'s port.
    ///
    /// # Panics
    ///
    /// If there is no node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// A [`ClientBuilder`] with every node of this cluster added.
    pub fn client_builder(&self) -> ClientBuilder {
        crate::Client::builder().nodes(self.urls())
    }

    /// A new [`Proxy`] in front of every node, in node order: see [`proxy`]. Each call
    /// makes an independent set, so clients given different sets can be partitioned
    /// separately. The proxies outlive kills and restarts of their nodes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a proxy cannot start.
    pub fn proxies(&self) -> Result<Proxies, Error> {
        Proxies::start(self.nodes.iter().map(|n| n.port))
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes.get(i)?.lock().child.as_ref().map(Child::id)
    }

    /// True while node `i` has not been killed.
    pub fn is_running(&self, i: usize) -> bool {
        self.pid(i).is_some()
    }

    /// Kills node `i` with `SIGKILL` and reaps it. Its data folder stays for a restart.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchNode`]; [`Error::Io`] if the kill fails.
    pub fn kill(&self, i: usize) -> Result<(), Error> {
        self.node(i)?.lock().stop(i)
    }

    /// Freezes node `i` with `SIGSTOP`: connections are still accepted, nothing answers.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] after a kill; [`Error::Io`] if the signal fails.
    pub fn pause(&self, i: usize) -> Result<(), Error> {
        self.signal(i, Signal::SIGSTOP)
    }

    /// Thaws node `i` with `SIGCONT`; it then runs every command queued meanwhile.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    pub fn resume(&self, i: usize) -> Result<(), Error> {
        self.signal(i, Signal::SIGCONT)
    }

    /// Restarts node `i` on the same port with its current persistence, on the real
    /// clock: with [`Persistence::AofAlways`] every acknowledged write survives, otherwise
    /// every key is gone. A running node is killed first (a crash, not a shutdown).
    ///
    /// # Errors
    ///
    /// As [`ClusterBuilder::start`].
    pub fn restart(&self, i: usize) -> Result<(), Error> {
        let p = self.node(i)?.lock().persistence;
        self.relaunch(i, p, None)
    }

    /// Restarts node `i` on the same port with `persistence` (kept for later restarts).
    /// Switching to [`Persistence::None`] starts it empty.
    ///
    /// # Errors
    ///
    /// As [`ClusterBuilder::start`].
    pub fn restart_with(&self, i: usize, persistence: Persistence) -> Result<(), Error> {
        self.relaunch(i, persistence, None)
    }

    /// Restarts node `i` with its clock running `rate` times as fast as the real one
    /// (libfaketime), keeping its persistence. Redis expires keys on its wall clock, so at
    /// `2.0` a `PX 2000` lease ends after about one real second: a clock-drift fault
    /// outside RedLock's assumptions, which fencing tokens exist to catch.
    /// [`restart`](Self::restart) brings the real clock back.
    ///
    /// # Errors
    ///
    /// [`Error::FaketimeUnavailable`] without libfaketime; otherwise as
    /// [`ClusterBuilder::start`].
    pub fn restart_with_clock(&self, i: usize, rate: f64) -> Result<(), Error> {
        faketime_libs()?;
        let p = self.node(i)?.lock().persistence;
        self.relaunch(i, p, Some(rate))
    }

    /// True when [`restart_with_clock`](Self::restart_with_clock) can work here.
    pub fn clock_skew_available() -> bool {
        faketime_libs().is_ok()
    }

    fn relaunch(
        &self,
        i: usize,
        persistence: Persistence,
        clock: Option<f64>,
    ) -> Result<(), Error> {
        let node = self.node(i)?;
        let mut state = node.lock();
        state.stop(i)?;
        if persistence == Persistence::None {
            // Start empty, as a node without persistence does after a crash.
            let _ = fs::remove_dir_all(node.dir.join("appendonlydir"));
        }
        state.child = Some(self.spawn(&node.dir, node.port, persistence, clock)?);
        state.persistence = persistence;
        state.clock = clock;
        Ok(())
    }

    fn node(&self, i: usize) -> Result<&NodeProc, Error> {
        self.nodes.get(i).ok_or(Error::NoSuchNode {
            index: i,
            len: self.nodes.len(),
        })
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<(), Error> {
        let pid = self.pid(i).ok_or(Error::NotRunning(i))?;
        let pid = i32::try_from(pid).map_err(|_| Error::NotRunning(i))?;
        kill(Pid::from_raw(pid), signal).map_err(|errno| Error::Io {
            what: format!("send {signal} to node {i}"),
            source: errno.into(),
        })
    }

    fn spawn(
        &self,
        dir: &Path,
        port: u16,
        persistence: Persistence,
        clock: Option<f64>,
    ) -> Result<Child, Error> {
        let log = dir.join("redis.log");
        let mut cmd = Command::new(&self.server);
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log);
        match persistence {
            Persistence::None => cmd.args(["--appendonly", "no"]),
            Persistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        if let Some(rate) = clock {
            let (faketime, libc) = faketime_libs()?;
            // libfaketime 0.9.10 deadlocks with jemalloc at start-up; preloading libc right
            // after it sends allocations to glibc instead.
            let mut preload = std::ffi::OsString::from(faketime);
            preload.push(":");
            preload.push(libc);
            cmd.env("LD_PRELOAD", preload)
                .env("FAKETIME", format!("+0 x{rate}"))
                .env("FAKETIME_DONT_RESET", "1");
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| Error::ServerNotFound {
            server: self.server.clone(),
            source,
        })?;
        match wait_ready(&mut child, port, requirepass(&self.args)) {
            Ok(()) => Ok(child),
            Err(why) => {
                let _ = reap(&mut child);
                Err(Error::Start {
                    port,
                    why,
                    log: tail(&log),
                })
            }
        }
    }
}

impl NodeProc {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(mut child) = node.lock().child.take() {
                let _ = reap(&mut child);
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}
