//! Colour and progress, on a terminal only: piped output stays plain, parseable lines.
//!
//! `NO_COLOR` (any non-empty value) turns colour off; `CLICOLOR_FORCE` (non-empty, not `0`)
//! turns it on without a terminal; otherwise colour is on when the stream is a terminal
//! whose `TERM` is not `dumb`.

use std::ffi::OsString;
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

/// Whether to colour a stream.
fn colour(
    terminal: bool,
    no_color: Option<OsString>,
    force: Option<OsString>,
    term: Option<OsString>,
) -> bool {
    let set = |v: &Option<OsString>| v.as_ref().is_some_and(|v| !v.is_empty());
    if set(&no_color) {
        return false;
    }
    if set(&force) && force.as_deref() != Some("0".as_ref()) {
        return true;
    }
    terminal && term.as_deref() != Some("dumb".as_ref())
}

fn from_env(terminal: bool) -> bool {
    colour(
        terminal,
        std::env::var_os("NO_COLOR"),
        std::env::var_os("CLICOLOR_FORCE"),
        std::env::var_os("TERM"),
    )
}

/// Paints text for one stream, or leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paint(bool);

impl Paint {
    pub(crate) fn stdout() -> Self {
        Self(from_env(std::io::stdout().is_terminal()))
    }

    pub(crate) fn stderr() -> Self {
        Self(from_env(std::io::stderr().is_terminal()))
    }

    fn sgr(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    pub(crate) fn good(self, s: &str) -> String {
        self.sgr("32", s)
    }

    pub(crate) fn bad(self, s: &str) -> String {
        self.sgr("31", s)
    }

    pub(crate) fn warn(self, s: &str) -> String {
        self.sgr("33", s)
    }

    pub(crate) fn bold(self, s: &str) -> String {
        self.sgr("1", s)
    }
}

/// Awaits `work`; if it takes longer than a second and stderr is a terminal, says what
/// it is waiting for meanwhile, and clears the line when it is done.
pub(crate) async fn waiting<T>(what: &str, work: impl Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    eprint!("redfence: waiting for {what}…");
    let done = work.await;
    eprint!("\r\x1b[K");
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn colour_follows_the_terminal_and_the_conventions() {
        assert!(colour(true, None, None, os("xterm")));
        assert!(!colour(false, None, None, os("xterm")), "piped: plain");
        assert!(!colour(true, None, None, os("dumb")));
        assert!(!colour(true, os("1"), None, os("xterm")), "NO_COLOR");
        assert!(
            colour(true, os(""), None, None),
            "an empty NO_COLOR is unset"
        );
        assert!(colour(false, None, os("1"), None), "CLICOLOR_FORCE");
        assert!(!colour(false, None, os("0"), None));
        assert!(!colour(false, os("1"), os("1"), None), "NO_COLOR wins");
        assert_eq!(Paint(false).bad("x"), "x");
        assert_eq!(Paint(true).bad("x"), "\x1b[31mx\x1b[0m");
    }
}
