//! Release-driven wake-up of waiters.
//!
//! The release script publishes on the resource's channel (`P:{R}:released`) on every
//! node it deletes from. A client keeps one pub/sub connection per node, shared by all its
//! waiters, and counts the announcements per node. A waiter is woken by the first
//! announcement, or, for a resource whose releases this client saw land unevenly, once
//! enough of the nodes that kept it out have announced for a majority to be free
//! ([`Waiter::hand_off`]): a hand-off costs one round trip instead of a retry delay, and
//! one grant round. Everything here is best effort:
//! a lost message, a node without pub/sub, or a lock that simply expires leaves the
//! waiter on its jittered retry delay, which always runs alongside.
//!
//! The subscription connections speak RESP3, where messages arrive as pushes on an
//! ordinary multiplexed connection: the connection's own task hands each one straight to
//! the waiters, with no reader task in between (one task hop less per hand-off).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::watch;

/// One node's pub/sub side.
struct NodeSub {
    /// The node's client, switched to RESP3.
    client: redis::Client,
    /// The subscription connection, once open; `None` after it dropped.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// After a timeout, the node is skipped until then, so a frozen node does not make
    /// every new resource's subscription queue up behind it.
    skip_until: Mutex<Option<Instant>>,
    /// When the current connection was opened: one that drops sooner than [`SKIP`] after
    /// is reopened only after a pause, so a server that keeps dropping subscribers does
    /// not get a reconnect loop.
    opened_at: Mutex<Option<Instant>>,
    /// Bumped by every connect; a disconnection notice names the connection it is about,
    /// so a late one cannot take a newer connection's place.
    generation: AtomicU64,
}

/// How long a node that timed out is left alone.
const SKIP: Duration = Duration::from_secs(1);

/// How long a resource whose releases landed unevenly keeps its waiters counting
/// announcements ([`Waiter::hand_off`]). When it runs out, the next refusal after a
/// first-announcement wake-up (one extra round) marks it again.
pub(crate) const UNEVEN_FOR: Duration = Duration::from_secs(10);

/// Waiters of one resource on this client.
struct Channel {
    waiters: usize,
    /// Subscribed on the nodes (or being subscribed): only once a waiter has to wait, so
    /// an uncontended acquisition costs no pub/sub traffic at all.
    subscribed: bool,
    /// What has been heard on the channel, per node.
    releases: watch::Sender<Heard>,
    /// The client's waiters of this resource take turns, first come first served: only
    /// the one at the head tries, so a release wakes one attempt per client rather than
    /// a herd, and no waiter of this client is overtaken by a later one.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// What a channel has heard: announcements per node, and wake-ups for everyone (after a
/// subscription or a reconnect, when releases may have gone unheard). Counters only
/// grow; a waiter compares them with what it saw at its last mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Heard {
    everyone: u64,
    by_node: Vec<u64>,
}

