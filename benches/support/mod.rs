//! What the benchmarks share: CPU time from `/proc`.

use std::time::Duration;

/// CPU time (user + system) of a process, from /proc (Linux; zero elsewhere).
pub(crate) fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu(&stat)
}

/// utime + stime of a `/proc/*/stat` line, in clock ticks of 10 ms. After the command
/// name come the state (field 3), then numbers, some of which may be negative (tpgid is
/// -1 without a terminal): utime and stime are fields 14 and 15, 11 and 12 after it.
fn stat_cpu(stat: &str) -> Duration {
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(11) + field(12)) * 10)
}
