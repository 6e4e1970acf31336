//! [`ClientBuilder`]: settings with documented defaults, validated up front.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::settings::*;
use super::{Client, Inner};
use crate::core::Nodes;
use crate::core::wakeup::Wakeups;
use crate::error::ConfigError;
use crate::node::{Node, Servers, address, identity};

/// Builds a [`Client`]; every setting has a default, and [`build`](Self::build) checks
/// them all.
///
/// ```
/// # fn main() -> Result<(), redfence::Error> {
/// use std::time::Duration;
///
/// let client = redfence::Client::builder()
///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
///     .ttl(Duration::from_secs(5))
///     .build()?; // connects lazily: nothing needs to run yet
/// assert_eq!(client.quorum(), 2);
/// # Ok(())
/// # }
/// ```
#[must_use = "call .build()"]
#[derive(Clone)]
pub struct ClientBuilder {
    urls: Vec<String>,
    ttl: Duration,
    node_timeout: Duration,
    connect_timeout: Duration,
    retry_delay: Duration,
    retry_jitter: Duration,
    wait: Duration,
    drift_factor: f64,
    min_validity: Duration,
    prefix: String,
    max_in_flight: usize,
    watchdog: Watchdog,
    extend_interval: Option<Duration>,
    max_hold: Option<Duration>,
    batch_renewals: bool,
    /// PEM root certificate(s) for `rediss://` nodes, instead of the system's.
    tls_root: Option<Vec<u8>>,
    /// PEM client certificate and key, for nodes that require mutual TLS.
    tls_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            urls,
            ttl,
            node_timeout,
            connect_timeout,
            retry_delay,
            retry_jitter,
            wait,
            drift_factor,
            min_validity,
            prefix,
            max_in_flight,
            watchdog,
            extend_interval,
            max_hold,
            batch_renewals,
            tls_root,
            tls_identity,
        } = self;
        let urls: Vec<String> = urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("ClientBuilder")
            .field("urls", &urls)
            .field("ttl", ttl)
            .field("node_timeout", node_timeout)
            .field("connect_timeout", connect_timeout)
            .field("retry_delay", retry_delay)
            .field("retry_jitter", retry_jitter)
            .field("wait", wait)
            .field("drift_factor", drift_factor)
            .field("min_validity", min_validity)
            .field("prefix", prefix)
            .field("max_in_flight", max_in_flight)
            .field("watchdog", watchdog)
            .field("extend_interval", extend_interval)
            .field("max_hold", max_hold)
            .field("batch_renewals", batch_renewals)
            .field("tls_root", &tls_root.as_ref().map(|_| "<set>"))
            .field("tls_identity", &tls_identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            ttl: DEFAULT_TTL,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry_delay: DEFAULT_RETRY_DELAY,
            retry_jitter: DEFAULT_RETRY_JITTER,
            wait: DEFAULT_WAIT,
            drift_factor: DEFAULT_DRIFT_FACTOR,
            min_validity: Duration::ZERO,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            watchdog: Watchdog::On,
            extend_interval: None,
            max_hold: None,
            batch_renewals: true,
            tls_root: None,
            tls_identity: None,
        }
    }
}

impl ClientBuilder {
    /// Adds one node: `redis://[user:password@]host:port[/db]`, or `rediss://` with the
    /// `tls` feature. Each node must be an independent primary (no replicas, no cluster).
    /// Defaults to no nodes.
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Adds several nodes; see [`node`](Self::node). Defaults to no nodes.
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Lease asked of every node; the validity handed out is shorter by the time the
    /// acquisition took and the drift allowance. Defaults to [`DEFAULT_TTL`] (10 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Bound on one node's answer to one call, connecting included. A node slower than
    /// this counts as failed for that call. Defaults to [`DEFAULT_NODE_TIMEOUT`] (200 ms).
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Bound on opening a connection (which happens in the background, so it may outlast
    /// the call that started it). Defaults to [`DEFAULT_CONNECT_TIMEOUT`] (1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Pause between attempts of [`Client::acquire`]. Defaults to
    /// [`DEFAULT_RETRY_DELAY`] (100 ms).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Random spread around the retry delay (uniform in `delay ± jitter`), so that
    /// waiters do not retry in lockstep. Defaults to [`DEFAULT_RETRY_JITTER`] (50 ms).
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.retry_jitter = jitter;
        self
    }