/// A client's pub/sub connections and the resources its waiters wait for.
pub(crate) struct Wakeups {
    nodes: Vec<NodeSub>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Channels whose releases were seen to land unevenly (a waiter woken by the first
    /// announcement was refused by nodes the release had not reached yet), until when
    /// their waiters wait for enough announcements instead of the first one.
    uneven: Mutex<HashMap<String, Instant>>,
    timeout: Duration,
    /// Dropped with the client: reconnect loops see their receiver close and end.
    alive: watch::Sender<()>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("nodes", &self.nodes.len())
            .field("channels", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Wakeups {
    pub(crate) fn new(clients: Vec<redis::Client>, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            nodes: clients
                .into_iter()
                .map(|client| NodeSub {
                    client: resp3(client),
                    conn: tokio::sync::Mutex::new(None),
                    skip_until: Mutex::new(None),
                    opened_at: Mutex::new(None),
                    generation: AtomicU64::new(0),
                })
                .collect(),
            channels: Mutex::new(HashMap::new()),
            uneven: Mutex::new(HashMap::new()),
            timeout,
            alive: watch::Sender::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter of `channel` (for its turn); nothing goes to the nodes until it
    /// [`listen`](Waiter::listen)s.
    pub(crate) fn watch(self: &Arc<Self>, channel: &str) -> Waiter {
        let (rx, turn) = {
            let mut map = self.lock();
            let n = self.nodes.len();
            let ch = map.entry(channel.to_owned()).or_insert_with(|| Channel {
                waiters: 0,
                subscribed: false,
                releases: watch::Sender::new(Heard {
                    everyone: 0,
                    by_node: vec![0; n],
                }),
                turn: Arc::new(tokio::sync::Mutex::new(())),
            });
            ch.waiters += 1;
            (ch.releases.subscribe(), Arc::clone(&ch.turn))
        };
        let seen = rx.borrow().clone();
        Waiter {
            wakeups: Arc::clone(self),
            channel: channel.to_owned(),
            rx,
            seen,
            turn,
        }
    }

    /// Subscribes `channel` on every node in the background, unless that is done or under
    /// way. When the subscriptions are in place the waiters are woken once: a release
    /// announced before then was not heard, and the lock may be free already.
    fn listen(self: &Arc<Self>, channel: &str) {
        let start = match self.lock().get_mut(channel) {
            Some(ch) if !ch.subscribed => {
                ch.subscribed = true;
                true
            }
            _ => false,
        };
        if start {
            let (me, channel) = (Arc::clone(self), channel.to_owned());
            tokio::spawn(async move {
                let subscribe = (0..me.nodes.len()).map(|i| me.subscribe(i, &channel));
                futures::future::join_all(subscribe).await;
                me.notify(&channel);
            });
        }
    }

    /// Whether `channel` should be subscribed on the nodes now.
    fn wanted(&self, channel: &str) -> bool {
        self.lock().get(channel).is_some_and(|ch| ch.subscribed)
    }

    /// Subscribes `channel` on node `i`, opening its connection first if needed.
    /// Subscriptions and unsubscriptions of a node run one at a time under its lock, and
    /// each checks the waiters as they are then, so a late unsubscribe cannot undo a newer
    /// waiter's subscription.
    async fn subscribe(self: &Arc<Self>, i: usize, channel: &str) {
        if self.skipped(i) {
            return;
        }
        let mut slot = self.nodes[i].conn.lock().await;
        if !self.wanted(channel) {
            return; // its waiters left already
        }
        if slot.is_none() {
            // A new connection subscribes every wanted channel, this one included.
            self.connect(i, &mut slot).await;
        } else if let Some(mut conn) = slot.clone() {
            // A node without pub/sub (or too slow) leaves its waiters on the retry delay.
            match tokio::time::timeout(self.timeout, conn.subscribe(channel)).await {
                Err(_) => self.skip(i),
                // Broken without a disconnection notice: open a new one, which subscribes
                // every wanted channel.
                Ok(Err(e)) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                    slot.take();
                    self.connect(i, &mut slot).await;
                }
                Ok(_) => {}
            }
        }
    }

    fn skipped(&self, i: usize) -> bool {
        let until = *self.nodes[i]
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|t| Instant::now() < t)
    }

    fn skip(&self, i: usize) {
        *self.nodes[i]
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + SKIP);
    }

    /// Node `i`'s subscription connection (its lock held by the caller). A new one
    /// subscribes every channel whose waiters listen (after a reconnect, those
    /// subscriptions were lost with the old one).
    // Boxed: the connection's push handler may reconnect through it again, and a
    // recursive `async fn` type cannot be proven `Send`.
    fn connect<'a>(
        self: &'a Arc<Self>,
        i: usize,
        slot: &'a mut Option<MultiplexedConnection>,
    ) -> futures::future::BoxFuture<'a, Option<MultiplexedConnection>> {
        Box::pin(async move {
            if let Some(conn) = &*slot {
                return Some(conn.clone());
            }
            let weak = Arc::downgrade(self);
            let generation = self.nodes[i].generation.fetch_add(1, Ordering::SeqCst) + 1;
            // Runs on the connection's task, for every push it reads: it must not block.
            let pushed = move |push: PushInfo| -> Result<(), ()> {
                match push.kind {
                    PushKind::Message => {
                        if let (Some(Value::BulkString(channel)), Some(w)) =
                            (push.data.first(), weak.upgrade())
                        {
                            w.announced(&String::from_utf8_lossy(channel), i);
                        }
                    }
                    PushKind::Disconnection if tokio::runtime::Handle::try_current().is_ok() => {
                        let weak = weak.clone();
                        tokio::spawn(async move { forget(&weak, i, generation).await });
                    }
                    _ => {}
                }
                Ok(())
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(None)
                .set_push_sender(pushed);
            let opened = tokio::time::timeout(
                self.timeout,
                self.nodes[i]
                    .client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await;
            let Ok(Ok(mut conn)) = opened else {
                self.skip(i);
                return None;
            };
            let active: Vec<String> = self
                .lock()
                .iter()
                .filter(|(_, ch)| ch.subscribed)
                .map(|(name, _)| name.clone())
                .collect();
            // One SUBSCRIBE for them all, so a slow node holds its lock one timeout at most.
            if !active.is_empty()
                && !matches!(
                    tokio::time::timeout(self.timeout, conn.subscribe(&active)).await,
                    Ok(Ok(()))
                )
            {
                self.skip(i);
                return None;
            }
            *self.nodes[i]
                .opened_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            *slot = Some(conn.clone());
            // A release announced while the subscription was down was not heard: wake the
            // waiters once, as after a first subscription.
            for channel in &active {
                self.notify(channel);
            }
            Some(conn)
        })
    }

    /// Wakes every waiter of `channel`.
    fn notify(&self, channel: &str) {
        if let Some(ch) = self.lock().get(channel) {
            ch.releases
                .send_modify(|h| h.everyone = h.everyone.wrapping_add(1));
        }
    }

    /// Node `i` announced a release (or a change) on `channel`.
    fn announced(&self, channel: &str, i: usize) {
        if let Some(ch) = self.lock().get(channel) {
            ch.releases.send_modify(|h| {
                if let Some(n) = h.by_node.get_mut(i) {
                    *n = n.wrapping_add(1);
                }
            });
        }
    }

    fn leave(self: &Arc<Self>, channel: &str) {
        // True when the last waiter leaves a subscribed channel.
        let last = {
            let mut map = self.lock();
            match map.get_mut(channel) {
                Some(ch) if ch.waiters > 1 => {
                    ch.waiters -= 1;
                    false
                }
                Some(_) => map.remove(channel).is_some_and(|ch| ch.subscribed),
                None => false,
            }
        };
        if last && tokio::runtime::Handle::try_current().is_ok() {
            let (me, channel) = (Arc::clone(self), channel.to_owned());
            tokio::spawn(async move {
                // Every node at once: a slow one must not hold up the others.
                let each = me.nodes.iter().map(|node| async {
                    let slot = node.conn.lock().await;
                    // A new waiter may listen since: then the subscription stays.
                    if me.wanted(&channel) {
                        return;
                    }
                    if let Some(mut conn) = slot.clone() {
                        let _ = tokio::time::timeout(me.timeout, conn.unsubscribe(&channel)).await;
                    }
                });
                futures::future::join_all(each).await;
            });
        }
    }
}

/// Connection `generation` of node `i` dropped: forget it (unless a newer one is in
/// place), then reopen it (which resubscribes every channel whose waiters listen) while
/// there are such waiters and the client lives: at once if the broken connection had
/// lived a while, otherwise, and after every failure, after a pause of [`SKIP`].
async fn forget(weak: &Weak<Wakeups>, i: usize, generation: u64) {
    let mut pause = {
        let Some(w) = weak.upgrade() else { return };
        let mut slot = w.nodes[i].conn.lock().await;
        if w.nodes[i].generation.load(Ordering::SeqCst) != generation {
            return;
        }
        slot.take();
        let opened_at = *w.nodes[i]
            .opened_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        opened_at.is_some_and(|t| t.elapsed() < SKIP)
    };
    loop {
        if pause {
            let Some(w) = weak.upgrade() else { return };
            let mut alive = w.alive.subscribe();
            drop(w);
            tokio::select! {
                () = tokio::time::sleep(SKIP) => {}
                // The client is gone.
                _ = alive.changed() => return,
            }
        }
        pause = true;
        let Some(w) = weak.upgrade() else { return };
        let mut slot = w.nodes[i].conn.lock().await;
        // A new waiter's subscription may have reconnected meanwhile.
        if slot.is_some() {
            return;
        }
        let listening = w.lock().values().any(|ch| ch.subscribed);
        if !listening || w.connect(i, &mut slot).await.is_some() {
            return;
        }
    }
}

/// `client` speaking RESP3, where pub/sub messages arrive as pushes on a multiplexed
/// connection.
fn resp3(client: redis::Client) -> redis::Client {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings)).unwrap_or(client)
}

