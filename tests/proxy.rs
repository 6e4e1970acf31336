//! The test kit's fault proxy: each fault does exactly what it says, seen from a raw
//! client socket on one side and the node itself on the other.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redfence::testkit::{Cluster, Error, Fault, Proxies, Proxy};
use support::{cmd, lock_key};

/// How long a reply that should not come is waited for.
const SILENCE: Duration = Duration::from_millis(300);
/// How long a reply or a close that should come may take, on a loaded machine.
const PROMPT: Duration = Duration::from_secs(2);

/// What a read from a client socket gave.
#[derive(Debug, PartialEq)]
enum Got {
    Reply(String),
    /// End of stream.
    Closed,
    /// `ECONNRESET`.
    Reset,
    /// Nothing within the wait.
    Silent,
}

impl Got {
    fn is_closed(&self) -> bool {
        matches!(self, Self::Closed | Self::Reset)
    }
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).unwrap()
}

fn send(s: &mut TcpStream, args: &[&str]) {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
}

fn recv(s: &mut TcpStream, within: Duration) -> Got {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0; 512];
    match s.read(&mut buf) {
        Ok(0) => Got::Closed,
        Ok(n) => Got::Reply(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Got::Silent,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Got::Reset,
        Err(e) => panic!("read: {e}"),
    }
}

/// Sends a command and reads what comes back within `within`.
fn call(s: &mut TcpStream, args: &[&str], within: Duration) -> Got {
    send(s, args);
    recv(s, within)
}

fn reply(text: &str) -> Got {
    Got::Reply(text.to_owned())
}

/// A command straight to node 0, bypassing the proxy.
fn direct(cluster: &Cluster, args: &[&str]) -> Got {
    call(&mut connect(cluster.port(0)), args, PROMPT)
}

fn node_and_proxy() -> (Cluster, Proxy) {
    let cluster = Cluster::start(1).unwrap();
    let proxy = Proxy::start(cluster.port(0)).unwrap();
    (cluster, proxy)
}

/// A current-thread runtime, blocked by sync socket calls: the proxy has its own thread.
#[tokio::test]
async fn none_forwards_from_a_blocked_current_thread_runtime() {
    let (cluster, proxy) = node_and_proxy();
    assert_eq!(proxy.fault(), Fault::None);
    assert_eq!(proxy.upstream(), cluster.port(0));
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}", proxy.port()));
    assert!(format!("{proxy:?}").contains(&format!("port: {}", proxy.port())));

    let mut s = connect(proxy.port());
    assert_eq!(call(&mut s, &["PING"], PROMPT), reply("+PONG\r\n"));

    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(PROMPT));
    let mut conn = redis::Client::open(proxy.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(got, "v");
    assert_eq!(direct(&cluster, &["GET", "k"]), reply("$1\r\nv\r\n"));
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.cut(), 0);
}

#[test]
fn latency_delays_each_direction_until_healed() {
    let (_cluster, proxy) = node_and_proxy();
    let mut s = connect(proxy.port());
    let round_trip = |s: &mut TcpStream| {
        let start = Instant::now();
        assert_eq!(call(s, &["PING"], PROMPT), reply("+PONG\r\n"));
        start.elapsed()
    };
    round_trip(&mut s);

    proxy.set(Fault::Latency(Duration::from_millis(100)));
    assert_eq!(proxy.fault(), Fault::Latency(Duration::from_millis(100)));
    let slow = round_trip(&mut s);
    assert!(slow >= Duration::from_millis(200), "{slow:?}");
    assert!(slow < Duration::from_millis(1500), "{slow:?}");

    proxy.heal();
    let fast = (0..3).map(|_| round_trip(&mut s)).min().unwrap();
    assert!(fast < Duration::from_millis(100), "{fast:?}");
}

