//! Fencing tokens.

use std::fmt;

/// A fencing token: strictly greater than every token handed out before it for the same
/// resource, by any client, as long as the nodes keep acknowledged writes (AOF with
/// `appendfsync always`).
///
/// Each acquisition's token is committed on a majority of nodes before the guard is
/// returned, so it stays monotonic when nodes fail or a later holder reaches a different
/// majority. Pass it to every write the lock protects, and have storage reject writes
/// whose token is lower than one it has already seen: a holder that was paused past its
/// validity then cannot overwrite a newer holder's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw value (e.g. one read back from storage).
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value, to store next to the data it fences.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FencingToken> for u64 {
    fn from(t: FencingToken) -> Self {
        t.0
    }
}
