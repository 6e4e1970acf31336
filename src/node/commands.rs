//! The typed calls of one node: the grant pipeline, the scripts (commit, extend,
//! release, inspect) and the settings reads, each turning the node's reply into a typed
//! answer or a [`NodeError`] that names the node.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{Cmd, Pipeline, RedisError, Script, ServerError, Value};

use super::{Node, Request};
use crate::clock;
use crate::error::{NodeError, NodeErrorKind, Step};
use crate::scripts::{
    COMMIT, ELECT_EXTEND, ELECT_LOG, ELECT_PROCLAIM, ELECT_READ, ELECT_RELEASE, EXTEND,
    EXTEND_MANY, GRANT_ALL, GRANT_SLOT, Hold, INSPECT, Keys, LEADERSHIPS_KEPT, RELEASE,
    RW_EXTEND_READER, RW_READ, RW_READERS, RW_RELEASE_READER, RW_WRITE, RwKeys,
};

/// Whether a release is announced to waiters on the resource's release channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    /// A held lock is released: waiters retry at once.
    Waiters,
    /// A failed attempt cleans up: announcing it would make every waiter retry into
    /// every other's partial grants.
    Quietly,
}

/// One node's answer to a read of an election's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRead {
    /// How many leaderships the node's log keeps now.
    pub(crate) kept: usize,
    /// The term of its oldest entry (0 when it is empty).
    pub(crate) oldest: u64,
    /// (term, owner, value) of each entry read, oldest first.
    pub(crate) entries: Vec<(u64, String, String)>,
}