#[test]
fn drop_replies_runs_the_request_and_keeps_the_connection_silent() {
    let (cluster, proxy) = node_and_proxy();
    let mut s = connect(proxy.port());
    assert_eq!(call(&mut s, &["PING"], PROMPT), reply("+PONG\r\n"));

    proxy.set(Fault::DropReplies);
    assert_eq!(call(&mut s, &["SET", "k", "v"], SILENCE), Got::Silent);
    assert_eq!(direct(&cluster, &["GET", "k"]), reply("$1\r\nv\r\n"));
    assert_eq!(call(&mut s, &["PING"], SILENCE), Got::Silent);
    assert_eq!(proxy.cut(), 2);

    // The stream lost replies: after healing it is closed rather than resumed out of step.
    proxy.heal();
    assert!(recv(&mut s, PROMPT).is_closed());
    let mut fresh = connect(proxy.port());
    assert_eq!(call(&mut fresh, &["PING"], PROMPT), reply("+PONG\r\n"));
}

#[test]
fn cut_replies_closes_each_connection_after_its_request_ran() {
    let (cluster, proxy) = node_and_proxy();
    proxy.set(Fault::CutReplies);
    for n in 1..=2 {
        let mut s = connect(proxy.port());
        assert!(call(&mut s, &["INCR", "k"], PROMPT).is_closed());
        assert_eq!(
            direct(&cluster, &["GET", "k"]),
            reply(&format!("$1\r\n{n}\r\n"))
        );
    }
    assert_eq!(proxy.fault(), Fault::CutReplies);
    assert_eq!(proxy.cut(), 2);

    proxy.heal();
    let mut s = connect(proxy.port());
    assert_eq!(call(&mut s, &["INCR", "k"], PROMPT), reply(":3\r\n"));
}

