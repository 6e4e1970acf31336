//! Telling servers apart: the identity of a node URL at `build()` and the `run_id` each
//! connection reports, so that one server never votes twice.

use std::sync::{Mutex, PoisonError};

use redis::{Client, ConnectionAddr};

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
    pub(super) fn claim(&self, i: usize, run_id: &str) -> Result<(), &str> {
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