/// One waiter's interest in a resource's releases.
pub(crate) struct Waiter {
    wakeups: Arc<Wakeups>,
    channel: String,
    rx: watch::Receiver<Heard>,
    /// What had been heard at the last mark.
    seen: Heard,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Waiter {
    /// Waits for this waiter's turn among the client's waiters of the resource (FIFO);
    /// the turn lasts until the returned guard is dropped.
    pub(crate) async fn turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.turn).lock_owned().await
    }

    /// Subscribes the resource's release announcements on the nodes, if this client does
    /// not yet: call it when an attempt failed and the waiter is about to wait.
    pub(crate) fn listen(&self) {
        self.wakeups.listen(&self.channel);
    }

    /// Forgets the releases seen so far; call it before each attempt, so that a release
    /// during the attempt still wakes the wait after it.
    pub(crate) fn mark(&mut self) {
        self.seen = self.rx.borrow_and_update().clone();
    }

    /// Resolves on the first announcement since the last [`mark`](Self::mark).
    pub(crate) async fn released(&mut self) {
        let _ = self.released_on(None).await;
    }

    /// Resolves when the wait after an attempt that `blocked` kept out should end: on the
    /// first announcement, or, where this client has seen this resource's releases land
    /// unevenly lately, once enough have been heard for a majority
    /// ([`released_on`](Self::released_on)). True when it was the first announcement.
    ///
    /// Why both: when the holder is no farther from any node than the waiter (clients in
    /// one place, nodes spread), a release sent at once to every node reaches each node
    /// before a grant the waiter sends on hearing the first announcement: waking then is
    /// best, and waiting for more announcements only adds their spread. When the holder
    /// is farther from some nodes than the waiter, that grant overtakes the release there
    /// and is refused after a full round; then counting is best. The waiter cannot know
    /// the holder's distances, so it learns: a refusal after a first-announcement wake-up
    /// marks the resource uneven ([`landed_unevenly`](Self::landed_unevenly)) for
    /// [`UNEVEN_FOR`]. A wake-up for everyone (after a subscription) is not an
    /// announcement: false.
    pub(crate) async fn hand_off(&mut self, blocked: Option<u64>) -> bool {
        let uneven = {
            let mut map = self
                .wakeups
                .uneven
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            map.retain(|_, until| *until > now);
            map.contains_key(&self.channel)
        };
        if uneven && blocked.is_some() {
            let _ = self.released_on(blocked).await;
            false
        } else {
            self.released_on(None).await
        }
    }

    /// This resource's releases were seen to land unevenly: its waiters on this client
    /// count announcements for the next [`UNEVEN_FOR`].
    pub(crate) fn landed_unevenly(&self) {
        self.wakeups
            .uneven
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.channel.clone(), Instant::now() + UNEVEN_FOR);
    }

    /// Resolves once a grant can succeed again after an attempt that `blocked` (a bit per
    /// node: refused there, or failed) kept from a majority: when enough of those nodes
    /// have announced a release since the last [`mark`](Self::mark) that a majority is
    /// free, or on a wake-up for everyone. With `None`, on the first announcement.
    ///
    /// A hand-off then costs one round: the release reaches the nodes at different times
    /// (more so at WAN distance), and a waiter woken by the first node's announcement
    /// would try while the others still hold the key, be refused after a full round, and
    /// wait again. Lost announcements and nodes that never announce (down, or without
    /// pub/sub) are covered by the waiter's retry delay, as before.
    /// Returns true when it ended on announcements, false on a wake-up for everyone.
    pub(crate) async fn released_on(&mut self, blocked: Option<u64>) -> bool {
        let n = self.seen.by_node.len();
        let q = crate::core::quorum::quorum(n);
        loop {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let now = self.rx.borrow_and_update();
            if now.everyone != self.seen.everyone {
                return false;
            }
            let mut announced = 0u64;
            for (i, (a, b)) in now.by_node.iter().zip(&self.seen.by_node).enumerate() {
                if a != b && i < 64 {
                    announced |= 1 << i;
                }
            }
            match blocked {
                None if announced != 0 => return true,
                None => {}
                Some(blocked) => {
                    let still = (blocked & !announced).count_ones() as usize;
                    if n.saturating_sub(still) >= q {
                        return true;
                    }
                }
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.wakeups.leave(&self.channel);
    }
}