#[test]
fn cut_next_reply_cuts_once_then_heals_itself() {
    let (cluster, proxy) = node_and_proxy();
    let mut s = connect(proxy.port());
    assert_eq!(call(&mut s, &["PING"], PROMPT), reply("+PONG\r\n"));

    proxy.set(Fault::CutNextReply);
    assert!(call(&mut s, &["INCR", "k"], PROMPT).is_closed());
    assert_eq!(direct(&cluster, &["GET", "k"]), reply("$1\r\n1\r\n"));
    assert_eq!(proxy.fault(), Fault::None);
    assert_eq!(proxy.cut(), 1);

    // The client repeats on a new connection, which works.
    let mut again = connect(proxy.port());
    assert_eq!(call(&mut again, &["INCR", "k"], PROMPT), reply(":2\r\n"));
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn reset_resets_open_and_new_connections_until_healed() {
    let (_cluster, proxy) = node_and_proxy();
    let mut open = connect(proxy.port());
    assert_eq!(call(&mut open, &["PING"], PROMPT), reply("+PONG\r\n"));

    proxy.set(Fault::Reset);
    assert_eq!(recv(&mut open, PROMPT), Got::Reset);
    let mut new = connect(proxy.port()); // the kernel accepts, the proxy resets
    assert_eq!(recv(&mut new, PROMPT), Got::Reset);

    proxy.heal();
    let mut healed = connect(proxy.port());
    assert_eq!(call(&mut healed, &["PING"], PROMPT), reply("+PONG\r\n"));
}

#[test]
fn black_hole_forwards_nothing_on_open_and_new_connections() {
    let (cluster, proxy) = node_and_proxy();
    let mut open = connect(proxy.port());
    assert_eq!(call(&mut open, &["PING"], PROMPT), reply("+PONG\r\n"));

    proxy.set(Fault::BlackHole);
    let mut new = connect(proxy.port());
    assert_eq!(call(&mut open, &["SET", "k", "v"], SILENCE), Got::Silent);
    assert_eq!(call(&mut new, &["SET", "k2", "v"], SILENCE), Got::Silent);
    assert_eq!(direct(&cluster, &["EXISTS", "k", "k2"]), reply(":0\r\n"));

    proxy.heal();
    assert!(recv(&mut open, PROMPT).is_closed());
    assert!(recv(&mut new, PROMPT).is_closed());
    let mut healed = connect(proxy.port());
    assert_eq!(call(&mut healed, &["PING"], PROMPT), reply("+PONG\r\n"));
    assert_eq!(direct(&cluster, &["EXISTS", "k", "k2"]), reply(":0\r\n"));
}

#[test]
fn refuse_closes_the_port_and_heal_reopens_the_same_one() {
    let (_cluster, proxy) = node_and_proxy();
    let port = proxy.port();
    for _ in 0..2 {
        let mut open = connect(port);
        assert_eq!(call(&mut open, &["PING"], PROMPT), reply("+PONG\r\n"));

        proxy.set(Fault::Refuse);
        assert!(recv(&mut open, PROMPT).is_closed());
        let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        proxy.heal();
        assert_eq!(proxy.port(), port);
        let mut healed = connect(port);
        assert_eq!(call(&mut healed, &["PING"], PROMPT), reply("+PONG\r\n"));
    }
}

#[test]
fn follows_its_node_across_kill_and_restart() {
    let (cluster, proxy) = node_and_proxy();
    let mut open = connect(proxy.port());
    assert_eq!(call(&mut open, &["PING"], PROMPT), reply("+PONG\r\n"));

    cluster.kill(0).unwrap();
    assert!(recv(&mut open, PROMPT).is_closed());
    // A connect to the dead node fails, so the proxy closes the client at once.
    let mut dead = connect(proxy.port());
    let start = Instant::now();
    assert!(recv(&mut dead, PROMPT).is_closed());
    assert!(start.elapsed() < Duration::from_secs(1));

    cluster.restart(0).unwrap();
    let mut back = connect(proxy.port());
    assert_eq!(call(&mut back, &["PING"], PROMPT), reply("+PONG\r\n"));
}

#[test]
fn drop_closes_connections_and_the_port() {
    let (_cluster, proxy) = node_and_proxy();
    let port = proxy.port();
    let mut open = connect(port);
    assert_eq!(call(&mut open, &["PING"], PROMPT), reply("+PONG\r\n"));
    proxy.set(Fault::Latency(Duration::from_secs(60))); // a task asleep must not hold it up
    send(&mut open, &["PING"]);

    // The drop joins the proxy's thread; a hang fails the test instead of stalling it.
    let (dropped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(proxy);
        dropped.send(()).unwrap();
    });
    done.recv_timeout(PROMPT).expect("dropping the proxy hung");
    assert!(recv(&mut open, PROMPT).is_closed());
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn proxies_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Proxy>();
    assert_send_sync::<Proxies>();
    assert_send_sync::<Fault>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_partition_one_client_and_not_another() {
    let cluster = Cluster::start(3).unwrap();
    let partitioned = cluster.proxies().unwrap();
    let healthy = cluster.proxies().unwrap();
    assert_eq!(partitioned.len(), 3);
    assert_eq!(partitioned.urls().len(), 3);
    assert_ne!(partitioned.url(0), healthy.url(0));
    for i in 0..3 {
        assert_eq!(partitioned.proxy(i).upstream(), cluster.port(i));
        assert_eq!(partitioned.url(i), partitioned.proxy(i).url());
    }
    assert!(matches!(
        partitioned.set(3, Fault::Refuse),
        Err(Error::NoSuchNode { index: 3, len: 3 })
    ));

    partitioned.set(0, Fault::BlackHole).unwrap();
    let a = partitioned
        .client_builder()
        .node_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let guard = a.acquire("job").await.unwrap(); // nodes 1 and 2 are a quorum
    let key = lock_key("job");
    assert_eq!(cmd::<i64>(&cluster, 0, &["EXISTS", &key]).await, 0);
    assert_eq!(cmd::<i64>(&cluster, 1, &["EXISTS", &key]).await, 1);
    assert!(partitioned.proxy(0).connections() >= 1);
    assert_eq!(healthy.proxy(0).connections(), 0);

    // The other set is untouched: a client on it reaches node 0 and finds the lock held.
    let b = healthy
        .client_builder()
        .node_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(b.try_acquire("job").await.unwrap().is_none());
    assert!(healthy.proxy(0).connections() >= 1);

    partitioned.heal_all();
    assert_eq!(partitioned.proxy(0).fault(), Fault::None);
    drop(guard);
}
