//! Process plumbing for the test kit: free ports, readiness, reaping, libfaketime.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::{Error, PORTS, READY_TIMEOUT};

/// SIGKILL (which also ends a stopped process) and wait, so no zombie is left.
pub(super) fn reap(child: &mut Child) -> std::io::Result<()> {
    if child.try_wait()?.is_none() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// libfaketime and the libc to preload after it.
pub(super) fn faketime_libs() -> Result<(PathBuf, PathBuf), Error> {
    let pick = |var: &str, candidates: &[&str]| -> Result<PathBuf, Vec<PathBuf>> {
        let tried: Vec<PathBuf> = std::env::var_os(var)
            .map(PathBuf::from)
            .into_iter()
            .chain(candidates.iter().map(PathBuf::from))
            .collect();
        tried.iter().find(|p| p.exists()).cloned().ok_or(tried)
    };
    let faketime = pick(
        "REDFENCE_LIBFAKETIME",
        &[
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
            "/usr/lib64/faketime/libfaketime.so.1",
        ],
    )
    .map_err(|tried| Error::FaketimeUnavailable { tried })?;
    let libc = pick(
        "REDFENCE_LIBC",
        &[
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/usr/lib64/libc.so.6",
            "/lib64/libc.so.6",
        ],
    )
    .map_err(|tried| Error::FaketimeUnavailable { tried })?;
    Ok((faketime, libc))
}

pub(super) fn free_port() -> u16 {
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(PORTS);
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            return port;
        }
    }
}

pub(super) fn wait_ready(
    child: &mut Child,
    port: u16,
    password: Option<&str>,
) -> Result<(), String> {
    let start = Instant::now();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while start.elapsed() < READY_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if ping(addr, password).unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("no PONG within {READY_TIMEOUT:?}"))
}

/// True when the node serves commands: `+PONG` (not `-LOADING` while it replays its AOF),
/// after `AUTH` when it wants a password.
fn ping(addr: SocketAddr, password: Option<&str>) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    if let Some(pw) = password {
        // RESP array form, so the password may hold any byte.
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len());
        s.write_all(auth.as_bytes())?;
        if !read_line(&mut s)?.starts_with(b"+OK") {
            return Ok(false);
        }
    }
    s.write_all(b"PING\r\n")?;
    Ok(read_line(&mut s)?.starts_with(b"+PONG"))
}

/// Reads one reply line (up to CRLF).
fn read_line(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    Ok(line)
}

pub(super) fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_else(|e| format!("(no log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