    /// How long [`Client::acquire`] keeps trying. Defaults to [`DEFAULT_WAIT`] (10 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The old name of [`wait`](Self::wait).
    #[deprecated(since = "0.1.0", note = "renamed `wait`, as in `AcquireOptions::wait`")]
    pub fn wait_timeout(self, wait: Duration) -> Self {
        self.wait(wait)
    }

    /// Fraction of the TTL by which node clocks may run fast; the drift allowance is
    /// `ttl * factor + 2 ms`. Defaults to [`DEFAULT_DRIFT_FACTOR`] (0.01).
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = factor;
        self
    }

    /// An acquisition whose validity would not exceed this fails (and is retried by
    /// `acquire`). Defaults to zero: any positive validity.
    pub fn min_validity(mut self, min: Duration) -> Self {
        self.min_validity = min;
        self
    }

    /// Prefix of every key: `prefix:{resource}:lock` and `prefix:{resource}:fence`.
    /// Defaults to [`DEFAULT_PREFIX`] (`redfence`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Calls that may wait for one node's answers at once. A call beyond it waits for
    /// one to finish, within its node timeout, and is never sent if none does: it then
    /// fails with an error that says it was not sent (a [`NodeErrorKind::Timeout`]), so a
    /// frozen node cannot queue commands without bound. Defaults to
    /// [`DEFAULT_MAX_IN_FLIGHT`] (4096).
    ///
    /// [`NodeErrorKind::Timeout`]: crate::NodeErrorKind::Timeout
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Whether [`Client::acquire`] starts a watchdog that extends the lock every
    /// [`extend_interval`](Self::extend_interval) and reports its loss on the guard's
    /// [`state`](crate::LockGuard::state) channel ([`Watchdog::On`] or `true`).
    /// [`Client::try_acquire`] never does unless asked per call. Defaults to
    /// [`Watchdog::On`].
    pub fn watchdog(mut self, watchdog: impl Into<Watchdog>) -> Self {
        self.watchdog = watchdog.into();
        self
    }

    /// The old name of [`watchdog`](Self::watchdog).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `watchdog`, as in `AcquireOptions::watchdog`"
    )]
    pub fn auto_extend(self, on: bool) -> Self {
        self.watchdog(on)
    }

    /// Whether the watchdogs of this client's locks, semaphore permits, writers and sets
    /// share one renewal task, which extends every lease due at about the same time
    /// (within 50 ms) with one script call per node for up to 256 leases, each lease still
    /// judged on its own (owner check, validity, loss). On by default: holding many locks
    /// then costs the client and the nodes a fraction of one round per lock per tick.
    /// Off, each lease has a task of its own that extends it alone (readers' and leaders'
    /// leases always do).
    ///
    /// ```
    /// let client = redfence::Client::builder()
    ///     .node("redis://127.0.0.1:6379")
    ///     .batch_renewals(false)
    ///     .build()?;
    /// # Ok::<(), redfence::Error>(())
    /// ```
    pub fn batch_renewals(mut self, on: bool) -> Self {
        self.batch_renewals = on;
        self
    }

    /// Time between the watchdog's extensions. It must leave room for one extension
    /// round before the validity runs out. Defaults to a third of the TTL.
    pub fn extend_interval(mut self, interval: Duration) -> Self {
        self.extend_interval = Some(interval);
        self
    }

    /// Longest time a watchdog keeps a lock alive: then it stops extending and reports
    /// the loss ([`LossReason::MaxHoldReached`](crate::LossReason::MaxHoldReached)), so an
    /// orphaned holder cannot keep a lock forever. Defaults to no limit.
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = Some(max);
        self
    }

    /// Trusts these PEM root certificates for `rediss://` nodes instead of the system's
    /// (a private CA). Defaults to the system's trust store.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root = Some(pem.into());
        self
    }

    /// Presents this PEM certificate and private key to `rediss://` nodes that require
    /// client certificates (`tls-auth-clients yes`). Defaults to none.
    #[cfg(feature = "tls")]
    pub fn tls_client_identity(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_identity = Some((cert.into(), key.into()));
        self
    }

    /// Checks every setting and builds the client. Connections open lazily, so this
    /// succeeds while nodes are down.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad value (it converts into [`Error::Config`](crate::Error::Config) with
    /// `?`): no nodes, an unparsable URL, the same server twice, a zero or absurd duration, a TTL too small for the drift and
    /// timeouts, a drift factor outside `[0, 0.5)`, a jitter above the retry delay, or a
    /// prefix that is empty, too long or contains `{`/`}`.
    pub fn build(self) -> Result<Client, ConfigError> {
        let settings = self.settings()?;
        #[cfg(feature = "tls")]
        if self
            .urls
            .iter()
            .any(|u| u.starts_with("rediss://") || u.starts_with("valkeys://"))
        {
            // rustls needs a process-wide crypto provider; keep the application's if it
            // installed one (the error says so), else install ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut opened: Vec<(redis::Client, String, &str)> = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let client = self.open(url)?;
            let id = identity(&client);
            if let Some((_, _, first)) = opened.iter().find(|(_, other, _)| *other == id) {
                return Err(ConfigError::DuplicateNode {
                    node: address(&client),
                    first: redact(first),
                    second: redact(url),
                });
            }
            opened.push((client, id, url));
        }
        let servers = Arc::new(Servers::new(
            opened.iter().map(|(c, _, _)| address(c)).collect(),
        ));
        let nodes: Vec<Arc<Node>> = opened
            .into_iter()
            .enumerate()
            .map(|(i, (client, _, _))| {
                Arc::new(Node::new(
                    client,
                    (i, Arc::clone(&servers)),
                    settings.node_timeout,
                    self.connect_timeout,
                    self.max_in_flight,
                ))
            })
            .collect();
        let wakeups = Wakeups::new(
            nodes.iter().map(|n| n.client().clone()).collect(),
            self.connect_timeout,
        );
        Ok(Client::from_inner(Inner {
            nodes: Nodes::new(nodes, settings.drift_factor),
            settings,
            watchdogs: Arc::new(AtomicUsize::new(0)),
            wakeups,
        }))
    }

    fn open(&self, url: &str) -> Result<redis::Client, ConfigError> {
        let invalid = |e: redis::RedisError| ConfigError::InvalidUrl {
            url: redact(url),
            reason: if cfg!(not(feature = "tls")) && url.contains("s://") {
                format!("{e} (TLS URLs need redfence's `tls` feature)")
            } else {
                e.to_string()
            },
        };
        // Nagle's algorithm off: redis-rs leaves it on, and then a second command on a
        // connection (a release after a grant, a pipelined round) waits for the first one's
        // acknowledgement, up to a round trip: at WAN distance a contended hand-off paid
        // that twice. Every connection of the node (commands and wake-ups) is opened from
        // this info.
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(invalid)?;
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let info = info.set_tcp_settings(tcp);
        #[cfg(feature = "tls")]
        if self.tls_root.is_some() || self.tls_identity.is_some() {
            self.check_tls_pem().map_err(|reason| ConfigError::Tls {
                url: redact(url),
                reason,
            })?;
            if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                let certs = redis::TlsCertificates {
                    client_tls: self.tls_identity.as_ref().map(|(cert, key)| {
                        redis::ClientTlsConfig {
                            client_cert: cert.clone(),
                            client_key: key.clone(),
                        }
                    }),
                    root_cert: self.tls_root.clone(),
                };
                return redis::Client::build_with_tls(info, certs).map_err(|e| ConfigError::Tls {
                    url: redact(url),
                    reason: e.to_string(),
                });
            }
        }
        redis::Client::open(info).map_err(invalid)
    }

    /// redis-rs takes unparsable PEM silently (and then trusts nothing): check it here.
    #[cfg(feature = "tls")]
    fn check_tls_pem(&self) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |what: &str, pem: &[u8]| -> Result<(), String> {
            let n = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{what}: {e}"))?
                .len();
            if n == 0 {
                return Err(format!("{what}: no PEM certificate found"));
            }
            Ok(())
        };
        if let Some(pem) = &self.tls_root {
            certs("root certificate", pem)?;
        }
        if let Some((cert, key)) = &self.tls_identity {
            certs("client certificate", cert)?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
        }
        Ok(())
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        for (setting, value, max) in [
            ("node_timeout", self.node_timeout, MAX_TIMEOUT),
            ("connect_timeout", self.connect_timeout, MAX_TIMEOUT),
            ("wait", self.wait, MAX_WAIT),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { setting });
            }
            if value > max {
                return Err(ConfigError::TooLarge {
                    setting,
                    value,
                    max,
                });
            }
        }
        if self.retry_delay > MAX_TIMEOUT {
            return Err(ConfigError::TooLarge {
                setting: "retry_delay",
                value: self.retry_delay,
                max: MAX_TIMEOUT,
            });
        }
        if self.retry_jitter > self.retry_delay {
            return Err(ConfigError::Jitter {
                jitter: self.retry_jitter,
                delay: self.retry_delay,
            });
        }
        if !(0.0..0.5).contains(&self.drift_factor) {
            return Err(ConfigError::DriftFactor(self.drift_factor));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Zero {
                setting: "max_in_flight",
            });
        }
        let bad_prefix = |reason| ConfigError::Prefix {
            prefix: self.prefix.clone(),
            reason,
        };
        if self.prefix.is_empty() {
            return Err(bad_prefix("it is empty"));
        }
        if self.prefix.len() > MAX_PREFIX_LEN {
            return Err(bad_prefix("it is longer than 128 bytes"));
        }
        if self.prefix.contains(['{', '}']) {
            return Err(bad_prefix(
                "it contains '{' or '}', which would break the hash tag",
            ));
        }
        let settings = Settings {
            ttl: self.ttl,
            node_timeout: self.node_timeout,
            retry_delay: self.retry_delay,
            retry_jitter: self.retry_jitter,
            wait: self.wait,
            drift_factor: self.drift_factor,
            min_validity: self.min_validity,
            prefix: self.prefix.clone(),
            watchdog: self.watchdog,
            extend_interval: self.extend_interval,
            max_hold: self.max_hold,
            batch_renewals: self.batch_renewals,
        };
        settings.check_ttl(self.ttl)?;
        if self.watchdog == Watchdog::On
            || self.extend_interval.is_some()
            || self.max_hold.is_some()
        {
            settings.watchdog_plan(self.ttl, self.max_hold)?;
        }
        Ok(settings)
    }
}

