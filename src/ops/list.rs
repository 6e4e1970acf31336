//! [`Client::list_locks`] and [`Client::force_release`]: the operator's list of held
//! locks, and breaking a lock whose owner died.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::join_all;

use super::LockStatus;
use crate::client::Client;
use crate::error::{Error, NodeError, Step};
use crate::mutex::check_resource;
use crate::node::Announce;
use crate::scripts::{Keys, hash_tag};

/// Keys asked for per `SCAN` call: small enough that a busy node answers each batch
/// quickly, large enough that a big keyspace takes few round trips.
const SCAN_BATCH: usize = 1000;

/// Locks inspected at once while listing.
const INSPECT_AT_ONCE: usize = 64;

/// The `SCAN MATCH` pattern of the lock keys of the resources matching `pattern` (a glob:
/// `*`, `?`, `[...]`) under `prefix`. Names are escaped in keys as in the hash tag, and so
/// is the pattern; the prefix's glob characters are quoted.
fn key_pattern(prefix: &str, pattern: &str) -> String {
    let mut quoted = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("{quoted}:{{{}}}:lock", hash_tag(pattern))
}

/// The resource name of a lock key `P:{TAG}:lock`, the tag unescaped.
fn resource_of(prefix: &str, key: &str) -> Option<String> {
    let tag = key
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix("}:lock")?;
    let mut name = String::with_capacity(tag.len());
    let mut rest = tag;
    while let Some(i) = rest.find('%') {
        name.push_str(&rest[..i]);
        let code = rest.get(i..i + 3)?;
        name.push(match code {
            "%25" => '%',
            "%7B" => '{',
            "%7D" => '}',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    name.push_str(rest);
    Some(name)
}

impl Client {
    /// The mutex locks (a set's resources among them) held now by one owner on a majority
    /// of nodes, whose names match the glob `pattern` (`*` for all), in name order. Each
    /// node's keys are read with `SCAN` in batches (safe on a busy node), then each lock
    /// found is [`inspect`](Self::inspect)ed. Semaphore slots, reader-writer locks and
    /// elections keep other keys and are not listed.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when fewer than a majority of nodes could be scanned: a lock
    /// held on a majority could then be missed.
    pub async fn list_locks(&self, pattern: &str) -> Result<Vec<LockStatus>, Error> {
        let prefix = &self.settings().prefix;
        let matching = key_pattern(prefix, pattern);
        let scans = join_all(self.nodes().iter().map(|node| {
            let (node, matching) = (Arc::clone(node), &matching);
            async move {
                let mut names = BTreeSet::new();
                let mut cursor = 0;
                loop {
                    let (next, keys) = node.scan(cursor, matching, SCAN_BATCH).await?;
                    names.extend(keys.iter().filter_map(|k| resource_of(prefix, k)));
                    if next == 0 {
                        return Ok::<_, NodeError>(names);
                    }
                    cursor = next;
                }
            }
        }))
        .await;
        let n = scans.len();
        let q = self.quorum();
        let mut names = BTreeSet::new();
        let mut errors = Vec::new();
        for scan in scans {
            match scan {
                Ok(found) => names.extend(found),
                Err(e) => errors.push(e),
            }
        }
        if n - errors.len() < q {
            return Err(Error::NoQuorum {
                resource: pattern.to_owned(),
                step: Step::Inspect,
                granted: 0,
                refused: n - errors.len(),
                failed: errors.len(),
                quorum: q,
                nodes: n,
                errors,
            });
        }
        let names: Vec<String> = names.into_iter().collect();
        let mut held = Vec::new();
        for chunk in names.chunks(INSPECT_AT_ONCE) {
            let looks = join_all(chunk.iter().map(|name| self.inspect(name))).await;
            // A name that is no valid resource (a key set by hand) is skipped.
            held.extend(looks.into_iter().flatten().filter(LockStatus::is_held));
        }
        Ok(held)
    }

    /// Breaks the lock `resource` held by `owner` (as [`inspect`](Self::inspect) shows
    /// it): deletes it on every node where that owner still holds it, and announces the
    /// release so that waiters try at once. For a lock whose owner died; a live owner's
    /// watchdog reports the loss. Only `owner`'s keys go, so a lock that changed hands
    /// since it was inspected is left alone; the fence counter is untouched, so the next
    /// holder's token is still larger than every token handed out.
    ///
    /// Returns how many nodes deleted it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for a bad name; [`Error::NoQuorum`] when no node could
    /// be asked.
    pub async fn force_release(&self, resource: &str, owner: &str) -> Result<usize, Error> {
        check_resource(resource)?;
        let keys = Keys::new(&self.settings().prefix, resource);
        let results = join_all(
            self.nodes()
                .iter()
                .map(|node| node.release(&keys, owner, Announce::Waiters)),
        )
        .await;
        let n = results.len();
        let mut deleted = 0;
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(r) => deleted += usize::from(r.deleted),
                Err(e) => errors.push(e),
            }
        }
        if errors.len() == n {
            return Err(Error::NoQuorum {
                resource: resource.to_owned(),
                step: Step::Release,
                granted: 0,
                refused: 0,
                failed: n,
                quorum: self.quorum(),
                nodes: n,
                errors,
            });
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn patterns_match_the_lock_keys_only() {
        assert_eq!(key_pattern("redfence", "*"), "redfence:{*}:lock");
        assert_eq!(
            key_pattern("app*", "jobs:{1}"),
            "app\\*:{jobs:%7B1%7D}:lock"
        );
        assert_eq!(resource_of("redfence", "redfence:{a}:rw:lock"), None);
        assert_eq!(resource_of("redfence", "redfence:{a}:fence"), None);
        assert_eq!(resource_of("redfence", "redfence:{a%ZZ}:lock"), None);
    }

    proptest! {
        /// Every name comes back from its own lock key.
        #[test]
        fn names_come_back_from_their_keys(name in "\\PC{1,40}", prefix in "[a-z:]{1,10}") {
            let key = Keys::new(&prefix, &name).lock;
            prop_assert_eq!(resource_of(&prefix, &key), Some(name));
        }
    }
}