/// A log entry `term\nowner\nvalue`.
fn log_entry(e: &[u8]) -> Option<(u64, String, String)> {
    let e = String::from_utf8_lossy(e);
    let mut parts = e.splitn(3, '\n');
    let term = parts.next()?.parse().ok()?;
    Some((term, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// What one node's extension did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Every key of the lease was ours and now runs at least the TTL more.
    Renewed,
    /// The key at `part` in `Keys::locks` order (the first found) is gone or another
    /// owner's; nothing was touched.
    NotOurs { part: usize },
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

impl Node {
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
    /// the owner's end does not count on that release (see `ReleaseLedger::deleted`).
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

    /// A semaphore's grant: `Some((candidate, counter))` for the first free slot among
    /// `slots` (in the client's order; `candidate` indexes `slots`), `None` when all are
    /// taken. Each slot is a mutex, and the script gives it the same pipeline of
    /// [`acquire`](Self::acquire) (`SET NX` then `INCR` while the key is ours), so the
    /// token argument is the mutex's, per slot. A repeat on a new connection that finds
    /// one slot already ours answers that slot (see `grant_slot.lua`).
    pub(crate) async fn grant_slot(
        self: &Arc<Self>,
        slots: &[Arc<Keys>],
        owner: &str,
        ttl_ms: u64,
        on_repeat: impl Fn(),
    ) -> Result<Option<(usize, u64)>, NodeError> {
        let step = Step::Acquire;
        let keys: Vec<&str> = slots
            .iter()
            .map(|k| k.lock.as_str())
            .chain(slots.iter().map(|k| k.fence.as_str()))
            .collect();
        let request = evalsha(&GRANT_SLOT, &keys, |c| {
            c.arg(owner).arg(ttl_ms);
        });
        let v = self.call_repeating(step, request, on_repeat).await?;
        let granted = match &v {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            Value::Array(pair) => match pair.as_slice() {
                [Value::Int(position), counter] => usize::try_from(*position)
                    .ok()
                    .and_then(|p| p.checked_sub(1))
                    .filter(|&c| c < slots.len())
                    .zip(self.counter(counter)),
                _ => None,
            },
            _ => None,
        };
        match granted {
            Some((c, counter)) if counter >= 1 => Ok(Some((c, counter))),
            // As in `acquire`, a grant without a usable token is not undone here.
            Some((c, _)) => Err(NodeError::new(
                &self.name,
                step,
                NodeErrorKind::Server,
                format!("fence counter {} is not positive", slots[c].fence),
            )),
            None => Err(self.bad_reply(step, &v)),
        }
    }

    /// A set's grant (`grant_all.lua`): the counters of every resource in `keys.locks()`
    /// order when all were granted, `None` when any is another owner's (then nothing was
    /// touched). Each resource's key and counter follow the mutex's rule, so each token
    /// argument is the mutex's, per resource.
    pub(crate) async fn grant_all(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        ttl_ms: u64,
        on_repeat: impl Fn(),
    ) -> Result<Option<Vec<u64>>, NodeError> {
        let step = Step::Acquire;
        let names: Vec<&str> = keys
            .locks()
            .map(|k| k.lock.as_str())
            .chain(keys.locks().map(|k| k.fence.as_str()))
            .collect();
        let request = evalsha(&GRANT_ALL, &names, |c| {
            c.arg(owner).arg(ttl_ms);
        });
        let v = self.call_repeating(step, request, on_repeat).await?;
        let counters = match &v {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            Value::Array(items) => items
                .iter()
                .map(|c| self.counter(c).filter(|&n| n >= 1))
                .collect::<Option<Vec<u64>>>(),
            _ => None,
        };
        match counters {
            Some(c) if c.len() == keys.rest.len() + 1 => Ok(Some(c)),
            _ => Err(self.bad_reply(step, &v)),
        }
    }

    /// Publishes an election's leader record while `owner` holds its lock: true when
    /// written (and announced), false when the lock is not ours.
    pub(crate) async fn proclaim(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        term: u64,
        value: &str,
    ) -> Result<bool, NodeError> {
        let request = evalsha(
            &ELECT_PROCLAIM,
            &[&keys.lock, keys.record(), keys.log()],
            |c| {
                c.arg(owner)
                    .arg(term)
                    .arg(value)
                    .arg(&keys.released)
                    .arg(LEADERSHIPS_KEPT);
            },
        );
        let v = self.call(Step::Proclaim, request).await?;
        self.flag(Step::Proclaim, v)
    }

    /// An election's leader record as this node has it: (owner, term, value, remaining
    /// lease), or `None` when there is none.
    pub(crate) async fn read_leader(
        self: &Arc<Self>,
        keys: &Keys,
    ) -> Result<Option<(String, u64, String, Duration)>, NodeError> {
        let step = Step::Inspect;
        let request = evalsha(&ELECT_READ, &[keys.record()], |_| {});
        let v = self.call(step, request).await?;
        let items = match &v {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            Value::Array(items) => items,
            _ => return Err(self.bad_reply(step, &v)),
        };
        let parsed = match items.as_slice() {
            [Value::BulkString(record), Value::Int(ms)] => {
                let record = String::from_utf8_lossy(record);
                let mut parts = record.splitn(3, '\n');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(owner), Some(term), Some(value)) => term.parse().ok().map(|t| {
                        let left = Duration::from_millis(u64::try_from(*ms).unwrap_or(0));
                        (owner.to_owned(), t, value.to_owned(), left)
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| self.bad_reply(step, &v))
    }

    /// An election's log of leaderships as this node has it: the entries with a term above
    /// `after`, oldest first.
    pub(crate) async fn read_log(
        self: &Arc<Self>,
        keys: &Keys,
        after: u64,
    ) -> Result<LogRead, NodeError> {
        let step = Step::Inspect;
        let request = evalsha(&ELECT_LOG, &[keys.log()], |c| {
            c.arg(after);
        });
        let v = self.call(step, request).await?;
        let parsed = match &v {
            Value::Array(items) => match items.as_slice() {
                [Value::Int(kept), Value::BulkString(oldest), entries @ ..] => {
                    let oldest = if oldest.is_empty() {
                        Some(0)
                    } else {
                        log_entry(oldest).map(|e| e.0)
                    };
                    let entries = entries
                        .iter()
                        .map(|e| match e {
                            Value::BulkString(e) => log_entry(e),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    match (oldest, entries) {
                        (Some(oldest), Some(entries)) => Some(LogRead {
                            kept: usize::try_from(*kept).unwrap_or(0),
                            oldest,
                            entries,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        };
        parsed.ok_or_else(|| self.bad_reply(step, &v))
    }

    /// A reader-writer lock's writer grant (`rw_write.lua`): `Some(counter)` when granted,
    /// `None` where another writer holds or readers live (its waiting marker is left
    /// there). The counter is incremented only on a grant, while the key is ours, so the
    /// mutex's token argument holds.
    ///
    /// `waiter` names the marker: one id per wait, the same through its attempts, so a
    /// writer's retries renew its own marker and its grant removes it.
    pub(crate) async fn grant_writer(
        self: &Arc<Self>,
        keys: &RwKeys,
        owner: &str,
        waiter: &str,
        ttl_ms: u64,
        on_repeat: impl Fn(),
    ) -> Result<Option<u64>, NodeError> {
        let w = &keys.writer;
        let request = evalsha(
            &RW_WRITE,
            &[&w.lock, &w.fence, &keys.reader.lock, &keys.waiting.lock],
            |c| {
                c.arg(owner).arg(ttl_ms).arg(waiter);
            },
        );
        let v = self
            .call_repeating(Step::Acquire, request, on_repeat)
            .await?;
        self.granted_counter(v)
    }

    /// A reader-writer lock's reader grant (`rw_read.lua`): `Some(counter)` (the fence
    /// counter as the node has it, 0 before any writer) when the reader joined the set,
    /// `None` where a writer holds or waits.
    pub(crate) async fn grant_reader(
        self: &Arc<Self>,
        keys: &RwKeys,
        owner: &str,
        ttl_ms: u64,
        on_repeat: impl Fn(),
    ) -> Result<Option<u64>, NodeError> {
        let r = &keys.reader;
        let request = evalsha(
            &RW_READ,
            &[&r.lock, &r.fence, &keys.writer.lock, &keys.waiting.lock],
            |c| {
                c.arg(owner).arg(ttl_ms);
            },
        );
        let v = self
            .call_repeating(Step::Acquire, request, on_repeat)
            .await?;
        match v {
            Value::Nil | Value::Boolean(false) => Ok(None),
            ref bulk @ Value::BulkString(_) => self
                .counter(bulk)
                .map(Some)
                .ok_or_else(|| self.bad_reply(Step::Acquire, &v)),
            other => Err(self.bad_reply(Step::Acquire, &other)),
        }
    }

    /// A grant script's answer: a positive counter (decimal string), or a refusal.
    fn granted_counter(&self, v: Value) -> Result<Option<u64>, NodeError> {
        match v {
            Value::Nil | Value::Boolean(false) => Ok(None),
            ref bulk @ Value::BulkString(_) => match self.counter(bulk) {
                Some(n) if n >= 1 => Ok(Some(n)),
                _ => Err(self.bad_reply(Step::Acquire, &v)),
            },
            other => Err(self.bad_reply(Step::Acquire, &other)),
        }
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
    ) -> Result<Renewal, NodeError> {
        let script = match keys.hold {
            Hold::Key => &EXTEND,
            Hold::Member => &RW_EXTEND_READER,
            Hold::Leader => &ELECT_EXTEND,
        };
        let request = with_locks(keys, |locks| {
            evalsha(script, locks, |c| {
                c.arg(owner).arg(ttl_ms);
            })
        });
        let v = self.call(Step::Extend, request).await?;
        // 1: renewed; 0 (one key) or -i (KEYS[i], the first not ours): not ours.
        match v {
            Value::Int(1) => Ok(Renewal::Renewed),
            Value::Int(0) => Ok(Renewal::NotOurs { part: 0 }),
            Value::Int(i) if i < 0 && i.unsigned_abs() <= keys.locks().count() as u64 => {
                Ok(Renewal::NotOurs {
                    part: usize::try_from(i.unsigned_abs() - 1).unwrap_or(0),
                })
            }
            other => Err(self.bad_reply(Step::Extend, &other)),
        }
    }

    /// [`extend`](Self::extend) for several leases in one script call, each judged on
    /// its own: one answer per lease, in order. Only leases held as plain keys
    /// ([`Hold::Key`]: a lock, a slot, a writer, a set) are extended this way.
    pub(crate) async fn extend_many(
        self: &Arc<Self>,
        leases: &[(Arc<Keys>, Arc<str>, u64)],
    ) -> Result<Vec<Renewal>, NodeError> {
        let keys: Vec<&str> = leases
            .iter()
            .flat_map(|(k, _, _)| k.locks().map(|l| l.lock.as_str()))
            .collect();
        let request = evalsha(&EXTEND_MANY, &keys, |c| {
            c.arg(leases.len());
            for (k, owner, ttl_ms) in leases {
                c.arg(&**owner).arg(*ttl_ms).arg(k.locks().count());
            }
        });
        let v = self.call(Step::Extend, request).await?;
        let Value::Array(answers) = &v else {
            return Err(self.bad_reply(Step::Extend, &v));
        };
        if answers.len() != leases.len() {
            return Err(self.bad_reply(Step::Extend, &v));
        }
        let renewal = |(a, (k, _, _)): (&Value, &(Arc<Keys>, Arc<str>, u64))| match a {
            Value::Int(1) => Some(Renewal::Renewed),
            Value::Int(i) if *i < 0 && i.unsigned_abs() <= k.locks().count() as u64 => {
                Some(Renewal::NotOurs {
                    part: usize::try_from(i.unsigned_abs() - 1).unwrap_or(0),
                })
            }
            _ => None,
        };
        answers
            .iter()
            .zip(leases)
            .map(renewal)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.bad_reply(Step::Extend, &v))
    }

    /// Deletes the lock where it is `owner`'s. [`Announce::Waiters`] publishes the release for
    /// waiters (a held lock); clean-ups of failed attempts pass false.
    pub(crate) async fn release(
        self: &Arc<Self>,
        keys: &Keys,
        owner: &str,
        announce: Announce,
    ) -> Result<Release, NodeError> {
        let script = match keys.hold {
            Hold::Key => &RELEASE,
            Hold::Member => &RW_RELEASE_READER,
            Hold::Leader => &ELECT_RELEASE,
        };
        // One channel per key (an election's leader takes the first, its lock's).
        let request = with_locks(keys, |locks| {
            evalsha(script, locks, |c| {
                c.arg(owner);
                for k in keys.locks().take(locks.len()) {
                    c.arg(match announce {
                        Announce::Waiters => k.released.as_str(),
                        Announce::Quietly => "",
                    });
                }
            })
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

    /// A reader-writer lock's live readers (`keys.lock` is its reader set) and the lease
    /// each has left in milliseconds, in id order, without changing anything.
    pub(crate) async fn readers(
        self: &Arc<Self>,
        keys: &Keys,
    ) -> Result<Vec<(String, u64)>, NodeError> {
        let step = Step::Inspect;
        let v = self
            .call(step, evalsha(&RW_READERS, &[&keys.lock], |_| {}))
            .await?;
        let Value::Array(items) = &v else {
            return Err(self.bad_reply(step, &v));
        };
        let mut readers = Vec::with_capacity(items.len() / 2);
        for pair in items.chunks(2) {
            match pair {
                [Value::BulkString(id), Value::Int(ms)] => readers.push((
                    String::from_utf8_lossy(id).into_owned(),
                    u64::try_from(*ms).map_err(|_| self.bad_reply(step, &v))?,
                )),
                _ => return Err(self.bad_reply(step, &v)),
            }
        }
        Ok(readers)
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

    /// One `SCAN` batch of the keys matching `pattern` from `cursor`: the next cursor
    /// (0 when the scan is complete) and the keys.
    pub(crate) async fn scan(
        self: &Arc<Self>,
        cursor: u64,
        pattern: &str,
        batch: usize,
    ) -> Result<(u64, Vec<String>), NodeError> {
        let step = Step::Inspect;
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(batch);
        let v = self.call(step, Request::Command(cmd)).await?;
        let parsed = match &v {
            Value::Array(items) => match items.as_slice() {
                [Value::BulkString(next), Value::Array(keys)] => {
                    let next = std::str::from_utf8(next).ok().and_then(|n| n.parse().ok());
                    let keys = keys
                        .iter()
                        .map(|k| match k {
                            Value::BulkString(k) => Some(String::from_utf8_lossy(k).into_owned()),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    next.zip(keys)
                }
                _ => None,
            },
            _ => None,
        };
        parsed.ok_or_else(|| self.bad_reply(step, &v))
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
/// Runs `f` with the names of every lock key of the lease (`Keys::locks`), without an
/// allocation for the usual single key.
/// An election's leader lease is its lock and record (its log outlives both).
fn with_locks<R>(keys: &Keys, f: impl FnOnce(&[&str]) -> R) -> R {
    if keys.hold == Hold::Leader {
        f(&[keys.lock.as_str(), keys.record()])
    } else if keys.rest.is_empty() {
        f(&[keys.lock.as_str()])
    } else {
        let locks: Vec<&str> = keys.locks().map(|k| k.lock.as_str()).collect();
        f(&locks)
    }
}

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