/// A URL with its password replaced by `<redacted>`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    // The last '@' anywhere, not just before the first '/': a password may itself hold
    // '/', '?' or '#' (an invalid URL, which is exactly when it gets printed).
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let shown = if userinfo.contains(':') {
        format!("{user}:<redacted>")
    } else {
        // `redis://secret@host` is read by some clients as a bare password.
        "<redacted>".to_owned()
    };
    format!("{}{shown}{}", &url[..scheme_end + 3], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:<redacted>@h:1/0");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:<redacted>@h:1");
        assert_eq!(redact("redis://pw@h:1"), "redis://<redacted>@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("redis://u:p@ss@h:1"), "redis://u:<redacted>@h:1");
        assert_eq!(
            redact("redis://app:pa/ss@h:6379"),
            "redis://app:<redacted>@h:6379"
        );
        assert_eq!(redact("redis://:p?w#x@h:1/0"), "redis://:<redacted>@h:1/0");
    }

    #[test]
    fn minimum_ttl_in_the_error_is_accepted() {
        let s = ClientBuilder::default()
            .node("redis://h:1")
            .settings()
            .unwrap();
        let Err(ConfigError::TtlTooSmall { minimum, .. }) = s.check_ttl(Duration::from_millis(5))
        else {
            panic!("5 ms accepted");
        };
        s.check_ttl(minimum).unwrap();
        assert!(s.check_ttl(minimum - Duration::from_millis(2)).is_err());
    }
}
