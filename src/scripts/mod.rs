//! The Lua scripts every node runs, sent by `EVALSHA` with a load-and-retry on `NOSCRIPT`
//! (a node restarted without persistence, or after `SCRIPT FLUSH`, has forgotten them).
//!
//! Each script takes the lock key as `KEYS[1]` and, where it needs it, the fence counter as
//! `KEYS[2]`; both share one hash tag (see [`Keys`]).

use std::sync::{Arc, LazyLock};

use redis::Script;

/// Raise the fence counter to the token while the lock is still ours.
pub(crate) static COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("commit.lua")));
/// Compare-and-`PEXPIRE`.
pub(crate) static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("extend.lua")));
/// [`EXTEND`] for many leases at once, each judged on its own (the batched watchdog).
pub(crate) static EXTEND_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("extend_many.lua")));
/// Compare-and-`DEL`.
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("release.lua")));

/// A semaphore's grant: the first free slot in the client's order, with its counter.
pub(crate) static GRANT_SLOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("grant_slot.lua")));

/// A reader-writer lock's writer grant: refused while readers live (leaving the waiting
/// marker), else the mutex's grant.
pub(crate) static RW_WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("rw_write.lua")));
/// A reader-writer lock's reader grant: an entry with its own expiry in the reader set.
pub(crate) static RW_READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("rw_read.lua")));
/// Renews a reader's entry while it is live.
pub(crate) static RW_EXTEND_READER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("rw_extend_reader.lua")));
/// Removes a reader's entry.
pub(crate) static RW_RELEASE_READER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("rw_release_reader.lua")));

/// A set's grant: all keys or none.
pub(crate) static GRANT_ALL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("grant_all.lua")));

/// An election's leader lease: extend and release (lock and record together), the
/// record's publication, and its reading.
pub(crate) static ELECT_EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("elect_extend.lua")));
pub(crate) static ELECT_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("elect_release.lua")));
pub(crate) static ELECT_PROCLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("elect_proclaim.lua")));
pub(crate) static ELECT_READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("elect_read.lua")));
pub(crate) static ELECT_LOG: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("elect_log.lua")));

/// How many leaderships an election's log keeps on each node: a
/// [`Follower`](crate::Follower) that falls further behind is told of the gap.
pub const LEADERSHIPS_KEPT: usize = 1024;

/// Read-only: owner, remaining TTL and counter of one resource.
pub(crate) static INSPECT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("inspect.lua")));
/// Read-only: a reader-writer lock's live readers, with the lease each has left.
pub(crate) static RW_READERS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("rw_readers.lua")));
/// The storage side: store a value only when its fencing token is not older than the
/// newest one seen.
pub(crate) static FENCED_WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("fenced_write.lua")));

/// The two keys of one resource, `P:{R}:lock` and `P:{R}:fence`, and its release channel
/// `P:{R}:released`.
///
/// The resource name is escaped (`%` → `%25`, `{` → `%7B`, `}` → `%7D`) so that the hash
/// tag stays intact whatever the name contains, and distinct names never share keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub(crate) lock: String,
    pub(crate) fence: String,
    /// The pub/sub channel on which releases are announced.
    pub(crate) released: String,
    /// How a lease on these keys is held.
    pub(crate) hold: Hold,
    /// A set's other resources, held with this one as one lease (empty otherwise).
    pub(crate) rest: Vec<Keys>,
}

/// How a lease is held on a node, which decides how it is extended and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// `lock` is a string key holding the owner id, with the lease as its TTL.
    Key,
    /// `lock` is a sorted set of owners, each with its own expiry (a reader-writer
    /// lock's readers).
    Member,
    /// `lock` is an election's lock key, and `rest[0].lock` its leader record, which
    /// lives and goes with it (`rest[1].lock` is its log of leaderships, which stays).
    Leader,
}

impl Keys {
    pub(crate) fn new(prefix: &str, resource: &str) -> Self {
        let tag = hash_tag(resource);
        Self {
            lock: format!("{prefix}:{{{tag}}}:lock"),
            fence: format!("{prefix}:{{{tag}}}:fence"),
            released: format!("{prefix}:{{{tag}}}:released"),
            hold: Hold::Key,
            rest: Vec::new(),
        }
    }
}

impl Keys {
    /// The keys of a set of resources held as one lease: the first resource's keys, with
    /// the others in `rest`.
    pub(crate) fn set(prefix: &str, resources: &[String]) -> Self {
        let mut all = resources.iter().map(|r| Keys::new(prefix, r));
        let mut first = all.next().unwrap_or_else(|| Keys::new(prefix, ""));
        first.rest = all.collect();
        first
    }

    /// Every lock key of the lease, this one's first.
    pub(crate) fn locks(&self) -> impl Iterator<Item = &Keys> {
        std::iter::once(self).chain(&self.rest)
    }

    /// The resources that carry a token: a set's every one, otherwise this one (an
    /// election's record is no resource).
    pub(crate) fn resources(&self) -> usize {
        match self.hold {
            Hold::Key => 1 + self.rest.len(),
            Hold::Member | Hold::Leader => 1,
        }
    }

    /// Slot `slot` of the semaphore `name`: `P:{R}:permit:S` and `P:{R}:permit:S:fence`,
    /// each slot a mutex with its own counter. Every slot shares the release channel
    /// `P:{R}:permits:released`, so any release wakes every waiter. The keys are apart
    /// from a mutex of the same name.
    pub(crate) fn slot(prefix: &str, name: &str, slot: usize) -> Self {
        let tag = hash_tag(name);
        Self {
            lock: format!("{prefix}:{{{tag}}}:permit:{slot}"),
            fence: format!("{prefix}:{{{tag}}}:permit:{slot}:fence"),
            released: format!("{prefix}:{{{tag}}}:permits:released"),
            hold: Hold::Key,
            rest: Vec::new(),
        }
    }
}

/// The keys of the reader-writer lock `name`: `P:{R}:rw:lock` (the writer's key),
/// `P:{R}:rw:fence`, `P:{R}:rw:readers` (the reader set), `P:{R}:rw:waiting` (a waiting
/// writer's marker) and the channel `P:{R}:rw:released`, apart from a mutex of the same
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RwKeys {
    /// A writer's lease: the writer key.
    pub(crate) writer: Arc<Keys>,
    /// A reader's lease: its entry in the reader set.
    pub(crate) reader: Arc<Keys>,
    /// A waiting writer's marker, as a key its writer can release (announced: readers
    /// wait for it to go).
    pub(crate) waiting: Arc<Keys>,
}

impl Keys {
    /// The election `name`: its lock `P:{R}:elect:lock`, term counter
    /// `P:{R}:elect:fence`, leader record `P:{R}:elect:leader` and log of leaderships
    /// `P:{R}:elect:log` (in `rest`), and channel `P:{R}:elect:changed`, on which both
    /// the end of a leadership and a new record are announced. Apart from a mutex of the
    /// same name.
    pub(crate) fn election(prefix: &str, name: &str) -> Self {
        let tag = hash_tag(name);
        let key = |what: &str| format!("{prefix}:{{{tag}}}:elect:{what}");
        let part = |what: &str| Keys {
            lock: key(what),
            fence: key("fence"),
            released: key("changed"),
            hold: Hold::Key,
            rest: Vec::new(),
        };
        Self {
            lock: key("lock"),
            fence: key("fence"),
            released: key("changed"),
            hold: Hold::Leader,
            rest: vec![part("leader"), part("log")],
        }
    }

    /// An election's leader record key.
    pub(crate) fn record(&self) -> &str {
        self.rest
            .first()
            .map_or(self.lock.as_str(), |r| r.lock.as_str())
    }

    /// An election's log of leaderships.
    pub(crate) fn log(&self) -> &str {
        self.rest
            .get(1)
            .map_or(self.lock.as_str(), |r| r.lock.as_str())
    }
}

impl RwKeys {
    pub(crate) fn new(prefix: &str, name: &str) -> Self {
        let tag = hash_tag(name);
        let key = |what: &str| format!("{prefix}:{{{tag}}}:rw:{what}");
        Self {
            writer: Arc::new(Keys {
                lock: key("lock"),
                fence: key("fence"),
                released: key("released"),
                hold: Hold::Key,
                rest: Vec::new(),
            }),
            reader: Arc::new(Keys {
                lock: key("readers"),
                fence: key("fence"),
                released: key("released"),
                hold: Hold::Member,
                rest: Vec::new(),
            }),
            waiting: Arc::new(Keys {
                lock: key("waiting"),
                fence: key("fence"),
                released: key("released"),
                hold: Hold::Key,
                rest: Vec::new(),
            }),
        }
    }
}

/// `name` escaped for use inside a `{…}` hash tag: `%` → `%25`, `{` → `%7B`, `}` → `%7D`.
/// Distinct names stay distinct, and the tag stays intact whatever the name contains.
pub(crate) fn hash_tag(name: &str) -> String {
    let mut tag = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            c => tag.push(c),
        }
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The hash tag Redis Cluster would use: the text between the first `{` and the next
    /// `}`, when non-empty.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &key[open + 1..close])
    }

    #[test]
    fn plain_names_read_naturally() {
        let k = Keys::new("redfence", "orders:42");
        assert_eq!(k.lock, "redfence:{orders:42}:lock");
        assert_eq!(k.fence, "redfence:{orders:42}:fence");
        let s = Keys::slot("redfence", "orders:42", 3);
        assert_eq!(s.lock, "redfence:{orders:42}:permit:3");
        assert_eq!(s.fence, "redfence:{orders:42}:permit:3:fence");
        assert_eq!(s.released, "redfence:{orders:42}:permits:released");
    }

    proptest! {
        #[test]
        fn tag_is_intact_and_shared(name in "\\PC{1,40}") {
            let k = Keys::new("redfence", &name);
            let tag = hash_tag(&k.lock);
            prop_assert!(tag.is_some());
            prop_assert_eq!(tag, hash_tag(&k.fence));
            prop_assert!(k.lock.ends_with(":lock") && k.fence.ends_with(":fence"));
        }

        #[test]
        fn distinct_names_get_distinct_keys(a in "[{}%a]{1,6}", b in "[{}%a]{1,6}") {
            prop_assume!(a != b);
            prop_assert_ne!(Keys::new("p", &a), Keys::new("p", &b));
        }
    }
}
